"""Session causality: a token that makes a client's next request, on any node, follow its last writes.

Every write answers with a ``Likes-Causal-Token`` header; a request that sends it back (to any node)
is applied only once that node has seen everything the token names. Without it, a like on node A
and an unlike on node B can reach B in the wrong order: the unlike finds nothing to remove, the like
arrives later and stays. With it, B waits for the like (pulling it from its peers), then removes it.

What a token names: per ``(item, user)`` the dots of the OR-set the write depended on or produced,
as ``(writer name, counter)``. A like names the dots that make the user like the item after it (its
new dot, or the old ones when it was already liked): a node has seen the like once the item's causal
context covers them. An unlike names the dots it removed: a node has seen the unlike once it covers
them and the user no longer holds them. Both conditions are monotone (a dot, once seen, stays seen;
once dropped, is never held again), so waiting is polling ``LikeStore.observed``. Counters are not
tracked (a PN-counter has no dots): a counter write answers with the token it was sent, plus nothing.

Wire form, version 1: ``urlsafe_base64(msgpack([1, [writer, ...], [[key, user, [w, c, w, c, ...]], ...]]))``
without padding, where ``key`` is the item key's bytes, ``w`` an index into the writer list and
``c`` the dot's counter, negated for a removed dot. Actor names travel, never the process-local
indices of ``crdt.dots``, and names from a token are never interned here.

Composition: the answer to a request that carried a token covers both (an entry written again moves
to the newest end; a dot noted as added and removed counts as removed). Tokens are capped at
``MAX_TOKEN_DOTS`` dots and ``MAX_TOKEN_CHARS`` characters: past the cap the oldest entries are
dropped (and, for one huge entry, its oldest dots), so a long session only guarantees the order
after its most recent writes; those dropped are older and have almost always arrived everywhere.
A batch of many ops answers with a token of its last ops only, for the same reason.

Reads wait too (read-your-writes) and answer with the token they were sent. Requests without the
header pay one header lookup, and writes the making of their token. A bad token is a 400
``bad_causal_token``; a token not covered within ``api.causal_wait_ms`` is a 503 ``causal_timeout``
and the request changes nothing. A client may forge a token: it only delays its own request, and
pulls are limited to one per item per ``PULL_INTERVAL`` however many requests wait for it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import msgpack
from aiohttp import web

from crdt.dots import MAX_COUNTER, valid_actor_name
from node.errors import ItemCodecError, RequestError
from node.state.item import MAX_ID, ItemKey
from node.state.store import LikeResult, LikeStore

HEADER = "Likes-Causal-Token"
VERSION = 1
#: Largest token accepted or issued, in characters (well under aiohttp's 8190-byte header field).
MAX_TOKEN_CHARS = 2048
#: Most dots one token names, all entries together.
MAX_TOKEN_DOTS = 64
#: Routes whose requests honour a token; others (``/v1/cluster``, ``/healthz``...) ignore it.
ROUTE_PREFIXES = ("/v1/items/", "/v1/users/", "/v1/counts", "/v1/batch")
#: How often a waiting request looks at the store again, in seconds.
POLL = 0.01
#: How long a request waits for gossip before pulling: deltas usually arrive within a delta interval.
GRACE = 0.05
#: Least time between two pulls of one item, in seconds (across all waiting requests).
PULL_INTERVAL = 0.2
#: Pull times remembered beyond this many items are pruned.
MAX_PULL_MEMORY = 4096

_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
#: One packer for every token made (``packb`` would build one per call; tokens are made per write).
_PACKER = msgpack.Packer(use_bin_type=True)


class BadCausalToken(RequestError):
    """The ``Likes-Causal-Token`` header is not a token this API issued."""

    status = 400
    code = "bad_causal_token"


class CausalTimeout(RequestError):
    """The writes a token names did not reach this node in time; the request changed nothing."""

    status = 503
    code = "causal_timeout"


class TokenDot(NamedTuple):
    """One dot a token names: added (wait until seen) or removed (wait until seen and dropped)."""

    writer: str
    counter: int
    removed: bool


class TokenEntry(NamedTuple):
    """The dots one write depended on or produced for one user of one item."""

    key: bytes
    user: int
    dots: tuple[TokenDot, ...]


Token = tuple[TokenEntry, ...]

# -- the token ---------------------------------------------------------------------------------------


def compose(*tokens: Iterable[TokenEntry]) -> Token:
    """The token covering all of ``tokens`` (oldest first), capped at ``MAX_TOKEN_DOTS`` dots.

    Entries of one (item, user) join into one, placed where the newest of them was; a dot noted
    both as added and removed stays removed (the stronger condition). Past the cap the oldest
    entries go first; an entry alone over the cap keeps its newest dots (highest counters).
    """
    joined: dict[tuple[bytes, int], dict[tuple[str, int], bool]] = {}
    for token in tokens:
        for entry in token:
            slot = (entry.key, entry.user)
            dots = joined.pop(slot, None) or {}
            for dot in entry.dots:
                dots[dot.writer, dot.counter] = dots.get((dot.writer, dot.counter), False) or dot.removed
            if dots:
                joined[slot] = dots  # re-inserted: the newest entry is last
    kept: list[TokenEntry] = []
    budget = MAX_TOKEN_DOTS
    for (key, user), dots in reversed(joined.items()):
        if budget <= 0:
            break
        ordered = sorted(dots.items(), key=lambda item: (item[0][1], item[0][0]))[-budget:]
        budget -= len(ordered)
        kept.append(TokenEntry(key, user, tuple(TokenDot(w, c, r) for (w, c), r in ordered)))
    kept.reverse()
    return tuple(kept)


def encode_token(token: Token) -> str:
    """The header value of ``token`` (already composed); trimmed from the oldest end to fit
    ``MAX_TOKEN_CHARS`` (only long writer names can make a capped token that long)."""
    entries = list(token)
    while True:
        text = _encode(entries)
        if len(text) <= MAX_TOKEN_CHARS:
            return text
        if len(entries) > 1:
            entries.pop(0)
        else:
            oldest = entries[0]
            entries = [oldest._replace(dots=oldest.dots[1:])] if len(oldest.dots) > 1 else []


def _encode(entries: Sequence[TokenEntry]) -> str:
    writers: dict[str, int] = {}
    body = []
    for entry in entries:
        flat: list[int] = []
        for dot in entry.dots:
            flat.append(writers.setdefault(dot.writer, len(writers)))
            flat.append(-dot.counter if dot.removed else dot.counter)
        body.append([entry.key, entry.user, flat])
    packed: bytes = _PACKER.pack([VERSION, list(writers), body])
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def decode_token(text: str) -> Token:
    """Parse a header value; ``BadCausalToken`` (400) for anything ``encode_token`` could not have made."""
    if len(text) > MAX_TOKEN_CHARS:
        raise BadCausalToken(f"{HEADER}: longer than {MAX_TOKEN_CHARS} characters")
    if not _ALPHABET.fullmatch(text):
        raise BadCausalToken(f"{HEADER}: not unpadded URL-safe base64")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        wire: Any = msgpack.unpackb(
            packed,
            raw=False,
            max_str_len=256,
            max_bin_len=256,
            max_array_len=2 * MAX_TOKEN_DOTS,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # the trust boundary: base64 and msgpack raise several unrelated types
        raise BadCausalToken(f"{HEADER}: not a token ({type(exc).__name__})") from exc
    return _parse(wire)


def _parse(wire: Any) -> Token:
    if type(wire) is not list or len(wire) != 3 or type(wire[0]) is not int or wire[0] != VERSION:
        raise BadCausalToken(f"{HEADER}: not a version {VERSION} token")
    _, writers, body = wire
    if type(writers) is not list or not all(valid_actor_name(w) for w in writers):
        raise BadCausalToken(f"{HEADER}: writers must be names of 1 to 64 characters")
    if len(set(writers)) != len(writers) or type(body) is not list:
        raise BadCausalToken(f"{HEADER}: malformed writer table or entries")
    entries: list[TokenEntry] = []
    total = 0
    for entry in body:
        if type(entry) is not list or len(entry) != 3:
            raise BadCausalToken(f"{HEADER}: an entry must be [key, user, dots]")
        key, user, flat = entry
        if type(key) is not bytes:
            raise BadCausalToken(f"{HEADER}: an entry's key must be bytes")
        try:
            ItemKey.from_bytes(key)
        except ItemCodecError as exc:
            raise BadCausalToken(f"{HEADER}: {exc}") from exc
        if type(user) is not int or not 0 <= user <= MAX_ID:
            raise BadCausalToken(f"{HEADER}: an entry's user must be an unsigned 64-bit integer")
        if type(flat) is not list or not flat or len(flat) % 2:
            raise BadCausalToken(f"{HEADER}: an entry's dots must be writer, counter pairs")
        dots = []
        for i in range(0, len(flat), 2):
            writer, counter = flat[i], flat[i + 1]
            if type(writer) is not int or not 0 <= writer < len(writers):
                raise BadCausalToken(f"{HEADER}: a dot names an unknown writer")
            if type(counter) is not int or counter == 0 or abs(counter) > MAX_COUNTER:
                raise BadCausalToken(f"{HEADER}: a dot's counter is out of range")
            dots.append(TokenDot(writers[writer], abs(counter), counter < 0))
        total += len(dots)
        if total > MAX_TOKEN_DOTS:
            raise BadCausalToken(f"{HEADER}: more than {MAX_TOKEN_DOTS} dots")
        entries.append(TokenEntry(key, user, tuple(dots)))
    return compose(entries)


# -- waiting -----------------------------------------------------------------------------------------

#: Asks peers for the full states of some item keys; how many peers were asked.
Pull = Callable[[Sequence[bytes]], int]


@runtime_checkable
class StatePuller(Protocol):
    """What a cluster view offers to pull states (``gossip.Gossiper.request_states``)."""

    def request_states(self, keys: Sequence[bytes]) -> int:
        """Ask live peers for their states of ``keys``; their answers are merged as they come."""
        ...


class CausalWaiter:
    """Holds a request until the store has seen what its token names, pulling from peers meanwhile."""

    def __init__(self, store: LikeStore, wait: float, pull: Pull | None = None) -> None:
        self._store = store
        self._wait = wait
        self._pull = pull
        #: Item key -> when it was last pulled (monotonic seconds), shared by all waiting requests.
        self._pulled: dict[bytes, float] = {}
        #: Requests that had to wait, and those of them that timed out (for tests and debugging).
        self.waits = 0
        self.timeouts = 0

    def missing(self, token: Token) -> list[bytes]:
        """The keys of the items whose token entries this node has not yet seen whole."""
        observed = self._store.observed
        return [
            entry.key
            for entry in token
            if not all(
                observed(entry.key, entry.user, d.writer, d.counter, removed=d.removed) for d in entry.dots
            )
        ]

    async def wait(self, token: Token) -> None:
        """Return once everything ``token`` names is here; ``CausalTimeout`` after the wait."""
        missing = self.missing(token)
        if not missing:
            return
        self.waits += 1
        start = time.monotonic()
        deadline = start + self._wait
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.timeouts += 1
                raise CausalTimeout(
                    f"the writes named by {HEADER} did not reach this node within "
                    f"{self._wait * 1000:.0f} ms; nothing was changed: retry, or send the request to "
                    "the node that took them"
                )
            if now - start >= GRACE:
                self._pull_now(missing, now)
            await asyncio.sleep(min(POLL, deadline - now))
            missing = self.missing(token)
            if not missing:
                return

    def _pull_now(self, keys: list[bytes], now: float) -> None:
        """Pull the keys not pulled within ``PULL_INTERVAL`` (by this or any other request)."""
        if self._pull is None:
            return
        due = [
            key for key in dict.fromkeys(keys) if now - self._pulled.get(key, -PULL_INTERVAL) >= PULL_INTERVAL
        ]
        if not due:
            return
        if len(self._pulled) >= MAX_PULL_MEMORY:
            self._pulled = {k: t for k, t in self._pulled.items() if now - t < PULL_INTERVAL}
        for key in due:
            self._pulled[key] = now
        self._pull(due)


# -- the HTTP side -----------------------------------------------------------------------------------

WAITER = web.AppKey("causal_waiter", CausalWaiter)
_PRODUCED = web.RequestKey[list[TokenEntry]]("causal_produced")


def install(app: web.Application, store: LikeStore, wait: float, cluster: object) -> None:
    """Give ``app`` its waiter; it pulls through ``cluster`` when that can (a ``StatePuller``)."""
    pull = cluster.request_states if isinstance(cluster, StatePuller) else None
    app[WAITER] = CausalWaiter(store, wait, pull)


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Wait for the token a request carries before its handler runs; give the answer a token."""
    text = request.headers.get(HEADER) or None  # an empty header is no token
    incoming: Token | None = None
    if text is not None and _honours(request):
        incoming = decode_token(text)
        await request.app[WAITER].wait(incoming)
    response = await handler(request)
    answer = answer_token(text if incoming is not None else None, incoming, request.get(_PRODUCED))
    if answer is not None:
        response.headers[HEADER] = answer
    return response


