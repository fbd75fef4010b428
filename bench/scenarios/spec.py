"""What each scenario offers, at full or quick size (see the package)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from bench.launch import shipped_config

NAMES = ("hot-post", "peak", "zipf", "reads", "batch")
#: What ``scenarios`` runs: every scenario, and hot-post both open loop and at maximum rate.
ALL = ("hot-post", "hot-post-max", "peak", "zipf", "reads", "batch")

#: hot-post's offered likes/s: a million in 299.4 s (see the module docstring).
HOT_POST_RATE = 3_340.0


class ScenarioError(RuntimeError):
    """A scenario could not run (a store unreachable, a cluster that did not start, a failed setup)."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One scenario's load and checks, at full or quick size."""

    name: str
    description: str
    content_type: str
    shape: Literal["like", "zipf", "counts", "batch"]
    mode: Literal["open", "closed"]
    #: Requests per second offered (open loop), 0 for closed loop.
    rate: float
    #: Length of the load (open loop), or its bound (closed loop), in seconds.
    seconds: float
    warmup: float
    max_requests: int
    items: int
    connections: int
    workers: int = 1
    per_request: int = 1
    unlike_share: float = 0.0
    #: ``all``: requests spread over every node; ``one``: every request to the first node.
    target: Literal["all", "one"] = "all"
    sinks: bool = False
    #: hot-post: the distinct users who must end up counted on the one post.
    users: int | None = None


def scenario(
    name: str,
    *,
    quick: bool = False,
    users: int | None = None,
    rate: float | None = None,
    seconds: float | None = None,
    sinks: bool | None = None,
    batch_ops: int | None = None,
) -> Scenario:
    """The named scenario at full or quick size, with any of its main figures overridden."""
    batch_ops = batch_ops or shipped_config().api.max_batch_ops
    if name in ("hot-post", "hot-post-max"):
        users = users or (2_000 if quick else 1_000_000)
        closed = name == "hot-post-max"
        offered = rate or (1_500.0 if quick else HOT_POST_RATE)
        return Scenario(
            name=name,
            description=f"{users:,} distinct users like one post, spread over the nodes, "
            + ("closed loop (maximum rate)" if closed else f"{offered:,.0f}/s offered (open loop)"),
            content_type="hot_post",
            shape="like",
            mode="closed" if closed else "open",
            rate=0.0 if closed else offered,
            seconds=seconds or ((30.0 if quick else 900.0) if closed else (users + 0.5) / offered),
            warmup=0.0,
            max_requests=users,
            items=1,
            connections=48 if closed else 64,
            sinks=True if sinks is None else sinks,
            users=users,
        )
    if name == "peak":
        offered = rate or (2_000.0 if quick else 10_000.0)
        length = seconds or (1.5 if quick else 30.0)
        warmup = 0.25 if quick else 1.0
        return Scenario(
            name=name,
            description=f"{offered:,.0f} new likes/s offered for {length:g} s, spread over the nodes",
            content_type="peak",
            shape="like",
            mode="open",
            rate=offered,
            seconds=length,
            warmup=warmup,
            max_requests=int(offered * (length + warmup)) + 1,
            items=1_000,
            connections=96 if quick else 192,
            workers=1 if quick else 2,
            sinks=bool(sinks),
        )
    if name == "zipf":
        offered = rate or (1_000.0 if quick else 3_333.0)
        length = seconds or (1.5 if quick else 60.0)
        items = 1_000 if quick else 100_000
        return Scenario(
            name=name,
            description=f"likes over {items:,} Zipf-popular items, 20% unlikes, {offered:,.0f} requests/s "
            f"offered for {length:g} s",
            content_type="zipf",
            shape="zipf",
            mode="open",
            rate=offered,
            seconds=length,
            warmup=0.0,
            max_requests=int(offered * length),
            items=items,
            connections=64,
            unlike_share=0.2,
            sinks=True if sinks is None else sinks,
        )
    if name == "reads":
        length = seconds or (1.5 if quick else 15.0)
        items = 1_000 if quick else 10_000
        return Scenario(
            name=name,
            description=f"POST /v1/counts of 100 items per request over {items:,} populated items, "
            f"closed loop for {length:g} s, spread over the nodes",
            content_type="reads",
            shape="counts",
            mode="closed",
            rate=0.0,
            seconds=length,
            warmup=0.25 if quick else 1.0,
            max_requests=int(length * 50_000) + 1_000,
            items=items,
            connections=32,
            per_request=100,
            sinks=bool(sinks),
        )
    if name == "batch":
        length = seconds or (1.5 if quick else 15.0)
        return Scenario(
            name=name,
            description=f"POST /v1/batch of {batch_ops:,} new likes per request into one node, closed loop "
            f"for {length:g} s",
            content_type="batch",
            shape="batch",
            mode="closed",
            rate=0.0,
            seconds=length,
            warmup=0.0 if quick else 1.0,  # quick: 20 batches can all end inside a warm-up
            max_requests=20 if quick else int(length * 1_000) + 100,
            items=1_000,
            connections=8,
            per_request=batch_ops,
            target="one",
            sinks=bool(sinks),
        )
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(ALL)}")
