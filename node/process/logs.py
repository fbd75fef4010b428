"""A node's logs: one line per record, the node's name on every line, events as key/values.

Two formats, the same fields:

- ``json`` (JSON lines, python-json-logger over orjson): what log shippers read without a parser of
  our own. Every line is one object: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``node``,
  ``logger``, ``message``, then whatever the record carries as ``extra`` (``event`` and its values),
  and ``exc_info`` when there is a traceback, so even a traceback stays on its line.
- ``text``: the same fields for a human at a terminal, ``time level node logger: message`` followed
  by the extra values as ``key=value``.

``auto`` (the default) picks ``text`` when stderr is a terminal and ``json`` otherwise, so ``likes up``
in a shell stays readable and a node under systemd or a test writes JSON lines.

The lines an operator or a test looks for carry an ``event`` field, each logged exactly once per
occurrence (see README, Logs): ``node_started``, ``node_stopped``, ``member_changed``,
``sink_down``, ``sink_up``, ``wal_failed``, ``wal_recovered``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final, Literal, TextIO

from pythonjsonlogger.orjson import OrjsonFormatter

LogFormat = Literal["json", "text"]
#: What ``--log-format`` accepts.
LOG_FORMAT_CHOICES: Final = ("auto", "json", "text")
#: What ``--log-level`` accepts: the least severe records written.
LOG_LEVEL_CHOICES: Final = ("debug", "info", "warning", "error")

#: Attributes every ``LogRecord`` has (on this Python), plus those formatting adds: anything else on a
#: record came from ``extra`` and is printed as a key/value.
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "node",
    "taskName",
}


class _UtcTime(logging.Formatter):
    """Times as ``2025-01-31T12:00:00.123Z``: sortable, unambiguous across hosts and zones."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


class JsonLineFormatter(OrjsonFormatter, _UtcTime):
    """One JSON object per record: time, level, node, logger, message, then the extra fields."""

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{node}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=sorted(_STANDARD),
        )


class TextLineFormatter(_UtcTime):
    """``time level node logger: message key=value ...``: the JSON line's fields, for a human."""

    def __init__(self) -> None:
        super().__init__("{asctime} {levelname:<7} {node} {name}: {message}", style="{")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={_text(value)}" for key, value in extra_fields(record).items())
        if not extras:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the record's first line
        return f"{head} {extras}{newline}{rest}"


class NodeNameFilter(logging.Filter):
    """Stamps every record with the node's name, whoever logged it (aiohttp, asyncio, gossip)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed as ``extra``: the record's attributes beyond the standard ones."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


def resolve_format(choice: str, stream: TextIO) -> LogFormat:
    """``auto`` is text on a terminal and JSON lines elsewhere."""
    if choice == "auto":
        return "text" if stream.isatty() else "json"
    if choice not in ("json", "text"):
        raise ValueError(f"unknown log format {choice!r}")
    return "json" if choice == "json" else "text"


def log_handler(node: str, log_format: LogFormat, stream: TextIO) -> logging.Handler:
    """A handler writing ``node``'s records to ``stream`` in ``log_format``."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(NodeNameFilter(node))
    handler.setFormatter(JsonLineFormatter() if log_format == "json" else TextLineFormatter())
    return handler


def configure_logging(
    node: str, choice: str = "auto", *, level: str = "info", stream: TextIO | None = None
) -> LogFormat:
    """Route every log record of ``level`` or above (``LOG_LEVEL_CHOICES``) of this process to
    ``stream`` (stderr) as ``node``'s; the format used."""
    if level not in LOG_LEVEL_CHOICES:
        raise ValueError(f"unknown log level {level!r}")
    stream = sys.stderr if stream is None else stream
    log_format = resolve_format(choice, stream)
    handlers = [log_handler(node, log_format, stream)]
    logging.basicConfig(level=level.upper(), handlers=handlers, force=True)
    logging.captureWarnings(True)  # a library's warning is a record too, not a stray unformatted line
    return log_format


def _text(value: object) -> str:
    """A value that reads as one token when it is one, quoted when it has spaces."""
    text = str(value)
    return repr(text) if (not text or any(c.isspace() for c in text) or "=" in text) else text
