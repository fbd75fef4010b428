"""The parent of a load: it starts the workers, says go, and merges what they saw."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bench.load.spec import READY_TIMEOUT, LoadSpec, latency_summary, new_histogram
from bench.load.worker import worker_main


def pinning_possible(cpus: Sequence[int]) -> bool:
    """Whether this process may run on every CPU of ``cpus`` (so workers can be pinned there)."""
    try:
        return bool(cpus) and set(cpus) <= os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return False


def run_load(
    spec: LoadSpec, *, on_measure: Callable[[Mapping[str, int]], Callable[[], Any]] | None = None
) -> dict[str, Any]:
    """Run ``spec`` in ``spec.workers`` processes and merge what they saw.

    ``on_measure`` is called with the workers' pids when the warm-up ends; what it returns is called
    when the load is over and its result is kept under ``"watch"`` (the caller's CPU sample, say).
    """
    context = multiprocessing.get_context("spawn")
    ready = [context.Event() for _ in range(spec.workers)]
    go, answers = context.Event(), context.Queue()
    workers = [
        context.Process(target=worker_main, args=(spec, i, ready[i], go, answers), daemon=True)
        for i in range(spec.workers)
    ]
    for worker in workers:
        worker.start()
    outcomes: list[tuple[str, Any]] = []
    watched: Any = None
    try:
        _wait_ready(workers, ready, answers)
        go.set()
        finish: Callable[[], Any] | None = None
        if on_measure is not None:
            time.sleep(spec.warmup)
            finish = on_measure({f"load_generator_{i}": w.pid or 0 for i, w in enumerate(workers)})
        bound = spec.warmup + spec.seconds + 3 * spec.timeout + 30.0
        for _ in workers:
            try:
                outcomes.append(answers.get(timeout=bound))
            except queue.Empty as exc:
                raise RuntimeError(f"a load worker did not report within {bound:.0f} s") from exc
        if finish is not None:
            watched = finish()
    finally:
        for worker in workers:
            worker.join(timeout=10.0)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5.0)
    failures = [text for status, text in outcomes if status != "ok"]
    if failures:
        raise RuntimeError("; ".join(failures))
    result = merge(spec, [figures for _, figures in outcomes])
    if watched is not None:
        result["watch"] = watched
    return result


def _wait_ready(workers: Sequence[Any], ready: Sequence[Any], answers: Any) -> None:
    """Until every worker is ready; a worker that died or a bound that passed raises at once."""
    deadline = time.monotonic() + READY_TIMEOUT
    for _ in range(int(READY_TIMEOUT / 0.05) + 2):
        if all(event.is_set() for event in ready):
            return
        dead = [w.exitcode for w in workers if w.exitcode is not None]
        if dead or time.monotonic() > deadline:
            why = f"exited with {dead}" if dead else f"not ready within {READY_TIMEOUT:.0f} s"
            raise RuntimeError(f"load worker(s) {why}: {_drain(answers)}")
        time.sleep(0.05)
    raise RuntimeError(f"load workers not ready within {READY_TIMEOUT:.0f} s")


def _drain(answers: Any) -> list[Any]:
    found = []
    with contextlib.suppress(queue.Empty):
        for _ in range(100):
            found.append(answers.get_nowait())
    return found


def merge(spec: LoadSpec, parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from the workers' figures: merged histogram, summed counts, rate over the window."""
    histogram = new_histogram()
    errors: Counter[str] = Counter()
    for part in parts:
        histogram.decode_and_add(part["histogram"])
        errors.update(part["errors"])
    ok = sum(part["ok"] for part in parts)
    window_start = min(part["measure_from"] for part in parts)
    window_end = max((part["last_done"] for part in parts), default=window_start)
    elapsed = max(window_end - window_start, 1e-9)
    lateness = [part["max_late_ms"] for part in parts if part["max_late_ms"] is not None]
    ops_ok = sum(part["ops_ok"] for part in parts)
    return {
        "mode": spec.mode,
        "shape": spec.shape,
        "per_request": spec.per_request,
        "urls": list(spec.urls),
        "seconds": spec.seconds,
        "warmup_s": spec.warmup,
        "workers": spec.workers,
        "connections": spec.connections,
        "client": spec.client,
        "offered_rate": spec.rate if spec.mode == "open" else None,
        "pinned_cpus": list(spec.cpus) if spec.cpus is not None else None,
        "requests": sum(part["measured"] for part in parts),
        "sent_including_warmup": sum(part["sent"] for part in parts),
        "not_sent": sum(part["not_sent"] for part in parts),
        "ok": ok,
        "unchanged": sum(part["unchanged"] for part in parts),
        "changes_acked": sum(part["changes_acked"] for part in parts),
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "elapsed_s": elapsed if ok else 0.0,
        "achieved_rate": ok / elapsed if ok else 0.0,
        "ops_ok": ops_ok,
        "ops_rate": ops_ok / elapsed if ok else 0.0,
        "latency": latency_summary(histogram),
        "max_late_ms": max(lateness) if lateness else None,
        "hit_request_bound": any(part["hit_request_bound"] for part in parts),
        # Item id -> net count change acknowledged / write operations whose fate is unknown (their
        # request failed) / the plan's net change (zipf only): what the servers must hold afterwards.
        "expected_counts": _summed(part["expected"] for part in parts),
        "uncertain_counts": _summed(part["uncertain"] for part in parts),
        "planned_counts": None if spec.shape != "zipf" else _summed(part["planned"] or {} for part in parts),
        "planned_ops": None
        if spec.shape != "zipf"
        else dict(_summed(part["planned_ops"] or {} for part in parts)),
    }


def _summed(counters: Iterable[Mapping[int, int]]) -> dict[int, int]:
    total: Counter[int] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)
