"""What a member is to the others: a name, an address, a SWIM state and an incarnation number."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gossip.transport import Address


class MemberState(StrEnum):
    """SWIM's view of a member; the string is what ``GET /v1/cluster`` shows."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


#: Wire numbers of the states; never reuse a retired number.
STATE_CODES: dict[MemberState, int] = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DEAD: 2}
STATE_OF_CODE: dict[int, MemberState] = {code: state for state, code in STATE_CODES.items()}


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member as this member currently sees it."""

    name: str
    address: Address
    state: MemberState
    #: Raised only by the member itself, to refute a suspicion; orders claims about it.
    incarnation: int
