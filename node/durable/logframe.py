"""How the write-ahead log's records and files are laid out on disk (``node.durable.wal`` decides what
goes in).

A record is a 16-byte header, then its payload (a msgpack array of ``[key, value]`` byte pairs):

    sync marker (3 bytes) | version (1) | payload length u32 | payload CRC-32 u32 | header CRC-32 u32

all big-endian; the header CRC covers the 12 bytes before it. A reader that meets a damaged record
searches forward for the next marker and accepts a record there only if both CRCs check, so damage
costs the records it touches, not the rest of the file. The header CRC lets it reject a marker that
is only payload bytes, and a damaged length, without reading a payload.

Files name their format first: a segment starts with ``LIKESLOG\\x02``; a snapshot with
``LIKESNAP\\x02``, the last segment it covers (u64) and a CRC-32 of those 17 bytes. A segment without
the header, and a ``LIKESNAP\\x01`` snapshot, are the previous format (``length u32, crc32 u32,
payload``, no marker), still read so that a node upgraded over an old data directory replays it; that
framing cannot resynchronise, so in it the first damaged record ends what is read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

Pair = tuple[bytes, bytes]

#: The record format this module writes; the fourth byte of every record's marker.
VERSION = 2
MARKER = b"\xf5LK" + bytes([VERSION])
#: marker, payload length, payload CRC, and the CRC of the 12 bytes before it.
_HEADER = struct.Struct(">4sIII")
RECORD_HEADER_BYTES = _HEADER.size
#: The header CRC is computed from the marker's, over length and payload CRC: one pack fewer.
_MARKER_CRC = zlib.crc32(MARKER)
_LENGTH_CRC = struct.Struct(">II")
_U32 = struct.Struct(">I")
#: Largest record accepted on read; a length beyond it is corruption, not a record.
MAX_RECORD_BYTES = 256 * 1024 * 1024
#: The first bytes of a segment file of this format.
LOG_MAGIC = b"LIKESLOG" + bytes([VERSION])
SNAPSHOT_MAGIC = b"LIKESNAP" + bytes([VERSION])
#: The snapshot format before records had markers (and its header a CRC).
LEGACY_SNAPSHOT_MAGIC = b"LIKESNAP\x01"
#: Snapshot header: magic, last segment covered; then the CRC of both.
_SNAPSHOT_HEAD = struct.Struct(">9sQ")
SNAPSHOT_HEADER_BYTES = _SNAPSHOT_HEAD.size + _U32.size
#: The previous record header: payload length and payload CRC-32.
_LEGACY = _LENGTH_CRC


class DamagedFile(ValueError):
    """A file that must read back whole (a snapshot) does not."""


class Damage(NamedTuple):
    """A span of bytes holding no intact record: where it starts in the file, and its length."""

    offset: int
    length: int


@dataclass
class Scan:
    """What reading a file found: its intact records in order, and the damaged spans between them."""

    records: list[list[Pair]] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    #: Bytes read (the file's length).
    size: int = 0

    @property
    def tail(self) -> Damage | None:
        """The damaged span that runs to the end of the file (a torn last write), if any."""
        last = self.damage[-1] if self.damage else None
        return last if last is not None and last.offset + last.length == self.size else None


def encode_record(pairs: Iterable[Pair], packer: msgpack.Packer | None = None) -> bytes:
    """One framed record holding ``pairs`` (packed by ``packer``, a thread's own, if given).

    Runs once per write on the event loop: one pass over the payload (its CRC), the rest is 12 bytes.
    """
    packer = packer or msgpack.Packer(use_bin_type=True)
    # A (key, value) tuple packs as the same two-element array a list does: no list per pair.
    payload: bytes = packer.pack(pairs if type(pairs) is list else list(pairs))
    length, crc = len(payload), zlib.crc32(payload)
    return _HEADER.pack(MARKER, length, crc, zlib.crc32(_LENGTH_CRC.pack(length, crc), _MARKER_CRC)) + payload


def read_segment(data: bytes) -> Scan:
    """Every intact record of a segment file of either format, and its damaged spans."""
    if data.startswith(LOG_MAGIC):
        return scan_records(data, len(LOG_MAGIC))
    if len(data) < len(LOG_MAGIC) and LOG_MAGIC.startswith(data):
        # A new segment whose header never fully reached the disk: nothing to read, a tail to cut.
        return Scan([], [Damage(0, len(data))] if data else [], len(data))
    records, end = read_legacy_records(data)
    # Old framing up to its first damage. A segment of this format whose own header was damaged
    # fails that at once: its records are then found by their markers.
    rest = scan_records(data, end)
    return Scan(records + rest.records, rest.damage, len(data))


def scan_records(data: bytes, start: int = 0) -> Scan:
    """The intact records of ``data[start:]`` (this format), resynchronising past damage."""
    view = memoryview(data)
    scan = Scan(size=len(data))
    offset = start
    damaged_from = -1
    while offset < len(data):
        pairs, end = _record_at(data, view, offset)
        if pairs is not None:
            if damaged_from >= 0:
                scan.damage.append(Damage(damaged_from, offset - damaged_from))
                damaged_from = -1
            scan.records.append(pairs)
            offset = end
            continue
        if damaged_from < 0:
            damaged_from = offset
        # Not from the damaged record's end: its length may be what is damaged.
        found = data.find(MARKER, offset + 1)
        offset = len(data) if found < 0 else found
    if damaged_from >= 0:
        scan.damage.append(Damage(damaged_from, len(data) - damaged_from))
    return scan


def _record_at(data: bytes, view: memoryview, offset: int) -> tuple[list[Pair] | None, int]:
    """The record starting at ``offset`` and where it ends, or (None, 0) if none intact starts there."""
    start = offset + RECORD_HEADER_BYTES
    if start > len(data):
        return None, 0
    marker, length, crc, header_crc = _HEADER.unpack_from(data, offset)
    end = start + length
    if (
        marker != MARKER
        or zlib.crc32(view[offset + 4 : start - 4], _MARKER_CRC) != header_crc
        or length > MAX_RECORD_BYTES
        or end > len(data)
    ):
        return None, 0
    payload = view[start:end]
    if zlib.crc32(payload) != crc:
        return None, 0
    return _pairs(payload), end


def read_legacy_records(data: bytes, start: int = 0) -> tuple[list[list[Pair]], int]:
    """The records of ``data[start:]`` in the previous framing, up to the first damaged one, and the
    offset where the intact part ends (that framing has no marker to resynchronise on)."""
    records: list[list[Pair]] = []
    offset = start
    while offset + _LEGACY.size <= len(data):
        length, crc = _LEGACY.unpack_from(data, offset)
        begin, end = offset + _LEGACY.size, offset + _LEGACY.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[begin:end]
        if zlib.crc32(payload) != crc:
            break
        pairs = _pairs(payload)
        if pairs is None:
            break
        records.append(pairs)
        offset = end
    return records, offset


def snapshot_header(covered: int) -> bytes:
    """The first bytes of a snapshot covering the segments up to ``covered``."""
    head = _SNAPSHOT_HEAD.pack(SNAPSHOT_MAGIC, covered)
    return head + _U32.pack(zlib.crc32(head))


def read_snapshot(data: bytes) -> tuple[int, list[list[Pair]]]:
    """The last segment a snapshot covers and its records; DamagedFile unless every byte checks."""
    magic = data[: len(SNAPSHOT_MAGIC)]
    if magic == LEGACY_SNAPSHOT_MAGIC and len(data) >= _SNAPSHOT_HEAD.size:
        covered: int = _SNAPSHOT_HEAD.unpack_from(data)[1]
        records, end = read_legacy_records(data, _SNAPSHOT_HEAD.size)
        if end != len(data):
            raise DamagedFile(f"damaged snapshot (a record fails its checksum at byte {end})")
        return covered, records
    if magic != SNAPSHOT_MAGIC or len(data) < SNAPSHOT_HEADER_BYTES:
        raise DamagedFile("not a snapshot this version reads (damaged, or written by a newer version)")
    covered = _SNAPSHOT_HEAD.unpack_from(data)[1]
    if zlib.crc32(data[: _SNAPSHOT_HEAD.size]) != _U32.unpack_from(data, _SNAPSHOT_HEAD.size)[0]:
        raise DamagedFile("damaged snapshot (its header fails its checksum)")
    scan = scan_records(data, SNAPSHOT_HEADER_BYTES)
    if scan.damage:
        skipped = sum(span.length for span in scan.damage)
        raise DamagedFile(f"damaged snapshot ({skipped} damaged bytes, from byte {scan.damage[0].offset})")
    return covered, scan.records


def _pairs(payload: bytes | memoryview) -> list[Pair] | None:
    """The pairs of a payload whose CRC checked; None if it is not a list of byte pairs."""
    try:
        wire: Any = msgpack.unpackb(payload, raw=False)
    except Exception:  # a CRC collision on garbage: treat as damage like any other
        return None
    if type(wire) is not list:
        return None
    pairs: list[Pair] = []
    for entry in wire:
        if type(entry) is not list or len(entry) != 2 or not all(type(x) is bytes for x in entry):
            return None
        pairs.append((entry[0], entry[1]))
    return pairs
