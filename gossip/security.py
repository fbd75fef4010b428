"""Frame authentication: HMAC-SHA256 under a keyring (memberlist's ``security.go`` and ``keyring.go``).

The first key signs, every key verifies, so a cluster rotates its secret without a flag day. Each key
is named on the wire by a short id derived from it (an HMAC of a fixed label, revealing nothing of the
key), so a receiver tries exactly one key instead of all of them. Tags are truncated to 128 bits,
which keeps forgery at 2**-128 per attempt.

This authenticates members; it does not hide payloads (no encryption) and does not stop replays. A
replayed frame is harmless by construction: deltas and states are idempotent joins, and membership
updates carry incarnation numbers, so an old one loses to a newer one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

#: Bytes of the key id that names the signing key on the wire.
KEY_ID_BYTES = 4
#: Bytes of the truncated HMAC-SHA256 tag.
TAG_BYTES = 16
_KEY_ID_LABEL = b"likes/gossip/key-id/v1"


def key_id(key: bytes) -> bytes:
    """The public name of ``key``: stable, short, and useless for recovering the key."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_BYTES]


class Keyring:
    """The cluster secrets: sign with the primary key, verify with any."""

    __slots__ = ("_by_id", "_primary", "_primary_id")

    def __init__(self, keys: Iterable[bytes]) -> None:
        keys = tuple(keys)
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._by_id: dict[bytes, bytes] = {}
        for key in keys:
            ident = key_id(key)
            if self._by_id.get(ident, key) != key:
                raise ValueError("two keys of the keyring share a key id; generate a new key")
            self._by_id.setdefault(ident, key)
        self._primary = keys[0]
        self._primary_id = key_id(keys[0])

    @property
    def primary_id(self) -> bytes:
        """The id of the key that signs outgoing frames."""
        return self._primary_id

    def sign(self, data: bytes) -> bytes:
        """The tag of ``data`` under the primary key."""
        return _tag(self._primary, data)

    def verify(self, ident: bytes | memoryview, data: bytes | memoryview, tag: bytes) -> bool:
        """Whether ``tag`` authenticates ``data`` under the key named ``ident`` (constant time)."""
        key = self._by_id.get(bytes(ident))
        if key is None:
            return False
        return hmac.compare_digest(_tag(key, data), tag)


def _tag(key: bytes, data: bytes | memoryview) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_BYTES]
