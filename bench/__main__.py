"""``python -m bench``: the benchmark harness's command line.

Every subcommand prints a markdown table and writes JSON under ``--out``; it exits 1 when a goal is
missed, except in ``--quick`` mode (smoke runs on small sizes, whose figures are not the product's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import cluster, compare, crdt, launch, longtail, memory, scenarios, servers

#: The fault harness's nemeses (``bench.faults.NEMESES``; that package is imported only when run).
NEMESES = ("partition", "kill", "pause", "proxy", "sinks", "disk")
GOSSIP_HELP = "override a cluster.yaml gossip setting, e.g. delta_interval_ms=20 (repeatable)"


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per measurement, plus ``cluster`` for the three cluster measurements together."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, out_help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
        command.add_argument("--out", type=Path, default=Path("bench/results"), help=out_help)
        return command

    core = add("crdt", "CRDT core: add/merge speed, encoded size, memory", "folder for crdt.json")
    core.add_argument("--elements", type=int, default=1_000_000, help="size of the large set")

    mem = add("memory", "bytes per held like of a 1,000,000-like hot post", "folder for memory.json")
    mem.add_argument("--likes", type=int, default=1_000_000, help="likes of the hot post (1,000,000)")
    mem.add_argument("--nodes", type=int, default=0, help="also load a real cluster of this many nodes (0)")

    tail = add(
        "longtail", "one node, N items liked once: memory, ingest, restart", "folder for longtail.json"
    )
    tail.add_argument("--items", type=int, default=1_000_000, help="items, each liked once (1,000,000)")

    prop = add("propagation", "replication lag on idle 3- and 5-node clusters", "folder for propagation.json")
    prop.add_argument("--nodes", type=int, nargs="+", default=[3, 5], help="cluster sizes (3 5)")
    prop.add_argument("--gossip", action="append", default=[], metavar="KEY=MS", help=GOSSIP_HELP)
    prop.add_argument("--samples", type=int, default=300, help="likes timed per cluster (300; quick 20)")

    ae = add("anti-entropy", "bytes to repair one differing item", "folder for anti_entropy.json")
    ae.add_argument("--items", type=int, default=100_000, help="items on both sides (100,000; quick 10,000)")

    gb = add("gossip-bytes", "gossip bytes per like per peer under load", "folder for gossip_bytes.json")
    gb.add_argument("--rate", type=int, default=5000, help="likes offered per second (5,000)")
    gb.add_argument("--gossip", action="append", default=[], metavar="KEY=MS", help=GOSSIP_HELP)
    gb.add_argument("--seconds", type=float, default=20.0, help="load duration (20; quick 3)")

    add("cluster", "propagation, anti-entropy and gossip bytes together", "folder for the JSONs, cluster.md")

    cmp = add("compare", "like throughput of one node vs no-op and usual designs", "folder for compare.*")
    cmp.add_argument("--seconds", type=float, default=15.0, help="seconds per system after warm-up (15)")
    cmp.add_argument("--connections", type=int, default=64, help="closed-loop concurrent connections (64)")
    cmp.add_argument("--rate", type=float, default=compare.OPEN_RATE, help="open-loop likes/s, ours (3,333)")
    cmp.add_argument("--items", type=int, default=1000, help="items the likes are spread over (1,000)")
    cmp.add_argument("--client", choices=["raw", "aiohttp"], default="raw", help="load client (raw)")
    cmp.add_argument("--redis-url", default=servers.LOCAL_REDIS_URL, help="Redis of the usual design")
    cmp.add_argument("--mysql-url", default=servers.LOCAL_MYSQL_URL, help="MySQL server (no database)")

    def scenario_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--nodes", type=int, default=3, help="nodes of the cluster started (3)")
        command.add_argument("--urls", nargs="+", metavar="URL", help="load a running cluster instead")
        command.add_argument("--redis-url", default=servers.LOCAL_REDIS_URL, help="Redis for the sinks")
        command.add_argument(
            "--mysql-url", default=servers.LOCAL_MYSQL_URL, help="MySQL server for the sinks"
        )

    one = add(
        "scenario", "one workload scenario on a real cluster", "folder for scenario-*.json, scenarios.*"
    )
    one.add_argument("name", choices=scenarios.NAMES, help="the scenario")
    one.add_argument("--max", action="store_true", help="hot-post: closed loop at maximum rate")
    one.add_argument("--users", type=int, help="hot-post: distinct users (1,000,000; quick 2,000)")
    one.add_argument("--rate", type=float, help="open-loop requests/s offered (the scenario's own)")
    one.add_argument("--seconds", type=float, help="load duration (the scenario's own)")
    sinks = one.add_mutually_exclusive_group()
    sinks.add_argument("--sinks", action="store_true", default=None, help="checkpoint to Redis and MySQL")
    sinks.add_argument("--no-sinks", dest="sinks", action="store_false", help="no Redis and MySQL sinks")
    scenario_options(one)
    every = add(
        "scenarios", "every scenario, each on its own cluster", "folder for scenario-*.json, scenarios.*"
    )
    scenario_options(every)
    jepsen = add("faults", "no loss, no duplication under faults (Jepsen-style)", "folder for faults.json")
    jepsen.add_argument("--nemesis", nargs="+", choices=NEMESES, default=list(NEMESES), help="(all)")
    jepsen.add_argument("--seconds", type=float, help="seconds of faults per nemesis (the issue's figures)")
    jepsen.add_argument("--nodes", type=int, default=5, help="nodes of the cluster (5)")
    jepsen.add_argument(
        "--fsync-failures",
        action="store_true",
        help="disk nemesis: every other cycle fails the node's fsyncs (EIO through an LD_PRELOAD shim, "
        "built with gcc) instead of filling its disk",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen measurement; the exit status says whether its goals were met."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = launch.parse_overrides(getattr(args, "gossip", []))
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "faults":
        from bench import faults

        found = faults.run(
            args.nemesis,
            seconds=args.seconds,
            nodes=args.nodes,
            out=args.out,
            quick=args.quick,
            fsync_failures=args.fsync_failures,
        )
        print(faults.render(found))
        return 0 if args.quick or faults.all_met(found) else 1
    if args.command in ("scenario", "scenarios"):
        options = {
            "nodes": args.nodes,
            "urls": args.urls,
            "redis_url": args.redis_url,
            "mysql_url": args.mysql_url,
        }
        try:
            if args.command == "scenarios":
                ran = scenarios.run_all(quick=args.quick, out=args.out, **options)
            else:
                name = "hot-post-max" if args.name == "hot-post" and args.max else args.name
                chosen = scenarios.scenario(
                    name,
                    quick=args.quick,
                    users=args.users,
                    rate=args.rate,
                    seconds=args.seconds,
                    sinks=args.sinks,
                )
                ran = {name: scenarios.run_scenario(chosen, quick=args.quick, out=args.out, **options)}
        except scenarios.ScenarioError as exc:
            print(f"scenario not run: {exc}", file=sys.stderr)
            return 2
        print(scenarios.render(ran))
        return 0 if args.quick or scenarios.all_met(ran) else 1
    if args.command == "compare":
        compared = compare.run(
            quick=args.quick,
            seconds=args.seconds,
            connections=args.connections,
            out=args.out,
            redis_url=args.redis_url,
            mysql_url=args.mysql_url,
            rate=args.rate,
            items=args.items,
            client=args.client,
        )
        print(compare.render(compared))
        return 0 if args.quick or compare.all_met(compared) else 1
    if args.command == "crdt":
        results = crdt.run(elements=args.elements, quick=args.quick, out=args.out)
        print(crdt.render(results))
        return 0 if args.quick or all(results["met"].values()) else 1
    if args.command == "memory":
        held = memory.run(likes=args.likes, nodes=args.nodes, quick=args.quick, out=args.out)
        print(memory.render(held))
        return 0 if args.quick or held["met"] else 1
    if args.command == "longtail":
        tailed = longtail.run(items=args.items, quick=args.quick, out=args.out)
        print(longtail.render(tailed))
        return 0 if args.quick or longtail.all_met(tailed) else 1
    if args.command == "propagation":
        measured = cluster.propagation(
            nodes=args.nodes,
            samples=args.samples,
            quick=args.quick,
            out=args.out,
            overrides=overrides,
        )
    elif args.command == "anti-entropy":
        measured = cluster.anti_entropy(items=args.items, quick=args.quick, out=args.out)
    elif args.command == "gossip-bytes":
        measured = cluster.gossip_bytes(
            rate=args.rate,
            seconds=args.seconds,
            quick=args.quick,
            out=args.out,
            overrides=overrides,
        )
    else:
        measured = cluster.run_all(quick=args.quick, out=args.out)
    print(cluster.render(measured))
    return 0 if args.quick or cluster.all_met(measured) else 1


if __name__ == "__main__":
    sys.exit(main())
