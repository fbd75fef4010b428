"""The messages of the protocol, as typed values, and their msgpack bodies.

Bodies are positional arrays (compact; the protocol version in the frame header says how to read
them). ``parse`` is the second half of the trust boundary after ``FrameCodec.decode``: an
authenticated body of the wrong shape raises ``FrameError``, so handlers only see well-typed values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from gossip.errors import FrameError
from gossip.member import STATE_CODES, STATE_OF_CODE, MemberInfo
from gossip.transport import Address
from gossip.wire import MessageType

MAX_NAME_CHARS = 255
MAX_SEQ = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sent a message and where answers go (TCP source ports say nothing useful)."""

    name: str
    address: Address


@dataclass(frozen=True, slots=True)
class Ping:
    """SWIM probe: ``target`` must ack ``seq``; carries the sender's own record and updates."""

    kind: ClassVar[MessageType] = MessageType.PING
    seq: int
    sender: MemberInfo
    target: str
    updates: tuple[MemberInfo, ...]


@dataclass(frozen=True, slots=True)
class PingReq:
    """SWIM indirect probe: ping ``target`` for me and forward its ack for ``seq``."""

    kind: ClassVar[MessageType] = MessageType.PING_REQ
    seq: int
    sender: MemberInfo
    target: MemberInfo


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping (direct, or forwarded by a ping-req helper), with piggybacked updates."""

    kind: ClassVar[MessageType] = MessageType.ACK
    seq: int
    sender: str
    updates: tuple[MemberInfo, ...]


@dataclass(frozen=True, slots=True)
class Members:
    """A member's whole membership view; ``reply`` asks the receiver for its own in return."""

    kind: ClassVar[MessageType] = MessageType.MEMBERS
    sender: MemberInfo
    members: tuple[MemberInfo, ...]
    reply: bool


@dataclass(frozen=True, slots=True)
class Deltas:
    """A batch of (key, delta); ``hops`` > 0 asks the receiver to forward it that many more hops."""

    kind: ClassVar[MessageType] = MessageType.DELTAS
    sender: str
    hops: int
    items: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Tree:
    """Anti-entropy descent: my hashes of these Merkle nodes at ``level``; answer where yours differ.
    Both sides hash as if the ``masked`` leaves were empty (keys settling somewhere: see antientropy).
    """

    kind: ClassVar[MessageType] = MessageType.TREE
    origin: Origin
    level: int
    nodes: tuple[tuple[int, bytes], ...]
    masked: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Keys:
    """Anti-entropy: my (key, item hash) entries of leaves whose hashes differ from yours."""

    kind: ClassVar[MessageType] = MessageType.KEYS
    origin: Origin
    leaves: tuple[tuple[int, tuple[tuple[bytes, bytes], ...]], ...]


@dataclass(frozen=True, slots=True)
class States:
    """Anti-entropy: full states for you to merge, and keys whose states I want back."""

    kind: ClassVar[MessageType] = MessageType.STATES
    origin: Origin
    states: tuple[tuple[bytes, bytes], ...]
    want: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Replicate:
    """Deltas to merge and then confirm with ``Replicated(seq)`` to ``origin``."""

    kind: ClassVar[MessageType] = MessageType.REPLICATE
    origin: Origin
    seq: int
    items: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Replicated:
    """``sender`` has merged the deltas of the ``Replicate`` numbered ``seq``."""

    kind: ClassVar[MessageType] = MessageType.REPLICATED
    sender: str
    seq: int


Message = Ping | PingReq | Ack | Members | Deltas | Tree | Keys | States | Replicate | Replicated


def to_body(message: Message) -> list[Any]:
    """The msgpack-ready body of ``message``."""
    match message:
        case Ping(seq, sender, target, updates):
            return [seq, _member(sender), target, [_member(u) for u in updates]]
        case PingReq(seq, sender, target):
            return [seq, _member(sender), _member(target)]
        case Ack(seq, sender, updates):
            return [seq, sender, [_member(u) for u in updates]]
        case Members(sender, members, reply):
            return [_member(sender), [_member(m) for m in members], reply]
        case Deltas(sender, hops, items):
            return [sender, hops, [list(item) for item in items]]
        case Tree(origin, level, nodes, masked):
            # An empty mask is left out: a member that knows no masks reads the body as it is.
            mask = [list(masked)] if masked else []
            return [*_origin(origin), level, [list(node) for node in nodes], *mask]
        case Keys(origin, leaves):
            return [*_origin(origin), [[leaf, [list(e) for e in entries]] for leaf, entries in leaves]]
        case States(origin, states, want):
            return [*_origin(origin), [list(state) for state in states], list(want)]
        case Replicate(origin, seq, items):
            return [*_origin(origin), seq, [list(item) for item in items]]
        case Replicated(sender, seq):
            return [sender, seq]
    raise TypeError(f"not a message: {message!r}")  # pragma: no cover - exhaustive above


