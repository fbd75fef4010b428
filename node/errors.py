"""Every error the node package raises, under one root.

Request errors carry the HTTP status and the machine-readable code the API reports, so the
modules that validate input need not know about aiohttp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson


class NodeError(Exception):
    """Root of the errors raised by the node package."""


class ConfigError(NodeError):
    """The cluster file is unreadable or invalid; the message names the offending key."""


class DataDirError(NodeError):
    """A node's data directory is unusable: locked by another process, unreadable or corrupt."""


class StartupError(NodeError):
    """A node cannot start serving: a port is taken or an address cannot be bound."""


class ItemCodecError(NodeError, ValueError):
    """An item key or an item payload received from a peer is malformed."""


class RequestError(NodeError):
    """An HTTP request the node rejects; nothing has been changed when it is raised."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Headers the error response carries (``Retry-After``, ``WWW-Authenticate``).
        self.headers = headers


class MalformedRequest(RequestError):
    """The body is not valid JSON or does not have the expected shape."""

    status = 400
    code = "malformed"


class NotFound(RequestError):
    """No such route (raised by aiohttp's router; the class gives the status its code)."""

    status = 404
    code = "not_found"


class MethodNotAllowed(RequestError):
    """The route exists but not for this method (raised by aiohttp's router, like ``NotFound``)."""

    status = 405
    code = "method_not_allowed"


class Unauthorized(RequestError):
    """A write or admin request without a valid ``Authorization: Bearer`` token (when tokens are set)."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="likes"' + (', error="invalid_token"' if invalid_token else "")
        super().__init__(message, {"WWW-Authenticate": challenge})


class TooManyRequests(RequestError):
    """A client or a user is over its rate limit; nothing was applied. ``Retry-After`` says when to
    try again, in whole seconds (at least 1)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, {"Retry-After": str(max(1, math.ceil(retry_after)))})
        self.retry_after = retry_after


class PayloadTooLarge(RequestError):
    """The body exceeds ``api.max_body_bytes``."""

    status = 413
    code = "too_large"


class UnsupportedMediaType(RequestError):
    """A body was sent with a content type other than JSON."""

    status = 415
    code = "unsupported_media_type"


class WriteTimeout(RequestError):
    """A write level above 1 was not met in time; the write is durable locally all the same."""

    status = 503
    code = "write_timeout"


class NotDurable(RequestError):
    """The write-ahead log cannot write (a failing disk): the node refuses to acknowledge writes."""

    status = 503
    code = "not_durable"


class Unavailable(RequestError):
    """The node cannot answer this yet: it is still reading its item store in, or found a stored state
    damaged. ``Retry-After`` says when to ask again (another node can answer at once)."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


class InvalidValue(RequestError):
    """A well-formed request carries a value out of its domain (bad id, type name, limit...)."""

    status = 422
    code = "invalid"


class SinkUnavailable(NodeError):
    """A checkpoint sink cannot be reached or used right now; the same batch may be retried later."""


class SinkDataError(NodeError):
    """A checkpoint sink holds data that does not read back whole (a stored state is cut or altered)."""


#: What a 500 says: the request failed in a way nobody foresaw, so it may or may not have landed.
INTERNAL_MESSAGE = "internal error; the request may not have been applied"


def error_body(code: str, message: str) -> bytes:
    """The one error shape every answer uses, ``{"error": {"code", "message"}}``, as JSON bytes."""
    body: bytes = orjson.dumps({"error": {"code": code, "message": message}})
    return body
