"""What the clients learned of each operation: the history the checker judges."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["like", "unlike"]
Outcome = Literal["ok", "fail", "info", "refused"]


@dataclass
class Op:
    """One client operation and what the client learned of it."""

    kind: Kind
    node: str
    outcome: Outcome
    start: float
    end: float
    #: The ``changed`` of a 200's answer (None otherwise). A node logs only changes, and answers a
    #: write that changed nothing without its log: only an acknowledged change shows it takes writes.
    changed: bool | None = None


@dataclass
class Pair:
    """One (item, user) pair and its history; ``home`` None: a like-only pair, any node."""

    item: int
    user: int
    home: str | None
    ops: list[Op] = field(default_factory=list)
    retired: bool = False


def answer_json(body: bytes) -> dict[str, Any]:
    """An answer's JSON object; empty if it is not one."""
    try:
        found = json.loads(body)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def error_code(body: bytes) -> str | None:
    """The ``code`` of an error answer's ``{"error": {"code", ...}}``, None if it has none."""
    error = answer_json(body).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
