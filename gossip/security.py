"""Frame authentication: HMAC-SHA256 under a keyring (memberlist's ``security.go`` and ``keyring.go``).

The primary key signs, every key verifies, so a cluster rotates its secret without a flag day and
without a restart, in memberlist's three steps: ``install`` a new key everywhere (everyone now
verifies it), ``use`` it everywhere (everyone signs with it), ``remove`` the old one everywhere. Each
key is named on the wire by a short id derived from it (an HMAC of a fixed label, revealing nothing
of the key), so a receiver tries exactly one key instead of all of them. Tags are truncated to 128
bits, which keeps forgery at 2**-128 per attempt.

The keyring is mutated while frames are signed and verified: every mutation builds a new immutable
``KeySet`` and swaps one reference, so a reader that takes ``current()`` once signs and names a
frame with the same key even if the ring changes underneath it (and a lock orders the writers).

This authenticates members; it does not hide payloads (no encryption) and does not stop replays. A
replayed frame is harmless by construction: deltas and states are idempotent joins, and membership
updates carry incarnation numbers, so an old one loses to a newer one.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterable
from dataclasses import dataclass

#: Bytes of the key id that names the signing key on the wire.
KEY_ID_BYTES = 4
#: Bytes of the truncated HMAC-SHA256 tag.
TAG_BYTES = 16
#: Shortest accepted key: HMAC-SHA256 keys shorter than this are guessable.
MIN_KEY_BYTES = 16
_KEY_ID_LABEL = b"likes/gossip/key-id/v1"


class KeyringError(ValueError):
    """A keyring operation that would leave the ring unusable or ambiguous (the ring is unchanged)."""


def key_id(key: bytes) -> bytes:
    """The public name of ``key``: stable, short, and useless for recovering the key."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True, slots=True)
class KeySet:
    """One immutable state of a keyring: the signing key, and every key by id."""

    primary: bytes
    primary_id: bytes
    by_id: dict[bytes, bytes]

    def sign(self, data: bytes | memoryview) -> bytes:
        """The tag of ``data`` under the primary key."""
        return _tag(self.primary, data)

    def verify(self, ident: bytes | memoryview, data: bytes | memoryview, tag: bytes) -> bool:
        """Whether ``tag`` authenticates ``data`` under the key named ``ident`` (constant time)."""
        key = self.by_id.get(bytes(ident))
        if key is None:
            return False
        return hmac.compare_digest(_tag(key, data), tag)


class Keyring:
    """The cluster secrets: sign with the primary key, verify with any; changeable while in use."""

    __slots__ = ("_current", "_lock")

    def __init__(self, keys: Iterable[bytes]) -> None:
        keys = tuple(keys)
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        by_id: dict[bytes, bytes] = {}
        for key in keys:
            _check(key, by_id)
            by_id.setdefault(key_id(key), key)
        self._current = KeySet(keys[0], key_id(keys[0]), by_id)
        self._lock = threading.Lock()

    def current(self) -> KeySet:
        """The keys as of now; sign and name one frame from one snapshot."""
        return self._current

    @property
    def primary_id(self) -> bytes:
        """The id of the key that signs outgoing frames."""
        return self._current.primary_id

    def ids(self) -> list[bytes]:
        """The id of every key, the primary first, then in installation order."""
        current = self._current
        return [current.primary_id, *(ident for ident in current.by_id if ident != current.primary_id)]

    def sign(self, data: bytes | memoryview) -> bytes:
        """The tag of ``data`` under the primary key."""
        return self._current.sign(data)

    def verify(self, ident: bytes | memoryview, data: bytes | memoryview, tag: bytes) -> bool:
        """Whether ``tag`` authenticates ``data`` under the key named ``ident`` (constant time)."""
        return self._current.verify(ident, data, tag)

    def install(self, key: bytes) -> bool:
        """Verify frames signed with ``key`` from now on; False if it was already installed."""
        with self._lock:
            current = self._current
            if current.by_id.get(key_id(key)) == key:
                return False
            _check(key, current.by_id)
            self._current = KeySet(current.primary, current.primary_id, {**current.by_id, key_id(key): key})
            return True

    def use(self, ident: bytes) -> bool:
        """Sign with the installed key named ``ident`` from now on; False if it already signs."""
        with self._lock:
            current = self._current
            key = current.by_id.get(bytes(ident))
            if key is None:
                raise KeyringError(f"no key {bytes(ident).hex()} is installed; install it first")
            if key == current.primary:
                return False
            self._current = KeySet(key, bytes(ident), current.by_id)
            return True

    def remove(self, ident: bytes) -> bool:
        """Stop verifying with the key named ``ident``; False if no such key. The primary stays."""
        with self._lock:
            current = self._current
            if bytes(ident) == current.primary_id:
                raise KeyringError("the primary key signs every frame; use another key before removing it")
            if bytes(ident) not in current.by_id:
                return False
            rest = {other: key for other, key in current.by_id.items() if other != bytes(ident)}
            self._current = KeySet(current.primary, current.primary_id, rest)
            return True


def _check(key: bytes, by_id: dict[bytes, bytes]) -> None:
    """Refuse a short key, or one whose id an installed different key already has."""
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise KeyringError(f"a key must be at least {MIN_KEY_BYTES} bytes")
    if by_id.get(key_id(key), key) != key:
        raise KeyringError("two keys of the keyring share a key id; generate a new key")


def _tag(key: bytes, data: bytes | memoryview) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_BYTES]
