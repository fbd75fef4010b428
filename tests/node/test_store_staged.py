"""Staged writes: a store that applies each write only once its log record is durable agrees with a
plain model, whatever the interleaving of writes, applications and failed records.

The model holds the visible state and, apart, the effects of the writes still in flight: a write is
decided against both (a batch sees its own ops; a like of a user whose like is in flight changes
nothing), becomes visible when its group applies, and vanishes when the log fails (every group in
flight fails with it). After every step the store's reads equal the model's visible state, and every
answer (changed, count, counter value) equals the model's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from node.state.item import ItemKey
from node.state.store import LikeStore

ITEMS = [ItemKey("post", n) for n in range(2)]
USERS = range(4)

#: A batch's ops: (user, like or unlike).
OPS = st.lists(st.tuples(st.sampled_from(USERS), st.booleans()), max_size=4)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("like"), st.integers(0, 1), st.sampled_from(USERS)),
        st.tuples(st.just("unlike"), st.integers(0, 1), st.sampled_from(USERS)),
        st.tuples(st.just("batch"), st.integers(0, 1), OPS),
        st.tuples(st.just("count"), st.integers(0, 1), st.integers(-3, 3)),
        st.tuples(st.just("apply"), st.integers(1, 3), st.just(0)),
        st.tuples(st.just("fail"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


class Model:
    """Visible likers and counter per item, and the effects of each group in flight."""

    def __init__(self) -> None:
        self.likers: list[set[int]] = [set() for _ in ITEMS]
        self.views = [0 for _ in ITEMS]
        self.flight: list[list[tuple[str, int, Any]]] = []

    def seen(self, item: int) -> tuple[set[int], int]:
        """The item as it will be once every group in flight applies."""
        likers, views = set(self.likers[item]), self.views[item]
        for group in self.flight:
            for kind, at, value in group:
                if at != item:
                    continue
                if kind == "like":
                    likers.add(value)
                elif kind == "unlike":
                    likers.discard(value)
                else:
                    views += value
        return likers, views

    def apply(self, group: list[tuple[str, int, Any]]) -> None:
        for kind, at, value in group:
            if kind == "like":
                self.likers[at].add(value)
            elif kind == "unlike":
                self.likers[at].discard(value)
            else:
                self.views[at] += value


@settings(max_examples=5 * settings.default.max_examples)  # cheap, and the interleavings are many
@given(steps)
def test_staged_writes_agree_with_the_model(script: list[tuple[str, int, Any]]) -> None:
    store = LikeStore("n1-0123456789abcdef.1")
    store.stage_writes = True
    model = Model()
    groups: list[list[Any]] = []  # the store's writes in flight, one list per request, in order
    renewals = 0

    def commit(effects: list[tuple[str, int, Any]]) -> None:
        store.drain_journal()
        writes = store.drain_writes()
        assert bool(writes) == bool(effects)
        if writes:
            groups.append(writes)
            model.flight.append(effects)

    for kind, item, arg in script:
        key = ITEMS[item % len(ITEMS)]  # "apply" uses ``item`` as a number of groups instead
        if kind in ("like", "unlike"):
            likers, _ = model.seen(item)
            liking = kind == "like"
            changed = (arg in likers) != liking
            result = store.like(key, arg) if liking else store.unlike(key, arg)
            likers = likers | {arg} if liking else likers - {arg}
            assert (result.changed, result.count) == (changed, len(likers))
            commit([(kind, item, arg)] if changed else [])
        elif kind == "batch":
            likers, _ = model.seen(item)
            effects: list[tuple[str, int, Any]] = []
            expected: list[tuple[bool, int]] = []
            for user, liking in arg:
                changed = (user in likers) != liking
                likers = likers | {user} if liking else likers - {user}
                if changed:
                    effects.append(("like" if liking else "unlike", item, user))
                expected.append((changed, len(likers)))
            raw = key.to_bytes()
            changes, counts, _ = store.apply_likes(
                [raw] * len(arg), [u for u, _ in arg], [liking for _, liking in arg]
            )
            assert list(zip(changes, counts, strict=True)) == expected
            commit(effects)
        elif kind == "count":
            _, views = model.seen(item)
            assert store.add_to_counter(key, "views", arg) == views + arg
            commit([("count", item, arg)] if arg else [])
        elif kind == "apply":
            for _ in range(min(item, len(groups))):  # groups become durable in order
                store.apply(groups.pop(0))
                model.apply(model.flight.pop(0))
        else:  # the log failed: every group in flight fails; the node goes on under a new writer
            store.discard_staged()
            groups.clear()
            model.flight.clear()
            renewals += 1
            store.set_writer(f"n1-0123456789abcdef.1~{renewals}")
        assert store.staged_items == len({w[1] for g in groups for w in g})
        for n, each in enumerate(ITEMS):  # reads see the applied writes only
            assert set(store.likers(each, after=None, limit=100)[0]) == model.likers[n]
            assert store.count(each) == len(model.likers[n])
            assert store.counters(each).get("views", 0) == model.views[n]
