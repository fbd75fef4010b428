"""A node resumes its writer id across restarts, and no dot is ever handed to two likes.

Each example runs a node's store and log through several lives on a real directory, each ended in
one of the ways a process ends: a clean stop, a crash that loses the records still in flight (a
power loss cuts the log at its last fsync, which only ever holds unacknowledged records), or damage
in the middle of the log. Every acknowledged like's dot is recorded; the property is that a dot
``(writer, counter)`` of an item never names two different likes, and that every acknowledged like
outside a damaged span is back after the last restart.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from node.durable.datadir import NodeDataDir
from node.durable.wal import WriteAheadLog
from node.process.server import resumes_writer
from node.state.item import ItemKey
from node.state.store import LikeStore

ITEMS = [ItemKey("post", n) for n in range(3)]

#: How a life ends: stopped cleanly, crashed with records in flight, or its log damaged mid-file.
ENDINGS = ("clean", "crash", "damage")

Life = tuple[list[tuple[int, int]], int, str]
lives = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 2), st.integers(1, 40)), max_size=12),  # acknowledged likes
        st.integers(0, 4),  # likes still in flight at the end
        st.sampled_from(ENDINGS),
    ),
    min_size=1,
    max_size=5,
)


async def live(
    directory: Path, life: Life, acked: dict[tuple[bytes, str, int], int]
) -> set[tuple[bytes, int]]:
    """One life of the node; the likes it acknowledged (each dot noted in ``acked``)."""
    likes, in_flight, ending = life
    wal = WriteAheadLog(directory / "wal")
    recovery = wal.open()
    with NodeDataDir(directory, "n1") as data_dir:
        identity = data_dir.claim_identity(resume=resumes_writer(recovery, wal, 0))
    store = LikeStore(identity.writer)
    store.restore(recovery.snapshot)
    store.restore(recovery.deltas)
    store.stage_writes = True
    wal.start()
    confirmed: set[tuple[bytes, int]] = set()

    def like(item: int, user: int) -> tuple[tuple[bytes, str, int] | None, asyncio.Future[None] | None]:
        key = ITEMS[item]
        result = store.like(key, user)
        pairs = store.drain_journal()
        if not pairs:
            return None, None
        assert result.dot is not None
        durable = wal.append(pairs, partial(store.apply, store.drain_writes()))
        return (key.to_bytes(), *result.dot), durable

    def note(dot: tuple[bytes, str, int] | None, user: int) -> None:
        if dot is not None:
            assert acked.setdefault(dot, user) == user, f"dot {dot} handed to two likes"

    for item, user in likes:
        dot, durable = like(item, user)
        if durable is not None:
            await durable
        note(dot, user)
        confirmed.add((ITEMS[item].to_bytes(), user))
    segment = max(directory.glob("wal/wal-*.log"))
    durable_size = segment.stat().st_size
    flying = [(like(n % len(ITEMS), 1000 + n)[0], 1000 + n) for n in range(in_flight)]
    await wal.close()
    if ending == "crash":  # the records in flight are cut off: their dots never left the node
        with open(segment, "r+b") as handle:
            handle.truncate(durable_size)
        return confirmed
    for dot, user in flying:  # written and applied: as good as acknowledged
        note(dot, user)
    if ending == "damage":
        data = bytearray(segment.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
        segment.write_bytes(bytes(data))
        return set()  # what this life acknowledged may be in the damaged span: not checked
    return confirmed


@given(lives)
def test_no_dot_is_handed_to_two_likes_across_restarts(tmp_path_factory: object, runs: list[Life]) -> None:
    directory = tmp_path_factory.mktemp("node")  # type: ignore[attr-defined]
    acked: dict[tuple[bytes, str, int], int] = {}
    kept: set[tuple[bytes, int]] = set()

    async def main() -> None:
        for life in runs:
            kept.update(await live(directory, life, acked))
        wal = WriteAheadLog(directory / "wal")
        recovery = wal.open()
        store = LikeStore("check")
        store.restore(recovery.snapshot)
        store.restore(recovery.deltas)
        for raw, user in kept:
            assert store.liked(ItemKey.from_bytes(raw), user), "an acknowledged like was lost"

    asyncio.run(main())
