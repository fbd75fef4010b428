"""``python -m bench``: the benchmark harness's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import crdt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    core = commands.add_parser("crdt", help="CRDT core: add/merge speed, encoded size, memory")
    core.add_argument("--elements", type=int, default=1_000_000, help="size of the large set")
    core.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    core.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for crdt.json")
    args = parser.parse_args(argv)
    if args.command == "crdt":
        results = crdt.run(elements=args.elements, quick=args.quick, out=args.out)
        print(crdt.render(results))
        return 0 if args.quick or all(results["met"].values()) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
