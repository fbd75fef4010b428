"""``python -m bench.testnode [--faults FILE] [--durable-mark] -- <likes node options>``: one node with
the hooks only tests use.

A fault harness cuts and detours gossip between real processes (``gossip.faults``: a control file
every node's transport obeys), and a crash test cuts a node's log where its last fsync left it, as a
power loss would (the log's durability mark). Production never turns either on and reads no
variable that could: ``run_node`` takes them as parameters, and this entry point, which production
code does not import, passes them. Everything after ``--`` is what ``likes node`` takes
(``--config``, ``--name``, ...), parsed and run by the ``likes`` command itself, so a node started
here differs from ``likes node`` by its hooks alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gossip.faults import FaultPlan
from node.process import cli

SEPARATOR = "--"


def command(*, faults: Path | None = None, durable_mark: bool = False) -> list[str]:
    """The command that starts a node with these hooks: append ``likes node`` options
    (``--config FILE --name NAME ...``) to it, as to ``[*likes_command(), "node"]``."""
    hooks = [] if faults is None else ["--faults", str(faults)]
    if durable_mark:
        hooks.append("--durable-mark")
    return [sys.executable, "-m", "bench.testnode", *hooks, SEPARATOR]


def build_parser() -> argparse.ArgumentParser:
    """The hooks' options; ``likes node``'s follow ``--``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.testnode",
        usage="%(prog)s [--faults FILE] [--durable-mark] -- --config FILE --name NAME [likes node options]",
        description="Run one node as `likes node` does, with hooks for tests.",
    )
    parser.add_argument(
        "--faults",
        type=Path,
        metavar="FILE",
        help="gossip obeys this control file's partitions and detours (gossip.faults)",
    )
    parser.add_argument(
        "--durable-mark",
        action="store_true",
        help="the write-ahead log records its last fsynced offset after every fsync",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build the hooks, then run ``likes node`` with them."""
    args = list(sys.argv[1:] if argv is None else argv)
    split = args.index(SEPARATOR) if SEPARATOR in args else len(args)
    hooks = build_parser().parse_args(args[:split])
    plan = None if hooks.faults is None else FaultPlan(hooks.faults)
    return cli.main(
        ["node", *args[split + 1 :]],
        gossip_route=None if plan is None else plan.route,
        mark_durable=hooks.durable_mark,
    )


if __name__ == "__main__":
    raise SystemExit(main())
