"""The ``likes`` command line: ``up``, ``node``, ``status`` and ``restore``.

A bad cluster file is reported in one line naming the key, with exit status 2 and no traceback, so a
typo reads as a typo and not as a crash.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from node.config import load_config
from node.errors import ConfigError, NodeError

#: Exit status for a configuration the command cannot run with (argparse uses it for usage errors).
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per task."""
    parser = argparse.ArgumentParser(prog="likes", description="A CRDT like-counter cluster.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start every node of the cluster file that lives on this host")
    up.add_argument("--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)")

    node = commands.add_parser("node", help="run one node in the foreground")
    node.add_argument("--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)")
    node.add_argument("--name", required=True, help="which node of the cluster file to run")
    node.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)

    status = commands.add_parser("status", help="show every node's members, items and whether they agree")
    status.add_argument(
        "--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)"
    )

    restore = commands.add_parser(
        "restore", help="rebuild nodes whose disks are gone from the MySQL checkpoint (nodes stopped)"
    )
    restore.add_argument(
        "--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)"
    )
    restore.add_argument("--from", dest="source", choices=["mysql"], required=True, help="where from")
    restore.add_argument(
        "--name", action="append", help="node to restore (repeatable; default: every node on this host)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``likes`` console script."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "up":
            from node.supervisor import run_cluster

            return run_cluster(args.config.resolve(), config)
        if args.command == "node":
            import os

            from node.server import run_node

            config.node(args.name)  # an unknown name is a configuration error, before any start-up
            run_node(args.config, args.name, parent_pid=os.getppid() if args.exit_with_parent else None)
            return 0
        if args.command == "restore":
            from node.restore import restore_from_mysql
            from node.supervisor import is_local

            names = args.name or [spec.name for spec in config.nodes if is_local(spec.host)]
            for name in names:
                config.node(name)
            return restore_from_mysql(config, names)
        from node.status import report_status

        return report_status(config)
    except ConfigError as exc:
        print(f"likes: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NodeError as exc:  # a locked data directory, a port in use
        print(f"likes: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
