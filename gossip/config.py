"""The one configuration object of gossip, with presets built from each other (memberlist's ``config.go``).

Every timing is in seconds. The defaults suit a LAN cluster of a handful to a few dozen members;
``GossipConfig.local`` derives faster timings for tests on one machine. ``node/config.py`` fills
this from ``cluster.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gossip.security import MIN_KEY_BYTES
from gossip.transport import Address

#: Largest frame the 4-byte length prefix can describe.
MAX_FRAME_LIMIT = 2**32 - 1
#: Smallest frame cap that still leaves room for a useful batch.
MIN_FRAME_BYTES = 64 * 1024


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


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """How one member gossips; every member of a cluster should use the same timings and keyring."""

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
    #: Seconds between pushes of locally produced deltas. Lower means fresher replicas and more,
    #: smaller frames; the replication lag of a healthy cluster is about one interval.
    delta_interval: float = 0.05
    #: Peers each delta batch goes to once the cluster is larger than ``full_fanout_peers``; receivers
    #: forward it for log_fanout(n) generations. Higher spreads in fewer hops, with more duplicates.
    fanout: int = 2
    #: Up to this many live peers every delta batch goes to every one of them (a 3-5 member cluster
    #: converges in one interval); above it, epidemic forwarding through ``fanout`` peers takes over.
    full_fanout_peers: int = 8
    #: Seconds between anti-entropy exchanges with one random live peer. Lower heals lost deltas,
    #: partitions and restarts sooner; each round costs a few small frames when nothing differs.
    anti_entropy_interval: float = 1.0
    #: Differing Merkle leaves repaired per anti-entropy round (each leaf holds about items/65536
    #: keys). Higher catches a far-behind member up in fewer rounds with larger frames.
    anti_entropy_max_leaves: int = 1024
    #: Seconds between failure-detector probes (one member per probe, round robin). Lower detects
    #: failures sooner and sends more pings.
    probe_interval: float = 0.5
    #: Seconds to wait for a direct ack before asking others to probe indirectly; must exceed the
    #: network round trip or healthy members get suspected. Less than ``probe_interval``.
    probe_timeout: float = 0.2
    #: Members asked to ping a silent member on our behalf; more tolerates a lossy link between just
    #: two members, at more messages per failed probe.
    indirect_probes: int = 2
    #: Seconds a suspect member has to refute before it is declared dead. Longer tolerates pauses
    #: (GC, overload) without false deaths; shorter stops sending to dead members sooner.
    suspicion_timeout: float = 2.0
    #: Seconds between full membership exchanges with one random member, dead ones included: how a
    #: partition or a restarted member rejoins even if no probe reaches it.
    membership_sync_interval: float = 5.0
    #: Seconds deltas still go to a member after it is declared dead (memberlist's
    #: GossipToTheDeadTime): a member falsely declared dead by an overloaded peer then misses
    #: nothing that anti-entropy would have to repair with whole states. Frames to a member that
    #: really died are dropped by the transport.
    gossip_to_the_dead: float = 30.0
    #: Each membership update is piggybacked ``retransmit_mult * ceil(log10(n + 1))`` times.
    #: Higher survives more loss; lower keeps pings small.
    retransmit_mult: int = 4
    #: Membership updates piggybacked on one ping or ack.
    max_piggyback: int = 8
    #: Largest frame sent or accepted, in bytes; batches are split under it. A frame over it is
    #: rejected unread, so it bounds the memory a peer (or an attacker) can make us allocate.
    max_frame_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        """Reject settings that would make gossip silently misbehave."""
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
        for field in (
            "delta_interval",
            "anti_entropy_interval",
            "probe_interval",
            "probe_timeout",
            "suspicion_timeout",
            "membership_sync_interval",
        ):
            if not getattr(self, field) > 0:
                problems.append(f"{field} must be positive")
        if self.probe_timeout >= self.probe_interval:
            problems.append("probe_timeout must be shorter than probe_interval")
        for field in ("fanout", "anti_entropy_max_leaves", "retransmit_mult", "max_piggyback"):
            if getattr(self, field) < 1:
                problems.append(f"{field} must be at least 1")
        for field in ("full_fanout_peers", "indirect_probes", "gossip_to_the_dead"):
            if getattr(self, field) < 0:
                problems.append(f"{field} must not be negative")
        if not MIN_FRAME_BYTES <= self.max_frame_bytes <= MAX_FRAME_LIMIT:
            problems.append(f"max_frame_bytes must lie in [{MIN_FRAME_BYTES}, {MAX_FRAME_LIMIT}]")
        if problems:
            raise ValueError("invalid GossipConfig: " + "; ".join(problems))

    @property
    def address(self) -> Address:
        """The configured gossip address (the port may still be 0)."""
        return (self.host, self.port)

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
