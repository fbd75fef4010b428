"""What the API accepts: path segments, query parameters and JSON bodies turned into domain values.

Pure functions, no aiohttp: each returns a value or raises ``InvalidValue`` (422, a well-formed request
with a value out of its domain) or ``MalformedRequest`` (400, a body of the wrong shape), naming the
offending field. The API validates a whole request before it changes anything.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal

from node.errors import InvalidValue, MalformedRequest
from node.state.item import ITEM_REF, MAX_ID, NAME, NAME_PATTERN, ItemKey

#: Plain ASCII decimal; leading zeros are allowed, so the length cap is looser than 20 digits.
_DECIMAL = re.compile(r"[0-9]{1,32}")
#: ``after`` cursor of "my likes": ``type:id``.
_ITEM_CURSOR = ITEM_REF


def content_type(text: str, where: str = "type") -> str:
    """A content type (``NAME_PATTERN``)."""
    if not isinstance(text, str) or not NAME.fullmatch(text):
        raise InvalidValue(f"{where}: {_show(text)} is not a content type ({NAME_PATTERN})")
    return text


def counter_name(text: str, where: str = "name") -> str:
    """A counter name: same rule as a content type."""
    if not isinstance(text, str) or not NAME.fullmatch(text):
        raise InvalidValue(f"{where}: {_show(text)} is not a counter name ({NAME_PATTERN})")
    return text


def uint64(text: str, where: str) -> int:
    """An unsigned 64-bit integer written in plain ASCII decimal (no sign, no spaces)."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text) or int(text) > MAX_ID:
        raise InvalidValue(f"{where}: {_show(text)} is not an unsigned 64-bit decimal integer")
    return int(text)


def uint64_json(value: object, where: str) -> int:
    """An unsigned 64-bit integer from JSON: a number, or a decimal string for clients that lose
    precision above 2**53."""
    if isinstance(value, str):
        return uint64(value, where)
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise InvalidValue(f"{where}: {_show(value)} is not an unsigned 64-bit integer")
    return value


def page_limit(query: Mapping[str, str], default: int, maximum: int) -> int:
    """The ``limit`` query parameter: 1 to ``maximum``, ``default`` when absent."""
    text = query.get("limit")
    if text is None:
        return default
    if not _DECIMAL.fullmatch(text) or not 1 <= int(text) <= maximum:
        raise InvalidValue(f"limit: {_show(text)} is not an integer from 1 to {maximum}")
    return int(text)


def user_cursor(query: Mapping[str, str]) -> int | None:
    """The ``after`` query parameter of a liker list: a user id."""
    text = query.get("after")
    return None if text is None else uint64(text, "after")


def item_cursor(query: Mapping[str, str]) -> ItemKey | None:
    """The ``after`` query parameter of a user's liked items: ``type:id``."""
    text = query.get("after")
    if text is None:
        return None
    match = _ITEM_CURSOR.fullmatch(text)
    if match is None or int(match[2]) > MAX_ID:
        raise InvalidValue(f"after: {_show(text)} is not an item cursor (type:id)")
    return ItemKey(match[1], int(match[2]))


def counter_delta(body: object, maximum: int) -> int:
    """The body of a counter update: ``{"delta": n}`` with ``|n| <= maximum``."""
    fields = _object(body, "body")
    _only(fields, {"delta"}, "body")
    if "delta" not in fields:
        raise MalformedRequest("body: missing 'delta'")
    delta = fields["delta"]
    if type(delta) is not int or not -maximum <= delta <= maximum:
        raise InvalidValue(f"delta: {_show(delta)} is not an integer from {-maximum} to {maximum}")
    return delta


def count_request(body: object, maximum: int) -> list[ItemKey]:
    """The body of ``POST /v1/counts``: ``{"items": [{"type", "id"}, ...]}``, at most ``maximum``."""
    fields = _object(body, "body")
    _only(fields, {"items"}, "body")
    items = _list(fields.get("items"), "items", maximum)
    return [item_ref(entry, f"items[{i}]") for i, entry in enumerate(items)]


def item_ref(value: object, where: str) -> ItemKey:
    """``{"type": ..., "id": ...}`` naming one item."""
    fields = _object(value, where)
    _only(fields, {"type", "id"}, where)
    for key in ("type", "id"):
        if key not in fields:
            raise MalformedRequest(f"{where}: missing '{key}'")
    return ItemKey(content_type(fields["type"], f"{where}.type"), uint64_json(fields["id"], f"{where}.id"))