def parse(kind: MessageType, body: Any) -> Message:
    """The message of type ``kind`` held in ``body``; FrameError if the shape is wrong."""
    try:
        return _PARSERS[kind](body)
    except FrameError:
        raise
    except Exception as exc:  # a shape check missed something: still the boundary's error
        raise FrameError(f"malformed {kind.name} body: {type(exc).__name__}") from exc


def _parse_ping(body: Any) -> Ping:
    seq, sender, target, updates = _array(body, 4)
    return Ping(_int(seq, MAX_SEQ), _parse_member(sender), _name(target), _members(updates))


def _parse_ping_req(body: Any) -> PingReq:
    seq, sender, target = _array(body, 3)
    return PingReq(_int(seq, MAX_SEQ), _parse_member(sender), _parse_member(target))


def _parse_ack(body: Any) -> Ack:
    seq, sender, updates = _array(body, 3)
    return Ack(_int(seq, MAX_SEQ), _name(sender), _members(updates))


def _parse_members(body: Any) -> Members:
    sender, members, reply = _array(body, 3)
    if not isinstance(reply, bool):
        raise FrameError("reply flag is not a bool")
    return Members(_parse_member(sender), _members(members), reply)


def _parse_deltas(body: Any) -> Deltas:
    sender, hops, items = _array(body, 3)
    return Deltas(_name(sender), _int(hops, 64), _pairs(items))


def _parse_tree(body: Any) -> Tree:
    fields = _array(body)
    if len(fields) not in (5, 6):
        raise FrameError(f"expected 5 or 6 fields, got {len(fields)}")
    name, host, port, level, nodes, *rest = fields
    parsed = tuple((_int(index, 2**32), _bytes(digest)) for index, digest in map(_pair, _array(nodes)))
    masked = tuple(_int(leaf, 2**32) for leaf in _array(rest[0])) if rest else ()
    return Tree(_parse_origin(name, host, port), _int(level, 64), parsed, masked)


def _parse_keys(body: Any) -> Keys:
    name, host, port, leaves = _array(body, 4)
    parsed = tuple((_int(leaf, 2**32), _pairs(entries)) for leaf, entries in map(_pair, _array(leaves)))
    return Keys(_parse_origin(name, host, port), parsed)


def _parse_states(body: Any) -> States:
    name, host, port, states, want = _array(body, 5)
    return States(_parse_origin(name, host, port), _pairs(states), tuple(map(_bytes, _array(want))))


def _parse_replicate(body: Any) -> Replicate:
    name, host, port, seq, items = _array(body, 5)
    return Replicate(_parse_origin(name, host, port), _int(seq, MAX_SEQ), _pairs(items))


def _parse_replicated(body: Any) -> Replicated:
    sender, seq = _array(body, 2)
    return Replicated(_name(sender), _int(seq, MAX_SEQ))


_PARSERS: dict[MessageType, Callable[[Any], Message]] = {
    MessageType.PING: _parse_ping,
    MessageType.PING_REQ: _parse_ping_req,
    MessageType.ACK: _parse_ack,
    MessageType.MEMBERS: _parse_members,
    MessageType.DELTAS: _parse_deltas,
    MessageType.TREE: _parse_tree,
    MessageType.KEYS: _parse_keys,
    MessageType.STATES: _parse_states,
    MessageType.REPLICATE: _parse_replicate,
    MessageType.REPLICATED: _parse_replicated,
}


def _member(member: MemberInfo) -> list[Any]:
    host, port = member.address
    return [member.name, host, port, member.incarnation, STATE_CODES[member.state]]


def _parse_member(value: Any) -> MemberInfo:
    name, host, port, incarnation, state = _array(value, 5)
    code = _int(state, max(STATE_OF_CODE))
    address = (_name(host), _port(port))
    return MemberInfo(_name(name), address, STATE_OF_CODE[code], _int(incarnation, MAX_SEQ))


def _members(value: Any) -> tuple[MemberInfo, ...]:
    return tuple(map(_parse_member, _array(value)))


def _origin(origin: Origin) -> list[Any]:
    return [origin.name, *origin.address]


def _parse_origin(name: Any, host: Any, port: Any) -> Origin:
    return Origin(_name(name), (_name(host), _port(port)))


def _array(value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise FrameError(f"expected an array, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise FrameError(f"expected {length} fields, got {len(value)}")
    return value


def _pair(value: Any) -> list[Any]:
    return _array(value, 2)


def _pairs(value: Any) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((_bytes(first), _bytes(second)) for first, second in map(_pair, _array(value)))


def _int(value: Any, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise FrameError(f"expected an integer in [0, {maximum}], got {value!r:.40}")
    return value


def _port(value: Any) -> int:
    port = _int(value, 65535)
    if port == 0:
        raise FrameError("port 0 is not an address")
    return port


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise FrameError(f"expected a name of 1-{MAX_NAME_CHARS} characters")
    return value


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise FrameError(f"expected bytes, got {type(value).__name__}")
    return value
