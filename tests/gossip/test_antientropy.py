"""Anti-entropy finds and repairs differences at a cost that scales with the differences."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import GossipConfig, MemoryNetwork, antientropy
from gossip.merkle import DEPTH, FANOUT, LEAVES, MerkleTree, bucket_of
from gossip.messages import Keys, Message, Origin, States, Tree
from gossip.transport import Address
from tests.gossip.conftest import KEY, Cluster, memory_cluster, wait_until
from tests.gossip.replicas import GrowOnlySets, encode

Start = Callable[[Cluster], Awaitable[Cluster]]
#: Anti-entropy only when the test says so, and no deltas to muddy the byte counts.
QUIET = {"anti_entropy_interval": 3600.0}
ITEMS = 100_000
ROUND_BUDGET = 16 * 1024


def anti_entropy_bytes(cluster: Cluster) -> int:
    return sum(m.gossiper.stats()["bytes_sent_anti_entropy"] for m in cluster.members)


async def pair_in_contact(started: Start, **overrides: object) -> Cluster:
    cluster = await started(memory_cluster(MemoryNetwork(seed=9), 2, **{**QUIET, **overrides}))
    a, b = cluster.members
    await wait_until(
        lambda: a.state_of(b.name) == "alive" and b.state_of(a.name) == "alive", timeout=5, what="contact"
    )
    return cluster


async def test_one_differing_item_among_100_000_is_repaired_both_ways_in_under_16_kib(
    started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One round's bytes: the sweep the repair's own merges set off would add a round of its own.
    monkeypatch.setattr(antientropy.AntiEntropy, "take_quiet", lambda self: False)
    contents = {f"item:{i}".encode(): {i} for i in range(ITEMS)}
    cluster = memory_cluster(MemoryNetwork(seed=9), 2, **QUIET)
    a, b = cluster.members
    a.replica.load(contents)
    b.replica.load(contents)
    a.replica.load({b"item:500": {500, -1}})
    b.replica.load({b"item:500": {500, -2}})
    await started(cluster)
    await wait_until(lambda: a.state_of(b.name) == "alive", timeout=5, what="contact")
    # What each held at start is indexed in slices once a peer is there, not before either serves.
    await wait_until(
        lambda: all(m.gossiper.stats()["anti_entropy_keys_indexed"] == ITEMS for m in cluster.members),
        timeout=10,
        what="the start-up index",
    )

    before = anti_entropy_bytes(cluster)
    assert a.gossiper.anti_entropy_round()
    await wait_until(
        lambda: a.replica.value(b"item:500") == b.replica.value(b"item:500") == {500, -1, -2},
        timeout=5,
        what="repair",
    )
    await asyncio.sleep(0.05)  # nothing more should follow; if it does, it is counted
    spent = anti_entropy_bytes(cluster) - before

    print(f"anti-entropy round: {spent} bytes")
    assert 0 < spent < ROUND_BUDGET, f"a round over {ITEMS} items with one difference cost {spent} bytes"
    assert sum(m.gossiper.stats()["anti_entropy_keys_repaired"] for m in cluster.members) == 2
    assert cluster.replicas_equal()


async def test_a_member_alone_serves_at_once_and_indexes_nothing(started: Start) -> None:
    """Digesting what a member holds at start waits for a peer to compare with: a node of millions of
    items would otherwise start serving only once it had digested them all."""
    cluster = memory_cluster(MemoryNetwork(seed=3), 1, **QUIET)
    (a,) = cluster.members
    a.replica.load({f"item:{i}".encode(): {i} for i in range(ITEMS)})
    await started(cluster)
    await asyncio.sleep(0.2)  # several delta intervals
    assert a.gossiper.stats()["anti_entropy_keys_indexed"] == 0


async def test_an_in_sync_round_is_one_small_frame(started: Start) -> None:
    cluster = await pair_in_contact(started)
    a, b = cluster.members
    for member in cluster.members:
        member.replica.load({f"k{i}".encode(): {i} for i in range(1000)})
    # A member still indexing sits rounds out (it neither starts one nor answers): wait for both.
    await wait_until(
        lambda: all(m.gossiper.stats()["anti_entropy_keys_indexed"] == 1000 for m in cluster.members),
        timeout=10,
        what="both indexed",
    )
    before = anti_entropy_bytes(cluster)
    assert a.gossiper.anti_entropy_round()
    await wait_until(lambda: b.gossiper.stats()["anti_entropy_in_sync"] >= 1, timeout=10, what="in sync")
    await asyncio.sleep(0.05)
    # One round, unless a late probe on a loaded machine added a recovery round: each one small.
    rounds = b.gossiper.stats()["anti_entropy_in_sync"]
    assert anti_entropy_bytes(cluster) - before < 100 * rounds
    assert b.gossiper.stats()["anti_entropy_keys_repaired"] == 0


async def test_a_member_far_behind_catches_up_over_several_capped_rounds(started: Start) -> None:
    cluster = await pair_in_contact(started, anti_entropy_max_leaves=16)
    a, b = cluster.members
    a.replica.load({f"k{i}".encode(): {i} for i in range(500)})
    b.replica.load({b"only-b": {1}})
    rounds = 0
    for _ in range(200):
        if cluster.replicas_equal():
            break
        a.gossiper.anti_entropy_round()
        rounds += 1
        await asyncio.sleep(0.01)
    assert cluster.replicas_equal()
    assert b.replica.value(b"k123") == {123} and a.replica.value(b"only-b") == {1}
    assert rounds > 500 // 16 // 2, "the cap should have split the work over many rounds"


async def test_periodic_anti_entropy_repairs_what_deltas_lost(started: Start) -> None:
    network = MemoryNetwork(seed=12)
    cluster = await started(memory_cluster(network, 3))
    await wait_until(lambda: all(len(m.gossiper.members()) == 3 for m in cluster.members), timeout=5)
    network.drop_rate = 1.0  # every delta of this write is lost
    cluster.members[0].replica.add(b"lost", 1)
    await asyncio.sleep(0.05)
    network.drop_rate = 0.0
    await wait_until(cluster.replicas_equal, timeout=5, what="repair by anti-entropy")
    assert sum(m.gossiper.stats()["anti_entropy_keys_repaired"] for m in cluster.members) >= 2


# -- the Merkle index ------------------------------------------------------------------------------


def test_the_tree_depends_on_the_items_not_on_the_order_they_came_in() -> None:
    items = [(f"key{i}".encode(), bytes([i % 256]) * 4) for i in range(2000)]
    forward, backward = MerkleTree(), MerkleTree()
    for key, digest in items:
        forward.update(key, digest)
    for key, digest in reversed(items):
        backward.update(key, b"stale")
        backward.update(key, digest)
    assert forward.root == backward.root != bytes(16)
    assert len(forward) == len(backward) == 2000


def test_a_change_alters_exactly_one_root_path_and_undoing_it_restores_the_root() -> None:
    tree = MerkleTree()
    for i in range(5000):
        tree.update(f"key{i}".encode(), b"v1")
    root = tree.root
    leaf = bucket_of(b"key42")
    before = [tree.node(DEPTH, index) for index in range(LEAVES)]
    assert tree.update(b"key42", b"v2")
    after = [tree.node(DEPTH, index) for index in range(LEAVES)]
    assert [i for i in range(LEAVES) if before[i] != after[i]] == [leaf]
    assert tree.root != root
    tree.update(b"key42", b"v1")
    assert tree.root == root
    assert not tree.update(b"key42", b"v1"), "an unchanged digest is no change"


@given(
    st.dictionaries(st.binary(max_size=6), st.binary(min_size=1, max_size=4), max_size=60),
    st.data(),
)
def test_a_masked_tree_hashes_as_if_its_masked_leaves_held_nothing(
    items: dict[bytes, bytes], data: st.DataObject
) -> None:
    """Two members mask the same leaves and compare the rest exactly: the view equals a tree that
    never held the keys of those leaves, whatever they hold."""
    masked_keys = data.draw(st.sets(st.sampled_from(sorted(items))) if items else st.just(set()))
    mask = frozenset(bucket_of(key) for key in masked_keys)
    full, without = MerkleTree(), MerkleTree()
    for key, digest in items.items():
        full.update(key, digest)
        if bucket_of(key) not in mask:
            without.update(key, digest)
    view = full.masked(mask)
    assert view.node(0, 0) == without.root
    for leaf in mask:
        path = [leaf // FANOUT ** (DEPTH - level) for level in range(DEPTH + 1)]
        for level, index in enumerate(path):
            assert view.node(level, index) == without.node(level, index)
            if level < DEPTH:
                children = range(index * FANOUT, (index + 1) * FANOUT)
                assert view.children(level, index) == [(c, without.node(level + 1, c)) for c in children]


def test_removing_every_key_empties_the_tree() -> None:
    tree = MerkleTree()
    keys = [random.Random(1).randbytes(12) for _ in range(300)]
    for key in keys:
        tree.update(key, b"d")
    for key in keys:
        tree.update(key, None)
    assert tree.root == bytes(16) and len(tree) == 0


async def test_states_larger_than_a_frame_are_shipped_in_several(started: Start) -> None:
    frame_cap = 64 * 1024
    cluster = await pair_in_contact(started, max_frame_bytes=frame_cap)
    a, _ = cluster.members
    a.replica.load({f"wide-{i}".encode(): set(range(i, 400_000, 1000)) for i in range(100)})
    before = a.gossiper.stats()["frames_sent"]
    for _ in range(50):
        if cluster.replicas_equal():
            break
        a.gossiper.anti_entropy_round()
        await asyncio.sleep(0.02)
    assert cluster.replicas_equal()
    assert a.gossiper.stats()["frames_sent"] - before >= 4
    assert a.gossiper.stats()["frames_oversized"] == 0


async def _settle_test_pair(started: Start) -> Cluster:
    # delta_interval 0.2 s: a key stays settling for 0.6 s after it changes.
    cluster = await pair_in_contact(started, delta_interval=0.2)
    a, _ = cluster.members
    a.replica.load({b"hot": {1}})  # a change whose delta was lost: only anti-entropy can carry it
    await asyncio.sleep(0.3)  # indexed (every delta interval), and still settling
    return cluster


async def test_a_key_that_just_changed_is_left_to_deltas_then_repaired_once_settled(
    started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 20_000.0)  # outside the periodic repair window
    cluster = await _settle_test_pair(started)
    a, b = cluster.members
    assert a.gossiper.anti_entropy_round()
    await asyncio.sleep(0.1)
    assert b.replica.value(b"hot") == frozenset(), "a settling key was shipped"
    assert anti_entropy_bytes(cluster) < 2048
    await asyncio.sleep(0.5)  # now settled
    assert a.gossiper.anti_entropy_round()
    await wait_until(lambda: b.replica.value(b"hot") == {1}, timeout=10, what="repair once settled")


async def test_a_key_that_never_settles_is_repaired_in_the_periodic_repair_window(
    started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(antientropy, "MIN_REPAIR_PERIOD", 0.5)
    monkeypatch.setattr(antientropy, "REPAIR_PERIOD_ROUNDS", 10)
    # Period max(0.5, 10 x 0.05) = 0.5 s, window 0.1 s: stand inside the key's window, which every
    # member agrees on. Settling lasts 10 x 0.1 s after each change.
    inside = bucket_of(b"hot") * 0.5 / LEAVES + 0.05
    monkeypatch.setattr(time, "time", lambda: inside)
    cluster = await pair_in_contact(started, delta_interval=0.1, anti_entropy_interval=0.05)
    a, b = cluster.members
    repaired_while_hot = 0
    for value in range(40):  # a hot key: changing every 50 ms, each delta lost
        a.replica.load({b"hot": {value}})
        await asyncio.sleep(0.05)
        if value == 4:
            assert b.replica.value(b"hot") == frozenset(), "repaired while not yet hot for a period"
        repaired_while_hot = max(repaired_while_hot, len(b.replica.value(b"hot")))
    # Seen during the burst: once it ends the key settles and an ordinary round would repair it anyway.
    assert repaired_while_hot > 10, f"only {repaired_while_hot} of 40 values repaired while the key was hot"


async def test_a_burst_that_settles_is_swept_with_every_peer_at_once(started: Start) -> None:
    # No periodic rounds (QUIET): only a sweep can carry a change whose deltas were lost.
    cluster = await started(memory_cluster(MemoryNetwork(seed=3), 4, **QUIET))
    a, *others = cluster.members
    await wait_until(
        lambda: all(m.gossiper.stats()["members_alive"] == 3 for m in cluster.members),
        timeout=10,
        what="contact",
    )
    a.replica.load({b"burst": {1}})  # changed, no delta sent
    await wait_until(
        lambda: all(m.replica.value(b"burst") == {1} for m in others), timeout=10, what="swept to every peer"
    )
    assert a.gossiper.stats()["anti_entropy_sweeps"] == 1
    assert a.gossiper.stats()["anti_entropy_rounds"] >= 3
    await asyncio.sleep(0.5)  # the others merged a repair: a change of theirs, so each sweeps once too
    sweeps = [m.gossiper.stats()["anti_entropy_sweeps"] for m in cluster.members]
    assert all(count <= 1 for count in sweeps), sweeps

    a.replica.load({b"burst": {2}})  # a second burst within the interval (3600 s here): no sweep
    await asyncio.sleep(0.5)
    assert [m.gossiper.stats()["anti_entropy_sweeps"] for m in cluster.members] == sweeps
    assert all(m.replica.value(b"burst") == {1} for m in others)


def test_a_repaired_key_is_indexed_at_once_and_a_local_change_settles() -> None:
    """A repair merges a whole state, with no delta of it in flight: it goes on to the members still
    lacking it at the next round, while a local change is left to its deltas for a while."""
    replica = GrowOnlySets()
    config = GossipConfig.local("n0", keyring=(KEY,))
    origin = Origin("n1", ("10.0.0.1", 7001))
    engine = antientropy.AntiEntropy(
        config, replica, lambda: origin, lambda _a, _m: None, Counter(), random.Random(1)
    )
    engine.noting_changes = True

    engine.handle_states(States(origin, ((b"repaired", encode({1})),), ()))
    replica.add(b"written", 2)
    engine.refresh()
    settling = engine._settling()
    assert not settling(b"repaired") and settling(b"written")
    assert b"repaired" in engine.tree.entries(bucket_of(b"repaired"))  # compared in the next round
    assert b"written" not in engine.tree.entries(bucket_of(b"written"))


def _wired_pair() -> tuple[antientropy.AntiEntropy, antientropy.AntiEntropy, list[Message]]:
    """Two engines that hand messages straight to each other (no transport, no timers), whose keys
    settle for a minute after changing: a round is exactly what the protocol sends."""
    config = GossipConfig.local("n0", keyring=(KEY,))
    sent: list[Message] = []
    engines: dict[Address, antientropy.AntiEntropy] = {}

    def send(to: Address, message: Message) -> None:
        sent.append(message)
        match message:
            case Tree():
                engines[to].handle_tree(message)
            case Keys():
                engines[to].handle_keys(message)
            case States():
                engines[to].handle_states(message)

    for name, port in (("a", 7001), ("b", 7002)):
        origin = Origin(name, ("127.0.0.1", port))
        engine = antientropy.AntiEntropy(
            config,
            GrowOnlySets(),
            lambda origin=origin: origin,
            send,
            Counter(),
            random.Random(port),
            health=lambda seconds: 60 / antientropy.SETTLE_INTERVALS,  # settle for 60 s
        )
        engines[origin.address] = engine
    a, b = engines.values()
    return a, b, sent


def test_a_round_masks_settling_keys_and_descends_only_into_the_real_difference() -> None:
    """Under load most keys differ only because their deltas are on the way (or were just merged and
    still settle here): a round must not pay a descent for each (16 hashes per level), and must still
    repair the one key that really differs."""
    a, b, sent = _wired_pair()
    common = {f"item:{i}".encode(): {i} for i in range(2000)}
    written = range(0, 2000, 10)
    a._replica.load(common)  # type: ignore[attr-defined]
    a._replica.load({f"item:{i}".encode(): {i, -i} for i in written})  # type: ignore[attr-defined]
    a._replica.load({b"lost": {7}})  # type: ignore[attr-defined]  # long settled; B never got it
    b._replica.load(common)  # type: ignore[attr-defined]
    for engine in (a, b):
        engine.refresh()
        engine.noting_changes = True
    for i in written:  # A's 200 writes reach B just now: settled on A, settling on B
        b._replica.add(f"item:{i}".encode(), -i)  # type: ignore[attr-defined]
    b.refresh()
    assert len(b._mask()) >= 150

    assert a.start_round(("127.0.0.1", 7002))
    assert b._replica.value(b"lost") == {7}  # type: ignore[attr-defined]
    shipped = [key for m in sent if isinstance(m, States) for key, _ in m.states]
    assert shipped == [b"lost"]
    leaf_hashes = sum(len(m.nodes) for m in sent if isinstance(m, Tree) and m.level == DEPTH)
    assert leaf_hashes <= 2 * FANOUT, f"{leaf_hashes} leaf hashes sent: descended into settling keys"
    listed = [key for m in sent if isinstance(m, Keys) for _, entries in m.leaves for key, _ in entries]
    assert len(listed) <= 4, f"{len(listed)} keys listed: settling keys were compared"


async def test_a_state_too_large_for_a_frame_is_skipped_and_not_encoded_again_at_once(
    started: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viral post's state can outgrow a frame: shipping it can only fail, and encoding it costs a
    second of CPU, so anti-entropy skips it (counted) and leaves it to deltas for a while."""
    monkeypatch.setattr(antientropy.AntiEntropy, "take_quiet", lambda self: False)
    cluster = memory_cluster(MemoryNetwork(seed=9), 2, **QUIET, max_frame_bytes=64 * 1024)
    a, b = cluster.members
    a.replica.load({b"big": set(range(10**9, 10**9 + 20_000)), b"small": {1}})  # ~180 KB encoded
    b.replica.load({b"small": {2}})
    encoded: Counter[bytes] = Counter()
    state = a.replica.state

    def counting(key: bytes) -> bytes | None:
        encoded[key] += 1
        return state(key)

    monkeypatch.setattr(a.replica, "state", counting)
    await started(cluster)
    await wait_until(lambda: a.state_of(b.name) == "alive", timeout=5, what="contact")
    for _ in range(3):
        assert a.gossiper.anti_entropy_round()
        await wait_until(lambda: b.replica.value(b"small") == {1, 2}, timeout=5, what="the small repair")
        await asyncio.sleep(0.05)
    assert encoded[b"big"] == 1  # once, then skipped for OVERSIZED_BACKOFF
    assert a.gossiper.stats()["anti_entropy_states_oversized"] == 1
    assert a.gossiper.stats()["frames_oversized"] == 0
    assert b.replica.value(b"big") == frozenset()

    monkeypatch.setattr(antientropy, "OVERSIZED_BACKOFF", 0.0)
    monkeypatch.setattr(a.gossiper._anti_entropy, "_oversized", {})  # the backoff is over
    assert a.gossiper.anti_entropy_round()
    await wait_until(lambda: encoded[b"big"] == 2, timeout=5, what="a new attempt after the backoff")


