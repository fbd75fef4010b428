"""Causal tokens (``node.http.causal``): encode, decode, compose and caps; bad input; the waiter and its
pull; and the API's header on one node (the three-node case is ``test_causal_cluster.py``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt.dots import MAX_COUNTER, known_actor_index
from gossip import GossipConfig, Gossiper, MemoryNetwork, Peer
from gossip.antientropy import AntiEntropy
from node.http import causal
from node.http.api import STORE
from node.http.causal import (
    HEADER,
    MAX_TOKEN_CHARS,
    MAX_TOKEN_DOTS,
    BadCausalToken,
    CausalTimeout,
    CausalWaiter,
    TokenDot,
    TokenEntry,
    compose,
    decode_token,
    encode_token,
)
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.gossip.conftest import KEY as GOSSIP_KEY
from tests.gossip.conftest import wait_until
from tests.node.conftest import TEST_LIMITS, Client, ClientFactory, make_app

KEY = ItemKey("post", 42).to_bytes()
OTHER = ItemKey("post", 43).to_bytes()
ITEM = "/v1/items/post/42"


def entry(key: bytes, user: int, *dots: tuple[str, int, bool]) -> TokenEntry:
    return TokenEntry(key, user, tuple(TokenDot(*dot) for dot in dots))


def raw_token(wire: Any) -> str:
    """A header value made by hand from a wire form, valid or not."""
    packed: bytes = msgpack.packb(wire, use_bin_type=True)
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode()


# -- the token -----------------------------------------------------------------------------------------


def test_a_token_round_trips_with_names_added_and_removed_dots() -> None:
    token = compose(
        [
            entry(KEY, 7, ("n1-aaaa.1", 3, False), ("n2-bbbb.4", 1, False)),
            entry(OTHER, 2**64 - 1, ("n1-aaaa.1", MAX_COUNTER, True)),
        ]
    )
    text = encode_token(token)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_token(text) == token
    assert len(encode_token(compose([entry(KEY, 7, ("n1-0123456789abcdef.12", 5, False))]))) < 80


def test_composition_joins_per_item_and_user_newest_last_and_removal_wins() -> None:
    first = [entry(KEY, 1, ("w", 1, False)), entry(KEY, 2, ("w", 2, False))]
    second = [entry(KEY, 1, ("w", 1, True), ("v", 1, False))]
    token = compose(first, second)
    assert [(e.key, e.user) for e in token] == [(KEY, 2), (KEY, 1)]  # user 1 was written last
    assert set(token[1].dots) == {TokenDot("w", 1, True), TokenDot("v", 1, False)}
    reversed_order = {e.user: e for e in compose(second, first)}
    assert TokenDot("w", 1, True) in reversed_order[1].dots  # removed, whatever the order
    assert compose([], []) == () and compose([TokenEntry(KEY, 1, ())]) == ()
    assert decode_token(encode_token(token)) == token


def test_past_the_cap_the_oldest_entries_go() -> None:
    old = [entry(KEY, user, ("w", user + 1, False)) for user in range(MAX_TOKEN_DOTS)]
    new = [entry(OTHER, 9, ("w", 100, False), ("w", 101, False))]
    token = compose(old, new)
    assert sum(len(e.dots) for e in token) == MAX_TOKEN_DOTS
    assert token[-1] == new[0] and token[0].user == 2  # users 0 and 1 made room
    huge = compose([entry(KEY, 1, *[("w", c, False) for c in range(1, 3 * MAX_TOKEN_DOTS)])])
    assert [d.counter for d in huge[0].dots] == list(range(2 * MAX_TOKEN_DOTS, 3 * MAX_TOKEN_DOTS))


def test_long_writer_names_are_trimmed_to_the_character_cap() -> None:
    writers = [f"{i:02d}" + "x" * 62 for i in range(MAX_TOKEN_DOTS)]
    token = compose([entry(KEY, i, (w, 1, False)) for i, w in enumerate(writers)])
    text = encode_token(token)
    assert len(text) <= MAX_TOKEN_CHARS
    decoded = decode_token(text)
    assert decoded and decoded == token[-len(decoded) :]  # the newest kept
    alone = compose([entry(KEY, 1, *[(w, 1, False) for w in writers])])
    assert len(encode_token(alone)) <= MAX_TOKEN_CHARS and decode_token(encode_token(alone))


GOOD_KEY = KEY
BAD_TOKENS = {
    "too long": "A" * (MAX_TOKEN_CHARS + 1),
    "not base64": "abc$def",
    "padding": "YWJj=",
    "impossible length": "A",
    "not msgpack": base64.urlsafe_b64encode(b"\xc1\xc1").decode().rstrip("="),
    "trailing bytes": raw_token([1, [], []]) + "AA",
    "a map": raw_token({"a": 1}),
    "version 2": raw_token([2, [], []]),
    "version true": raw_token([True, [], []]),
    "short": raw_token([1, []]),
    "writer not a string": raw_token([1, [5], [[GOOD_KEY, 1, [0, 1]]]]),
    "empty writer": raw_token([1, [""], [[GOOD_KEY, 1, [0, 1]]]]),
    "long writer": raw_token([1, ["x" * 65], [[GOOD_KEY, 1, [0, 1]]]]),
    "duplicate writers": raw_token([1, ["w", "w"], [[GOOD_KEY, 1, [0, 1]]]]),
    "unknown writer": raw_token([1, ["w"], [[GOOD_KEY, 1, [1, 1]]]]),
    "counter zero": raw_token([1, ["w"], [[GOOD_KEY, 1, [0, 0]]]]),
    "counter too big": raw_token([1, ["w"], [[GOOD_KEY, 1, [0, MAX_COUNTER + 1]]]]),
    "counter a float": raw_token([1, ["w"], [[GOOD_KEY, 1, [0, 1.5]]]]),
    "odd dots": raw_token([1, ["w"], [[GOOD_KEY, 1, [0, 1, 0]]]]),
    "no dots": raw_token([1, ["w"], [[GOOD_KEY, 1, []]]]),
    "key a string": raw_token([1, ["w"], [["post", 1, [0, 1]]]]),
    "bad key": raw_token([1, ["w"], [[b"\x04POST" + bytes(8), 1, [0, 1]]]]),
    "negative user": raw_token([1, ["w"], [[GOOD_KEY, -1, [0, 1]]]]),
    "user a string": raw_token([1, ["w"], [[GOOD_KEY, "1", [0, 1]]]]),
    "entry too short": raw_token([1, ["w"], [[GOOD_KEY, 1]]]),
    "too many dots": raw_token([1, ["w"], [[GOOD_KEY, u, [0, 1]] for u in range(MAX_TOKEN_DOTS + 1)]]),
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_a_bad_token_is_refused(name: str) -> None:
    with pytest.raises(BadCausalToken) as caught:
        decode_token(BAD_TOKENS[name])
    assert caught.value.status == 400 and caught.value.code == "bad_causal_token"


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_decoding_anything_raises_only_bad_causal_token(text: str) -> None:
    with contextlib.suppress(BadCausalToken):
        decode_token(text.rstrip("="))


def test_names_from_a_token_are_never_interned() -> None:
    store = LikeStore("n1.1")
    store.like(ItemKey("post", 42), 1)
    token = decode_token(encode_token(compose([entry(KEY, 1, ("a-stranger-writer.9", 1, False))])))
    assert CausalWaiter(store, 0).missing(token) == [KEY]
    assert known_actor_index("a-stranger-writer.9") is None


# -- what the store observes, and the wait ----------------------------------------------------------


def test_the_store_observes_likes_and_unlikes_as_their_deltas_arrive() -> None:
    a, b = LikeStore("writer-a.1"), LikeStore("writer-b.1")
    key = ItemKey("post", 42)
    a.like(key, 7)
    (liked,) = a.like_dots(key, 7)
    assert not b.observed(KEY, 7, *liked, removed=False)
    for raw, delta in a.drain_deltas():
        b.merge(raw, delta)
    assert b.observed(KEY, 7, *liked, removed=False) and not b.observed(KEY, 7, *liked, removed=True)
    a.unlike(key, 7)
    assert a.observed(KEY, 7, *liked, removed=True) and a.like_dots(key, 7) == ()
    assert not b.observed(KEY, 7, *liked, removed=True)
    for raw, delta in a.drain_deltas():
        b.merge(raw, delta)
    assert b.observed(KEY, 7, *liked, removed=True)
    b.like(key, 7)  # a new like, a new dot: the old one stays removed
    assert b.observed(KEY, 7, *liked, removed=True) and b.liked(key, 7)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 3)), max_size=3 * MAX_TOKEN_DOTS))
def test_a_batch_names_what_its_last_ops_one_at_a_time_would(ops: list[tuple[bool, int, int]]) -> None:
    """``apply_batch`` answers, and produces the token entries, of ``apply_like`` op by op, for the
    last ``MAX_TOKEN_DOTS`` ops (the token holds no more)."""
    bulk, single = LikeStore("writer-a.1"), LikeStore("writer-a.1")
    keys = [ItemKey("post", item) for item in range(3)]
    expected: list[TokenEntry] = []
    outcomes = []
    for i, (liking, item, user) in enumerate(ops):
        result, produced = causal.apply_like(single, keys[item], user, liking=liking)
        outcomes.append((result.changed, result.count))
        if i >= len(ops) - MAX_TOKEN_DOTS:
            expected.extend(produced)
    changed, counts, named = causal.apply_batch(
        bulk, [keys[item].to_bytes() for _, item, _ in ops], [u for *_, u in ops], [x for x, *_ in ops]
    )
    assert list(zip(changed, counts, strict=True)) == outcomes
    assert named == expected
    assert causal.answer_token(None, None, named) == causal.answer_token(None, None, expected)


async def test_the_waiter_pulls_after_a_grace_and_once_per_interval() -> None:
    source, target = LikeStore("source.1"), LikeStore("target.1")
    key = ItemKey("post", 42)
    source.like(key, 7)
    token = compose([entry(KEY, 7, (*source.like_dots(key, 7)[0], False))])
    pulls: list[tuple[float, list[bytes]]] = []
    start = time.monotonic()

    def pull(keys: list[bytes]) -> int:
        pulls.append((time.monotonic() - start, list(keys)))
        if len(pulls) == 3:  # the third pull finds it
            for raw in keys:
                state = source.state(raw)
                assert state is not None
                target.merge(raw, state)
        return 1

    waiter = CausalWaiter(target, 5.0, pull)
    await asyncio.gather(waiter.wait(token), waiter.wait(token))  # two requests, one set of pulls
    assert [keys for _, keys in pulls] == [[KEY]] * 3
    assert pulls[0][0] >= causal.GRACE
    assert all(b - a >= causal.PULL_INTERVAL * 0.9 for (a, _), (b, _) in itertools.pairwise(pulls))
    assert waiter.waits == 2 and waiter.timeouts == 0


async def test_the_pull_is_an_anti_entropy_want_answered_by_a_peer_outside_any_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gossip's ``request_states`` fetches the item from a peer with anti-entropy rounds off."""
    # No periodic rounds (an hour apart) and no sweeps: only the pull can bring the item.
    monkeypatch.setattr(AntiEntropy, "take_quiet", lambda self: False)
    network = MemoryNetwork(seed=5)
    addresses = [("10.0.0.1", 7100), ("10.0.0.1", 7101)]
    seeds = tuple(Peer(f"g{i}", *address) for i, address in enumerate(addresses))
    stores = [LikeStore("holder.1"), LikeStore("waiter.1")]
    gossipers = [
        Gossiper(
            dataclasses.replace(
                GossipConfig.local(f"g{i}", keyring=(GOSSIP_KEY,), host=a[0], port=a[1], seeds=seeds),
                anti_entropy_interval=3600.0,
            ),
            stores[i],
            network.transport(a),
        )
        for i, a in enumerate(addresses)
    ]
    writer = LikeStore("writer.1")  # the like reaches the holder as a state: no delta to gossip
    key = ItemKey("post", 42)
    writer.like(key, 7)
    state = writer.state(KEY)
    assert state is not None
    stores[0].merge(KEY, state)
    token = compose([entry(KEY, 7, (*writer.like_dots(key, 7)[0], False))])
    for gossiper in gossipers:
        await gossiper.start()
    try:
        await wait_until(lambda: len(gossipers[1].members()) == 2, timeout=5, what="contact")
        waiter = CausalWaiter(stores[1], 5.0, gossipers[1].request_states)
        await waiter.wait(token)
        assert stores[1].liked(key, 7)
        assert all(g.stats()["anti_entropy_rounds"] == 0 for g in gossipers)
        assert gossipers[1].request_states([]) == 1  # one live peer; nothing asked of it
    finally:
        for gossiper in gossipers:
            await gossiper.stop()


