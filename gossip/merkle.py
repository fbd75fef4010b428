"""A fixed-shape Merkle tree over (key, digest) items, updated in O(depth) per change.

Keys fall into ``FANOUT ** DEPTH`` leaf buckets by a hash of the key alone, so a key never moves as
its state changes. Each item contributes ``H(key || digest)``; a node's hash is the XOR of every item
hash beneath it. XOR makes the tree incremental (a changed digest XORs its old hash out and its new
one in along one root path) and independent of insertion order, so equal sets of items give equal
trees on every member. XOR set-hashing is forgeable by someone choosing items, but every item here
comes from an authenticated member. Hashes are 128-bit BLAKE2b.

The shape is a cluster-wide constant: two members compare node by node, so they must agree on it.
With depth 4 (65,536 leaves), 100,000 keys put one or two in a leaf and 10 million about 150.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

FANOUT = 16
DEPTH = 4
LEAVES = FANOUT**DEPTH
HASH_BYTES = 16
_BITS_PER_LEVEL = FANOUT.bit_length() - 1  # FANOUT is a power of two
_BUCKET_SHIFT = 64 - DEPTH * _BITS_PER_LEVEL  # a leaf is the top DEPTH * 4 bits of a 64-bit key hash


def bucket_of(key: bytes) -> int:
    """The leaf that holds ``key``."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> _BUCKET_SHIFT


def item_hash(key: bytes, digest: bytes) -> bytes:
    """The item's contribution; the key is length-prefixed so no (key, digest) split is ambiguous."""
    return hashlib.blake2b(
        len(key).to_bytes(4, "big") + key + digest, digest_size=HASH_BYTES, person=b"likes-merkle"
    ).digest()


class MerkleTree:
    """The digest index of one replica: node hashes by level, item hashes by leaf."""

    __slots__ = ("_count", "_leaves", "_levels")

    def __init__(self) -> None:
        self._levels: list[list[int]] = [[0] * FANOUT**level for level in range(DEPTH + 1)]
        self._leaves: dict[int, dict[bytes, bytes]] = {}
        self._count = 0

    def __len__(self) -> int:
        """Keys indexed."""
        return self._count

    def update(self, key: bytes, digest: bytes | None) -> bool:
        """Index ``key`` at ``digest`` (None removes it); whether anything changed."""
        leaf = bucket_of(key)
        entries = self._leaves.get(leaf)
        old = entries.get(key) if entries is not None else None
        new = item_hash(key, digest) if digest is not None else None
        if old == new:
            return False
        if new is None:
            assert entries is not None  # old is not None, so the leaf exists
            del entries[key]
            if not entries:
                del self._leaves[leaf]
            self._count -= 1
        else:
            if entries is None:
                entries = self._leaves[leaf] = {}
            if old is None:
                self._count += 1
            entries[key] = new
        change = _int(old) ^ _int(new)
        index = leaf
        for level in range(DEPTH, -1, -1):
            self._levels[level][index] ^= change
            index //= FANOUT
        return True

    def node(self, level: int, index: int) -> bytes:
        """The hash of one node; ``level`` 0 is the root, ``DEPTH`` the leaves."""
        return self._levels[level][index].to_bytes(HASH_BYTES, "big")

    @property
    def root(self) -> bytes:
        """The hash of everything indexed."""
        return self.node(0, 0)

    def entries(self, leaf: int) -> dict[bytes, bytes]:
        """The (key -> item hash) entries of one leaf (a copy)."""
        return dict(self._leaves.get(leaf, {}))

    def masked(self, leaves: Iterable[int]) -> MaskedTree:
        """This tree's hashes as if ``leaves`` were empty, in O(depth) per masked leaf."""
        return MaskedTree(self, leaves)


class MaskedTree:
    """A read-only view of a tree with some leaves counted as empty: two members that mask the same
    leaves compare everything else exactly, whatever those leaves hold on either side."""

    __slots__ = ("_out", "_tree", "leaves")

    def __init__(self, tree: MerkleTree, leaves: Iterable[int]) -> None:
        self._tree = tree
        self.leaves = frozenset(leaves)
        #: Per level, the XOR of the masked leaves' hashes under each node that has any.
        self._out: list[dict[int, int]] = [{} for _ in range(DEPTH + 1)]
        for leaf in self.leaves:
            change = tree._levels[DEPTH][leaf]
            index = leaf
            for level in range(DEPTH, -1, -1):
                out = self._out[level]
                out[index] = out.get(index, 0) ^ change
                index //= FANOUT

    def node(self, level: int, index: int) -> bytes:
        """The hash of one node without the masked leaves."""
        return self._hash(level, index).to_bytes(HASH_BYTES, "big")

    def children(self, level: int, index: int) -> list[tuple[int, bytes]]:
        """The (index, hash) of each child of a node above the leaves, without the masked leaves."""
        first = index * FANOUT
        return [
            (child, self._hash(level + 1, child).to_bytes(HASH_BYTES, "big"))
            for child in range(first, first + FANOUT)
        ]

    def _hash(self, level: int, index: int) -> int:
        return self._tree._levels[level][index] ^ self._out[level].get(index, 0)


def valid_node(level: int, index: int) -> bool:
    """Whether (level, index) names a node of the tree."""
    return 0 <= level <= DEPTH and 0 <= index < FANOUT**level


def _int(value: bytes | None) -> int:
    return int.from_bytes(value, "big") if value is not None else 0
