"""The ``likes`` command line: ``up``, ``node``, ``status``, ``restore``, ``keys`` and ``config check``.

A bad cluster file is reported in one line naming the key, with exit status 2 and no traceback, so a
typo reads as a typo and not as a crash.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gossip.security import KEY_ID_BYTES, MIN_KEY_BYTES
from node.config import ClusterConfig, load_config
from node.durable.wal import DISCARD_FLAG
from node.errors import ConfigError, NodeError
from node.process.logs import LOG_FORMAT_CHOICES, LOG_LEVEL_CHOICES
from node.version import package_version

if TYPE_CHECKING:
    from gossip.tcp import Route

#: Exit status for a configuration the command cannot run with (argparse uses it for usage errors).
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per task."""
    parser = argparse.ArgumentParser(prog="likes", description="A CRDT like-counter cluster.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start every node of the cluster file that lives on this host")
    up.add_argument("--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)")
    _log_options(up)
    _discard_snapshot_option(up)

    node = commands.add_parser("node", help="run one node in the foreground")
    node.add_argument("--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)")
    node.add_argument("--name", required=True, help="which node of the cluster file to run")
    node.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    _log_options(node)
    _discard_snapshot_option(node)

    status = commands.add_parser(
        "status", help="a table of every node: up or down, members, counts, lag, and whether they agree"
    )
    status.add_argument(
        "--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object instead of tables")

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

    keys = commands.add_parser(
        "keys",
        help="list or change the gossip keyring of every running node (install, use, remove)",
        description="Rotate the gossip key without a restart: install the new key, use it, remove the "
        "old one, each on every node before the next. Requests are signed with a key of the cluster "
        "file's security section.",
    )
    keys.add_argument("operation", choices=["list", "install", "use", "remove"])
    keys.add_argument("--config", type=Path, default=Path("cluster.yaml"), help="cluster file (cluster.yaml)")
    which = keys.add_mutually_exclusive_group()
    which.add_argument(
        "--key-env", metavar="VAR", help="environment variable holding the key (default for install: stdin)"
    )
    which.add_argument(
        "--key-id", metavar="HEX", help="the key's id as `likes keys list` shows it (use, remove)"
    )
    keys.add_argument(
        "--force", action="store_true", help="skip the check that every node is ready (use, remove)"
    )

    check = commands.add_parser(
        "config",
        help="check a cluster file as a node would read it, its environment included",
        description="Exit 0 and summarise the cluster file if a node would start with it; else exit 2 "
        "with one line naming the key (the secret's environment variable included).",
    )
    check.add_argument("action", choices=["check"])
    check.add_argument("config", type=Path, nargs="?", default=Path("cluster.yaml"), help="(cluster.yaml)")
    return parser


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMAT_CHOICES,
        default="auto",
        help="node logs: JSON lines, or text for a human (auto: text on a terminal, else json)",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVEL_CHOICES, default="info", help="least severe records logged (info)"
    )


def _check(path: Path, config: ClusterConfig) -> int:
    """``likes config check``: what a node would need of its environment, then a summary."""
    config.security.resolve()
    sinks = config.checkpoint.with_environment()
    wanted = (("sqlite", sinks.sqlite), ("redis", sinks.redis_url), ("mysql", sinks.mysql_url))
    named = [name for name, on in wanted if on]
    nodes = ", ".join(f"{spec.name} ({spec.host}:{spec.http_port})" for spec in config.nodes)
    print(f"{path}: ok: {len(config.nodes)} nodes: {nodes}")
    print(f"  data: {config.storage.data_dir}; checkpoints: {', '.join(named) or 'none'}")
    return 0


def _discard_snapshot_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        DISCARD_FLAG,
        "--discard-damaged-snapshot",  # its name before the item store replaced the snapshot
        dest="discard_damaged",
        action="store_true",
        help="start a node whose item store (or previous version's snapshot) is damaged without what "
        "is damaged: a damaged file is set aside, damaged states dropped, the log replayed, and the "
        "rest comes back from the other nodes (a node alone loses it)",
    )


def _keys(args: argparse.Namespace, config: ClusterConfig) -> int:
    """``likes keys``: the key or key id the operation names, then the operation on every node."""
    from node.http.keyring_api import run_keys_command

    key: bytes | None = None
    ident: bytes | None = None
    if args.key_env is not None:
        value = os.environ.get(args.key_env)
        if value is None:
            raise ConfigError(f"--key-env: environment variable {args.key_env} is not set")
        key = value.encode()
    elif args.key_id is not None:
        try:
            ident = bytes.fromhex(args.key_id)
        except ValueError:
            ident = b""
        if len(ident) != KEY_ID_BYTES:
            raise ConfigError(f"--key-id: expected {2 * KEY_ID_BYTES} hex digits, got {args.key_id!r}")
    elif args.operation == "install":
        key = sys.stdin.readline().rstrip("\r\n").encode()  # not an argument: argv is visible in ps
    elif args.operation != "list":
        raise ConfigError(f"likes keys {args.operation}: name the key with --key-env or --key-id")
    if args.operation == "install" and key is None:
        raise ConfigError("likes keys install: give the key itself (--key-env or stdin), not its id")
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the key must be at least {MIN_KEY_BYTES} bytes")
    return run_keys_command(config, args.operation, key=key, ident=ident, force=args.force)


def main(
    argv: Sequence[str] | None = None, *, gossip_route: Route | None = None, mark_durable: bool = False
) -> int:
    """Entry point of the ``likes`` console script. ``gossip_route`` and ``mark_durable`` reach the node
    ``likes node`` runs (``run_node``'s test seams): only ``bench.testnode`` passes them, so a node
    started with them is ``likes node`` in every other respect."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "up":
            from node.process.supervisor import run_cluster

            return run_cluster(
                args.config.resolve(),
                config,
                log_format=args.log_format,
                log_level=args.log_level,
                discard_damaged=args.discard_damaged,
            )
        if args.command == "node":
            from node.process.server import run_node

            config.node(args.name)  # an unknown name is a configuration error, before any start-up
            run_node(
                args.config,
                args.name,
                parent_pid=os.getppid() if args.exit_with_parent else None,
                log_format=args.log_format,
                log_level=args.log_level,
                discard_damaged=args.discard_damaged,
                gossip_route=gossip_route,
                mark_durable=mark_durable,
            )
            return 0
        if args.command == "restore":
            from node.checkpoint.restore import restore_from_mysql
            from node.process.supervisor import is_local

            names = args.name or [spec.name for spec in config.nodes if is_local(spec.host)]
            for name in names:
                config.node(name)
            return restore_from_mysql(config, names)
        if args.command == "keys":
            return _keys(args, config)
        if args.command == "config":
            return _check(args.config, config)
        from node.process.status import report_status

        return report_status(config, as_json=args.json)
    except ConfigError as exc:
        print(f"likes: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NodeError as exc:  # a locked data directory, a port in use
        print(f"likes: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