async def test_the_waiter_times_out_after_the_wait() -> None:
    waiter = CausalWaiter(LikeStore("n1.1"), 0.2)
    token = compose([entry(KEY, 1, ("ghost.1", 3, False))])
    start = time.monotonic()
    with pytest.raises(CausalTimeout) as caught:
        await waiter.wait(token)
    assert 0.2 <= time.monotonic() - start < 1.0
    assert caught.value.status == 503 and caught.value.code == "causal_timeout"
    with pytest.raises(CausalTimeout):
        await CausalWaiter(LikeStore("n1.1"), 0).wait(token)  # no wait at all
    await CausalWaiter(LikeStore("n1.1"), 0).wait(())


# -- the API of one node ---------------------------------------------------------------------------


async def request(client: Client, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    """(status, JSON body, the answer's token or None)."""
    headers = {} if token is None else {HEADER: token}
    response = await client.request(method, path, headers=headers, **kwargs)
    return response.status, orjson.loads(await response.read()), response.headers.get(HEADER)


@pytest.fixture
async def quick(aiohttp_client: ClientFactory, tmp_path: Path) -> Client:
    """A node that waits 150 ms for a token."""
    return await aiohttp_client(make_app(tmp_path, dataclasses.replace(TEST_LIMITS, causal_wait_ms=150)))


async def test_writes_answer_with_a_token_and_reads_without_one_do_not(quick: Client) -> None:
    status, body, token = await request(quick, "PUT", f"{ITEM}/likes/7")
    assert status == 200 and body["changed"] and token is not None
    writer = quick.app[STORE].writer
    assert decode_token(token) == (entry(KEY, 7, (writer, 1, False)),)
    status, _, again = await request(quick, "PUT", f"{ITEM}/likes/7")  # a retry names the same dot
    assert status == 200 and again == token
    for path in (f"{ITEM}/likes/7", ITEM, f"{ITEM}/likes", "/v1/users/7/likes"):
        assert (await request(quick, "GET", path))[2] is None
    status, body, removed = await request(quick, "DELETE", f"{ITEM}/likes/7")
    assert decode_token(removed) == (entry(KEY, 7, (writer, 1, True)),)
    status, body, nothing = await request(quick, "DELETE", f"{ITEM}/likes/7")  # changed nothing
    assert not body["changed"] and nothing is not None and decode_token(nothing) == ()
    _, _, counted = await request(quick, "POST", f"{ITEM}/counters/views", json={"delta": 1})
    assert counted is not None and decode_token(counted) == ()


async def test_a_session_token_composes_across_requests(quick: Client) -> None:
    _, _, first = await request(quick, "PUT", f"{ITEM}/likes/1")
    _, _, second = await request(quick, "PUT", "/v1/items/post/43/likes/2", first)
    assert [(e.key, e.user) for e in decode_token(second)] == [(KEY, 1), (OTHER, 2)]
    ops = [
        {"op": "like", "type": "post", "id": 44, "user": 3},
        {"op": "unlike", "type": "post", "id": 42, "user": 1},
    ]
    status, _, third = await request(quick, "POST", "/v1/batch", second, json={"ops": ops})
    assert status == 200
    entries = decode_token(third)
    assert [(ItemKey.from_bytes(e.key).content_id, e.user) for e in entries] == [(43, 2), (44, 3), (42, 1)]
    assert entries[-1].dots[0].removed
    for path in (f"{ITEM}/likes/1", ITEM, f"{ITEM}/likes", "/v1/users/1/likes"):
        status, _, echoed = await request(quick, "GET", path, third)  # covered here: no wait
        assert status == 200 and echoed == third
    status, _body, echoed = await request(quick, "POST", "/v1/counts", third, json={"items": []})
    assert status == 200 and echoed == third


async def test_a_bad_token_is_a_400_and_changes_nothing(quick: Client) -> None:
    before = quick.app[STORE].fingerprint()
    for bad in ("!!!", BAD_TOKENS["version 2"], BAD_TOKENS["too long"]):
        for method in ("PUT", "GET", "DELETE"):
            status, body, token = await request(quick, method, f"{ITEM}/likes/7", bad)
            assert status == 400 and body["error"]["code"] == "bad_causal_token", body
            assert body["error"]["message"] and token is None
    assert quick.app[STORE].fingerprint() == before
    assert (await request(quick, "GET", "/healthz", "!!!"))[0] == 200  # other routes ignore it
    assert (await request(quick, "PUT", f"{ITEM}/likes/7", ""))[0] == 200  # empty: no token


async def test_a_token_not_covered_in_time_is_a_503_and_changes_nothing(quick: Client) -> None:
    ghost = encode_token(compose([entry(KEY, 7, ("ghost.1", 9, False))]))
    before = quick.app[STORE].fingerprint()
    for method, path in (("PUT", f"{ITEM}/likes/7"), ("DELETE", f"{ITEM}/likes/7"), ("GET", ITEM)):
        start = time.monotonic()
        status, body, token = await request(quick, method, path, ghost)
        assert 0.15 <= time.monotonic() - start < 1.5
        assert status == 503 and body["error"]["code"] == "causal_timeout" and token is None
    assert quick.app[STORE].fingerprint() == before