@dataclass(frozen=True, slots=True)
class BatchOp:
    """One validated operation of ``POST /v1/batch``."""

    op: Literal["like", "unlike"]
    key: ItemKey
    user: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A validated ``POST /v1/batch``, as columns: op ``i`` likes (``liking[i]``) or unlikes, for user
    ``users[i]``, the item whose key bytes (``ItemKey.to_bytes``) are ``keys[i]``. Columns, not one
    object per op: a thousand-like batch is checked a column at a time and applied with no object
    per op."""

    liking: list[bool]
    keys: list[bytes]
    users: list[int]

    def __len__(self) -> int:
        return len(self.keys)

    def item_keys(self) -> list[ItemKey]:
        """Every item the batch names, once, in the order first named."""
        return [ItemKey.from_bytes(raw) for raw in dict.fromkeys(self.keys)]

    def ops(self) -> list[BatchOp]:
        """The ops one by one."""
        return [
            BatchOp("like" if liking else "unlike", ItemKey.from_bytes(raw), user)
            for liking, raw, user in zip(self.liking, self.keys, self.users, strict=True)
        ]


def batch_request(body: object, maximum: int) -> Batch:
    """The body of ``POST /v1/batch``: every op is validated before any is applied."""
    fields = _object(body, "body")
    _only(fields, {"ops"}, "body")
    ops = _list(fields.get("ops"), "ops", maximum)
    parsed = _plain_batch(ops)
    return parsed if parsed is not None else _columns(_checked_batch(ops))


_KINDS = frozenset({"like", "unlike"})
_OP_FIELDS = operator.itemgetter("op", "type", "id", "user")
_LIKE = "like"


def _plain_batch(ops: list[Any]) -> Batch | None:
    """The ops of a batch whose every op is plainly valid (names and ids as JSON numbers), checked a
    column at a time at C speed (only each distinct name costs a Python step); None when any op is
    not, for ``_checked_batch`` to name what is wrong."""
    if not ops:
        return Batch([], [], [])
    try:
        # Four fields, all of them present (an itemgetter raises KeyError otherwise): none other.
        if set(map(type, ops)) != {dict} or set(map(len, ops)) != {4}:
            return None
        kinds, names, ids, users = zip(*map(_OP_FIELDS, ops), strict=True)
        if not _KINDS.issuperset(kinds):  # TypeError for an unhashable value: not plain either
            return None
        for numbers in (ids, users):
            if set(map(type, numbers)) != {int} or min(numbers) < 0 or max(numbers) > MAX_ID:
                return None
        prefixes: dict[str, bytes] = {}
        for name in set(names):
            if type(name) is not str or not NAME.fullmatch(name):
                return None
            prefixes[name] = bytes((len(name),)) + name.encode("ascii")
    except (KeyError, TypeError):
        return None
    # ItemKey.to_bytes of every op: its type's prefix, then its id in 8 bytes big-endian.
    big: repeat[Literal["big"]] = repeat("big")
    ids_bytes = map(int.to_bytes, ids, repeat(8), big)
    if len(prefixes) == 1:
        (prefix,) = prefixes.values()
        keys = list(map(prefix.__add__, ids_bytes))
    else:
        keys = list(map(bytes.__add__, map(prefixes.__getitem__, names), ids_bytes))
    return Batch(list(map(_LIKE.__eq__, kinds)), keys, list(users))


def _columns(ops: list[BatchOp]) -> Batch:
    """``ops`` (checked one by one) as a ``Batch``."""
    return Batch([op.op == "like" for op in ops], [op.key.to_bytes() for op in ops], [op.user for op in ops])


def _checked_batch(ops: list[Any]) -> list[BatchOp]:
    """Every op validated one field at a time, raising the error that names the first bad one."""
    parsed: list[BatchOp] = []
    for i, entry in enumerate(ops):
        where = f"ops[{i}]"
        op = _object(entry, where)
        _only(op, {"op", "type", "id", "user"}, where)
        for name in ("op", "type", "id", "user"):
            if name not in op:
                raise MalformedRequest(f"{where}: missing '{name}'")
        kind = op["op"]
        if kind not in ("like", "unlike"):
            raise InvalidValue(f"{where}.op: {_show(kind)} is not 'like' or 'unlike'")
        item = ItemKey(content_type(op["type"], f"{where}.type"), uint64_json(op["id"], f"{where}.id"))
        parsed.append(BatchOp(op=kind, key=item, user=uint64_json(op["user"], f"{where}.user")))
    return parsed


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedRequest(f"{where}: expected a JSON object")
    return value


def _list(value: object, where: str, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedRequest(f"{where}: expected a JSON array")
    if len(value) > maximum:
        raise InvalidValue(f"{where}: {len(value)} entries exceed the limit of {maximum}")
    return value


def _only(fields: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidValue(f"{where}: unknown field {_show(unknown[0])}")


def _show(value: object) -> str:
    """A value quoted for an error message, cut short so a huge input does not echo back."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
