"""Running scenarios: a cluster started (or a running one), the baseline, the load, and the checks
after it."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    DEFAULT_OUT,
    CpuSample,
    host_info,
    rss_bytes,
    run_async,
    session,
    source_commit,
    write_json,
)
from bench.launch import LocalCluster
from bench.load import LoadSpec, populated_count, run_load
from bench.scenarios.nodes import JSON_HEADERS, read_counts, read_views, until_exact
from bench.scenarios.record import build_record
from bench.scenarios.report import refresh_reports
from bench.scenarios.sinks import Sinks
from bench.scenarios.spec import ALL, Scenario, ScenarioError, scenario
from bench.servers import LOCAL_MYSQL_URL, LOCAL_REDIS_URL, Stores

#: Bounds, in seconds: nodes to agree after a load (full, quick), sinks to catch up (full, quick).
CONVERGE_TIMEOUT = (120.0, 20.0)
SINK_TIMEOUT = (180.0, 30.0)
#: Likes per ``POST /v1/batch`` when the harness populates items.
POPULATE_CHUNK = 1000


@contextlib.contextmanager
def target(
    nodes: int, urls: Sequence[str] | None, sinks: Sinks | None, root: Path | None
) -> Iterator[tuple[list[str], LocalCluster | None]]:
    """A started cluster (stopped afterwards) or the running one at ``urls`` (left alone)."""
    if urls:
        yield list(urls), None
        return
    if sinks is not None:
        run_async(sinks.open)
    cluster = LocalCluster(
        nodes, root, sections={"checkpoint": sinks.checkpoint()} if sinks is not None else None
    )
    try:
        cluster.start()
        yield list(cluster.urls), cluster
    finally:
        cluster.stop()


async def populate(urls: Sequence[str], content_type: str, ids: Sequence[int], user_base: int) -> int:
    """Give item ``ids[k]`` ``populated_count(k)`` likes through ``POST /v1/batch``; likes written."""
    ops = [
        {"op": "like", "type": content_type, "id": item, "user": user_base + k * 100 + j}
        for k, item in enumerate(ids)
        for j in range(populated_count(k))
    ]
    async with session() as client:
        for n, first in enumerate(range(0, len(ops), POPULATE_CHUNK)):
            body = orjson.dumps({"ops": ops[first : first + POPULATE_CHUNK]})
            async with client.post(
                f"{urls[n % len(urls)]}/v1/batch", data=body, headers=JSON_HEADERS
            ) as response:
                if response.status != 200:
                    raise ScenarioError(f"populating: /v1/batch answered {response.status}")
    return len(ops)


def run_scenario(
    spec: Scenario,
    *,
    quick: bool = False,
    nodes: int = 3,
    urls: Sequence[str] | None = None,
    redis_url: str = LOCAL_REDIS_URL,
    mysql_url: str = LOCAL_MYSQL_URL,
    out: Path | None = DEFAULT_OUT,
    root: Path | None = None,
    refresh: bool = True,
) -> dict[str, Any]:
    """Run one scenario end to end; writes ``scenario-<name>.json`` and (``refresh``) rewrites the
    table and chart from every result in ``out``, so scenarios run one by one still make one report."""
    host = host_info()
    use_sinks = spec.sinks and not urls  # a running cluster's sinks are its own business
    sinks = None
    if use_sinks:
        stores = Stores(redis_url, mysql_url)
        problems = stores.reachable()
        if problems:
            raise ScenarioError("; ".join(problems.values()))
        sinks = Sinks.fresh(stores, "likes_bench_scn")
    item_base = secrets.randbelow(10**9) * 10**6
    user_base = secrets.randbelow(10**6) * 10**13
    ids = [item_base + k for k in range(spec.items)]
    try:
        with target(nodes, urls, sinks, root) as (node_urls, cluster):
            result = measure(spec, node_urls, cluster, sinks, ids, item_base, user_base, quick)
    finally:
        if sinks is not None:
            run_async(sinks.close)
    result.update(
        measure="scenario",
        quick=quick,
        commit=source_commit(),
        host=host,
        started_cluster=not urls,
    )
    if out is not None:
        write_json(out, f"scenario-{spec.name}.json", result)
        if refresh:
            refresh_reports(out, quick)
    return result


def measure(
    spec: Scenario,
    urls: list[str],
    cluster: LocalCluster | None,
    sinks: Sinks | None,
    ids: list[int],
    item_base: int,
    user_base: int,
    quick: bool,
) -> dict[str, Any]:
    """Baseline, load, then exactness, convergence, sinks, gossip, memory: one scenario's record."""
    populated = 0
    if spec.shape == "counts":
        populated = run_async(lambda: populate(urls, spec.content_type, ids, user_base + 9 * 10**12))
    views_before = run_async(lambda: read_views(urls))
    names = [view["node"]["name"] for view in views_before]
    pids = {view["node"]["name"]: int(view["node"].get("pid") or 0) for view in views_before}
    baseline_counts = run_async(lambda: read_counts(urls[0], spec.content_type, ids))
    baseline = {item: n for item, n in zip(ids, baseline_counts, strict=True) if n}
    if spec.shape == "counts":
        # Reads check every answer against the populated counts: every node must hold them first.
        want = {item: populated_count(k) for k, item in enumerate(ids)}
        ready = run_async(
            lambda: until_exact(
                urls, spec.content_type, ids, want, {}, CONVERGE_TIMEOUT[quick], time.monotonic()
            )
        )
        if not ready["exact"]:
            raise ScenarioError("the populated counts did not reach every node")
        baseline = want
    rss_before = {name: rss_bytes(pid) for name, pid in pids.items()}
    load_urls = urls[:1] if spec.target == "one" else urls
    load_spec = LoadSpec(
        urls=tuple(load_urls),
        mode=spec.mode,
        seconds=spec.seconds,
        rate=spec.rate,
        connections=max(spec.connections, spec.workers * len(load_urls)),
        workers=spec.workers,
        warmup=spec.warmup,
        max_requests=spec.max_requests,
        items=spec.items,
        content_type=spec.content_type,
        user_base=user_base,
        shape=spec.shape,
        per_request=spec.per_request,
        unlike_share=spec.unlike_share,
        item_base=item_base,
        seed=secrets.randbelow(2**31),
    )

    def on_measure(workers: Mapping[str, int]) -> Any:
        sample = CpuSample.take({**pids, **workers})
        return sample.usage_since

    load = run_load(load_spec, on_measure=on_measure)
    load_ended = time.monotonic()
    acked: dict[int, int] = load.pop("expected_counts")
    uncertain: dict[int, int] = load.pop("uncertain_counts")
    planned: dict[int, int] | None = load.pop("planned_counts")
    load["cpu"] = load.pop("watch", None)
    expected = {item: baseline.get(item, 0) + acked.get(item, 0) for item in ids}
    checked = run_async(
        lambda: until_exact(
            urls, spec.content_type, ids, expected, uncertain, CONVERGE_TIMEOUT[quick], load_ended
        )
    )
    stored = None
    if sinks is not None:
        stored = sinks.until_exact(spec.content_type, ids, expected, load_ended, SINK_TIMEOUT[quick])
    views_after = run_async(lambda: read_views(urls))
    rss_after = {name: rss_bytes(pid) for name, pid in pids.items()}
    return build_record(
        spec,
        urls=urls,
        cluster=cluster,
        names=names,
        load=load,
        expected=expected,
        acked=acked,
        uncertain=uncertain,
        planned=planned,
        populated=populated,
        checked=checked,
        stored=stored,
        views=(views_before, views_after),
        rss=(rss_before, rss_after),
    )


def run_all(
    names: Sequence[str] = ALL,
    *,
    quick: bool = False,
    out: Path | None = DEFAULT_OUT,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Each named scenario in turn, every one on its own cluster."""
    results = {}
    for name in names:
        spec = scenario(name, quick=quick)
        results[name] = run_scenario(spec, quick=quick, out=out, refresh=False, **options)
    if out is not None:
        refresh_reports(out, quick)
    return results