def answer_token(
    sent: str | None, incoming: Token | None, produced: Sequence[TokenEntry] | None
) -> str | None:
    """The token an answer carries: what the request ``produced`` (None: a read) composed with the
    token it was ``sent`` (``incoming`` once decoded); a read answers with the token it was sent."""
    if produced is not None:
        if incoming is None and len(produced) == 1 and len(produced[0].dots) <= MAX_TOKEN_DOTS:
            return encode_token((produced[0],))  # one write of one user's like: already composed
        return encode_token(compose(incoming or (), produced))
    return sent


def _honours(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith(ROUTE_PREFIXES)


def note(request: web.Request, entries: Iterable[TokenEntry] = ()) -> None:
    """Record what a write produced for its answer's token (a write with nothing to record calls
    it too, so that its answer carries a token)."""
    produced = request.get(_PRODUCED)
    if produced is None:
        request[_PRODUCED] = list(entries)
    else:
        produced.extend(entries)


def apply_like(
    store: LikeStore, key: ItemKey, user: int, *, liking: bool
) -> tuple[LikeResult, tuple[TokenEntry, ...]]:
    """Like or unlike through ``store``; also what the answer's token names: after a like, the dots
    that make the user like the item; for an unlike, the dots it removed (none: nothing to name)."""
    if liking:
        result = store.like(key, user)
        if result.dot is not None:  # a new like: its one dot
            dots: tuple[TokenDot, ...] = (TokenDot(*result.dot, False),)
        else:
            dots = tuple(TokenDot(writer, counter, False) for writer, counter in store.like_dots(key, user))
    else:
        dots = tuple(TokenDot(writer, counter, True) for writer, counter in store.like_dots(key, user))
        result = store.unlike(key, user)
    return result, (TokenEntry(key.to_bytes(), user, dots),) if dots else ()


def apply_batch(
    store: LikeStore, keys: Sequence[bytes], users: Sequence[int], liking: Sequence[bool]
) -> tuple[list[bool], list[int], list[TokenEntry]]:
    """Many likes and unlikes through ``store``, in order (``LikeStore.apply_likes``): whether each
    changed anything, the count after each, and what the answer's token names: the entries
    ``apply_like`` makes, for the last ``MAX_TOKEN_DOTS`` ops only (a token holds no more dots, the
    newest first), so the ops before them skip finding their dots."""
    start = max(0, len(keys) - MAX_TOKEN_DOTS)
    changed, counts, dots = store.apply_likes(keys, users, liking, dots_from=start)
    produced = [
        TokenEntry(raw, user, tuple(TokenDot(writer, counter, not like) for writer, counter in held))
        for raw, user, like, held in zip(keys[start:], users[start:], liking[start:], dots, strict=True)
        if held
    ]
    return changed, counts, produced