def test_repair_windows_are_staggered_over_the_period_by_leaf() -> None:
    """Each leaf's window opens once a period, for the window's length, at its own offset: the keys
    of one leaf together, the leaves spread evenly, so hot keys are never all repaired at once."""
    period, window = 10.0, 2.0
    clocks = [1_000_000.0 + step * 0.01 for step in range(1000)]  # one period in 10 ms steps
    for leaf in (0, 1, LEAVES // 3, LEAVES - 1):
        inside = [clock for clock in clocks if antientropy.in_repair_window(leaf, clock, period, window)]
        assert 199 <= len(inside) <= 201  # open for the window's length
        assert inside[-1] - inside[0] < window + 0.02  # in one stretch (clocks start on a period)
    open_now = sum(antientropy.in_repair_window(leaf, clocks[0], period, window) for leaf in range(LEAVES))
    assert abs(open_now - LEAVES * window / period) <= 1  # a fifth of the leaves at any moment


def test_a_hot_key_too_large_to_ship_keeps_settling_in_its_repair_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In its repair window a key hot for a whole period is compared like any other, unless its
    state was just found too large for a frame: digesting it would cost a viral post's full encode
    for a difference no state can repair."""
    a, _, _ = _wired_pair()
    a.noting_changes = True
    a._replica.load({b"viral": {1}})  # type: ignore[attr-defined]
    a.refresh()
    period = a._repair_period
    monkeypatch.setattr(time, "monotonic", lambda: 10_000.0 + period)  # hot for a whole period ...
    a._changed_at[b"viral"] = 10_000.0 + period  # ... and still changing
    a._settling_since[b"viral"] = 10_000.0
    inside = bucket_of(b"viral") * period / LEAVES + 0.01
    monkeypatch.setattr(time, "time", lambda: inside)
    assert not a._settling()(b"viral")  # its window: repaired like any other key
    a._oversized[b"viral"] = 10_000.0 + period + antientropy.OVERSIZED_BACKOFF
    assert a._settling()(b"viral")  # unless it cannot be shipped
    monkeypatch.setattr(time, "time", lambda: inside + a._repair_window)
    a._oversized.clear()
    assert a._settling()(b"viral")  # and outside its window it settles anyway


def test_a_heavy_state_is_left_to_deltas_while_it_changes_and_shipped_once_it_settles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hot post's state is megabytes: repairing it in every repair window cost every member its
    digest and encoding, and each peer the join, while deltas were bringing the same likes. So while
    a heavy key changes it settles through its windows and its state is not shipped (counted, and not
    even encoded); once it settles, it is repaired by state like any other."""
    monkeypatch.setattr(antientropy, "HEAVY_STATE_BYTES", 1_000)
    a, b, sent = _wired_pair()
    a.noting_changes = True
    a._replica.load({b"viral": set(range(10**9, 10**9 + 500)), b"light": {1}})  # type: ignore[attr-defined]
    encoded: list[bytes] = []
    state = a._replica.state
    monkeypatch.setattr(a._replica, "state", lambda key: encoded.append(key) or state(key))
    a.refresh()
    # In its repair window, a key hot for a whole period is left to deltas if it is heavy.
    period = a._repair_period
    monkeypatch.setattr(time, "monotonic", lambda: 10_000.0 + period)
    for key in (b"viral", b"light"):
        a._changed_at[key] = 10_000.0 + period
        a._settling_since[key] = 10_000.0
        a._leaf_of[key] = bucket_of(key)
    for key in (b"viral", b"light"):
        monkeypatch.setattr(time, "time", lambda key=key: bucket_of(key) * period / LEAVES + 0.01)
        assert a._settling()(key) is (key == b"viral")
    peer = ("127.0.0.1", 7002)
    a._ship(peer, [b"viral", b"light"], ())
    (shipped,) = sent
    assert isinstance(shipped, States) and [key for key, _ in shipped.states] == [b"light"]
    assert encoded == [b"light"]
    assert a._counters["anti_entropy_states_deferred"] == 1
    # Settled (no longer changing): shipped, heavy or not.
    del a._changed_at[b"viral"]
    a._ship(peer, [b"viral"], ())
    assert [key for key, _ in sent[-1].states] == [b"viral"]  # type: ignore[attr-defined]
    assert b._replica.value(b"viral") == a._replica.value(b"viral")  # type: ignore[attr-defined]
