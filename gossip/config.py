"""The settings of gossip, declared once, and the configuration of one member (memberlist's ``config.go``).

``GossipSettings`` holds every timing and size, each documented with its unit and trade-off; every
member of a cluster should use the same. Timings are seconds here. A setting an operator may tune
also says how a cluster file writes it (``cluster.yaml``'s ``gossip:`` section): its key, in
milliseconds for a timing (``delta_interval_ms``), and the range the file may give. ``node/config.py``
reads that section from these declarations alone, so a setting is named, bounded and documented in
this one place. ``GossipConfig`` is the settings plus who the member is: name, address, seeds and
keyring. The defaults suit a LAN cluster of a handful to a few dozen members; ``GossipConfig.local``
derives faster timings for tests on one machine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from gossip.security import MIN_KEY_BYTES
from gossip.transport import Address

#: Largest frame the 4-byte length prefix can describe.
MAX_FRAME_LIMIT = 2**32 - 1
#: Smallest frame cap that still leaves room for a useful batch.
MIN_FRAME_BYTES = 64 * 1024
#: A cluster file's units per second, for the timings it gives in milliseconds.
MS = 1000

_T = TypeVar("_T")
#: The field metadata under which a setting says how a cluster file writes it.
_IN_FILE = "in_file"


@dataclass(frozen=True, slots=True)
class FileKey:
    """How a cluster file writes one setting: its key, the inclusive range the file may give (in the
    file's unit), and how many of the file's units make one of the setting's (``MS`` for a timing)."""

    key: str
    low: int
    high: int
    scale: int = 1

    def read(self, value: int) -> float:
        """The setting's value for ``value`` as the file gives it (an int stays an int when unscaled)."""
        return value if self.scale == 1 else value / self.scale

    def write(self, value: float) -> int:
        """``value`` as the file writes it."""
        return round(value * self.scale)


def _setting(default: _T, key: str, low: int, high: int, scale: int = 1) -> _T:
    """A field with its default and how a cluster file writes it (``FileKey``)."""
    return field(default=default, metadata={_IN_FILE: FileKey(key, low, high, scale)})


@dataclass(frozen=True, slots=True)
class Peer:
    """A member known before start-up (a seed): its name and gossip address."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> Address:
        """Where the peer's gossip transport listens."""
        return (self.host, self.port)


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipSettings:
    """How gossip spreads state and detects failures: the same on every member of a cluster."""

    #: Seconds between pushes of locally produced deltas. Lower means fresher replicas and more,
    #: smaller frames; the replication lag of a healthy cluster is about one interval.
    delta_interval: float = _setting(0.05, "delta_interval_ms", 1, 60_000, MS)
    #: Peers each delta batch goes to once the cluster is larger than ``full_fanout_peers``; receivers
    #: forward it for log_fanout(n) generations. Higher spreads in fewer hops, with more duplicates.
    fanout: int = _setting(2, "fanout", 1, 64)
    #: Up to this many live peers every delta batch goes to every one of them (a 3-5 member cluster
    #: converges in one interval); above it, epidemic forwarding through ``fanout`` peers takes over.
    full_fanout_peers: int = _setting(8, "full_fanout_peers", 0, 1_000)
    #: Seconds between anti-entropy exchanges with one random live peer. Lower heals lost deltas,
    #: partitions and restarts sooner; each round costs a few small frames when nothing differs.
    anti_entropy_interval: float = _setting(1.0, "anti_entropy_interval_ms", 10, 3_600_000, MS)
    #: Differing Merkle leaves repaired per anti-entropy round (each leaf holds about items/65536
    #: keys). Higher catches a far-behind member up in fewer rounds with larger frames.
    anti_entropy_max_leaves: int = _setting(1024, "anti_entropy_max_leaves", 1, 65_536)
    #: Seconds between failure-detector probes (one member per probe, round robin). Lower detects
    #: failures sooner and sends more pings.
    probe_interval: float = _setting(0.5, "probe_interval_ms", 10, 60_000, MS)
    #: Seconds to wait for a direct ack before asking others to probe indirectly; must exceed the
    #: network round trip or healthy members get suspected. Less than ``probe_interval``.
    probe_timeout: float = _setting(0.2, "probe_timeout_ms", 1, 60_000, MS)
    #: Members asked to ping a silent member on our behalf; more tolerates a lossy link between just
    #: two members, at more messages per failed probe.
    indirect_probes: int = _setting(2, "indirect_probes", 0, 16)
    #: Seconds a suspect member has to refute before it is declared dead. Longer tolerates pauses
    #: (GC, overload) without false deaths; shorter stops sending to dead members sooner.
    suspicion_timeout: float = _setting(2.0, "suspicion_timeout_ms", 1, 3_600_000, MS)
    #: Seconds between full membership exchanges with one random member, dead ones included: how a
    #: partition or a restarted member rejoins even if no probe reaches it.
    membership_sync_interval: float = _setting(5.0, "membership_sync_interval_ms", 10, 3_600_000, MS)
    #: Seconds deltas still go to a member after it is declared dead (memberlist's
    #: GossipToTheDeadTime): a member falsely declared dead by an overloaded peer then misses
    #: nothing that anti-entropy would have to repair with whole states. Frames to a member that
    #: really died are dropped by the transport. Not in the cluster file.
    gossip_to_the_dead: float = 30.0
    #: Each membership update is piggybacked ``retransmit_mult * ceil(log10(n + 1))`` times.
    #: Higher survives more loss; lower keeps pings small. Not in the cluster file.
    retransmit_mult: int = 4
    #: Membership updates piggybacked on one ping or ack. Not in the cluster file.
    max_piggyback: int = 8
    #: Largest frame sent or accepted, in bytes; batches are split under it. A frame over it is
    #: rejected unread, so it bounds the memory a peer (or an attacker) can make us allocate. The
    #: node also caps one item's payload from a peer with it.
    max_frame_bytes: int = _setting(8 * 1024 * 1024, "max_frame_bytes", MIN_FRAME_BYTES, MAX_FRAME_LIMIT)

    def __post_init__(self) -> None:
        """Reject settings that would make gossip silently misbehave."""
        problems = self._problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        """What is wrong with the settings (``GossipConfig`` adds the member's identity)."""
        problems: list[str] = []
        for name in (
            "delta_interval",
            "anti_entropy_interval",
            "probe_interval",
            "probe_timeout",
            "suspicion_timeout",
            "membership_sync_interval",
        ):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if self.probe_timeout >= self.probe_interval:
            problems.append("probe_timeout must be shorter than probe_interval")
        for name in ("fanout", "anti_entropy_max_leaves", "retransmit_mult", "max_piggyback"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("full_fanout_peers", "indirect_probes", "gossip_to_the_dead"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if not MIN_FRAME_BYTES <= self.max_frame_bytes <= MAX_FRAME_LIMIT:
            problems.append(f"max_frame_bytes must lie in [{MIN_FRAME_BYTES}, {MAX_FRAME_LIMIT}]")
        return problems

    def as_file(self) -> dict[str, int]:
        """The settings a cluster file may give, keyed and scaled as it writes them."""
        return {key: spec.write(getattr(self, name)) for key, (name, spec) in file_keys().items()}


def file_keys() -> dict[str, tuple[str, FileKey]]:
    """Every key of a cluster file's gossip section: the ``GossipSettings`` field it sets, and how."""
    declared = [(f.name, f.metadata[_IN_FILE]) for f in fields(GossipSettings) if _IN_FILE in f.metadata]
    return {spec.key: (name, spec) for name, spec in declared}


@dataclass(frozen=True, slots=True)
class GossipConfig(GossipSettings):
    """How one member gossips: the cluster's ``GossipSettings`` plus who this member is. Every member
    of a cluster should use the same settings and keyring."""

    #: This member's unique name in the cluster (e.g. "n1"); identity survives address changes.
    name: str
    #: The address peers reach this member at. It is advertised as is, so never "0.0.0.0".
    host: str = "127.0.0.1"
    #: Gossip TCP port; 0 binds a free port (tests), advertised once bound.
    port: int = 7946
    #: Members contacted at start-up to join; may include this member (it is skipped). More seeds
    #: survive more seeds being down at boot; every member should list the same seeds.
    seeds: tuple[Peer, ...] = ()
    #: Cluster secrets at start-up, each at least 16 bytes. The first signs every outgoing frame, all
    #: of them verify. ``Gossiper.keyring`` changes them at runtime (install, use, remove), which is
    #: how a running cluster rotates keys; this field is only where the ring starts.
    keyring: tuple[bytes, ...] = ()

    def _problems(self) -> list[str]:
        """The member's identity first, then the settings (``GossipSettings``)."""
        problems: list[str] = []
        if not self.name:
            problems.append("name is empty")
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} out of range")
        if not self.keyring:
            problems.append("keyring is empty: gossip is always authenticated")
        problems.extend(
            f"keyring key {i} is shorter than {MIN_KEY_BYTES} bytes"
            for i, key in enumerate(self.keyring)
            if len(key) < MIN_KEY_BYTES
        )
        return problems + GossipSettings._problems(self)

    @property
    def address(self) -> Address:
        """The configured gossip address (the port may still be 0)."""
        return (self.host, self.port)

    @classmethod
    def from_settings(
        cls,
        settings: GossipSettings,
        name: str,
        *,
        keyring: tuple[bytes, ...],
        host: str = "127.0.0.1",
        port: int = 7946,
        seeds: tuple[Peer, ...] = (),
    ) -> GossipConfig:
        """Member ``name`` gossiping with ``settings`` (a cluster file's, say)."""
        tuned: dict[str, Any] = {f.name: getattr(settings, f.name) for f in fields(GossipSettings)}
        return cls(name=name, host=host, port=port, seeds=seeds, keyring=keyring, **tuned)

    @classmethod
    def local(
        cls,
        name: str,
        *,
        keyring: tuple[bytes, ...],
        host: str = "127.0.0.1",
        port: int = 0,
        seeds: tuple[Peer, ...] = (),
    ) -> GossipConfig:
        """A preset for tests on one machine: the defaults about five times faster."""
        return dataclasses.replace(
            cls(name=name, host=host, port=port, seeds=seeds, keyring=keyring),
            delta_interval=0.01,
            anti_entropy_interval=0.2,
            probe_interval=0.1,
            probe_timeout=0.04,
            suspicion_timeout=0.5,
            membership_sync_interval=0.3,
        )
