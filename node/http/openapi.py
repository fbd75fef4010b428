"""The OpenAPI 3 document of the HTTP API, served at ``GET /openapi.json``.

Kept as data beside the code rather than generated from it, so it states the contract (statuses,
shapes, limits) a client may rely on; ``tests/node/test_openapi.py`` checks that every route the
application registers is here and nothing else is, and schemathesis (``tests/node/test_schemathesis.py``)
checks that the server answers what it says. ``HEAD`` is served for every ``GET`` (aiohttp adds it)
and is not listed. Limits that depend on ``cluster.yaml`` (page sizes, batch sizes, the body cap,
rate limits) are described, not encoded, since one document serves every configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from node.durable.durability import WRITE_LEVELS
from node.http import causal
from node.state.item import NAME_PATTERN

MAX_ID = 2**64 - 1
NAME = f"^{NAME_PATTERN}$"
ITEM = f"^{NAME_PATTERN}:[0-9]{{1,20}}$"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(properties: dict[str, Any], *, loose: bool = False) -> dict[str, Any]:
    """An object with exactly these (required) properties, or at least these when ``loose``."""
    schema: dict[str, Any] = {"type": "object", "required": list(properties), "properties": properties}
    if not loose:
        schema["additionalProperties"] = False
    return schema


_UINT64 = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
_COUNT = {"type": "integer", "minimum": 0}
_ID_IN_BODY = {
    "description": "unsigned 64-bit integer, as a number or a decimal string",
    "oneOf": [_UINT64, {"type": "string", "pattern": "^[0-9]{1,32}$"}],
}
_NEXT = {"type": "string", "nullable": True, "description": "the `after` of the next page, null at the end"}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}})},
    ),
    "LikeResult": _obj({"liked": {"type": "boolean"}, "changed": {"type": "boolean"}, "count": _COUNT}),
    "Liked": _obj({"liked": {"type": "boolean"}}),
    "Item": _obj(
        {
            "type": {"type": "string"},
            "id": _UINT64,
            "count": _COUNT,
            "counters": {"type": "object", "additionalProperties": {"type": "integer"}},
        }
    ),
    "Likers": _obj(
        {
            "type": {"type": "string"},
            "id": _UINT64,
            "count": _COUNT,
            "likers": {"type": "array", "items": _UINT64},
            "next": _NEXT,
        }
    ),
    "ItemRef": _obj({"type": {"type": "string", "pattern": NAME}, "id": _ID_IN_BODY}),
    "ItemOut": _obj({"type": {"type": "string"}, "id": _UINT64}),
    "UserLikes": _obj(
        {"user": _UINT64, "items": {"type": "array", "items": _ref("schemas", "ItemOut")}, "next": _NEXT}
    ),
    "CounterDelta": _obj(
        {
            "delta": {
                "type": "integer",
                "description": "added; negative subtracts; |delta| <= api.max_counter_delta",
            }
        }
    ),
    "CounterValue": _obj({"value": {"type": "integer"}}),
    "CountsRequest": _obj(
        {
            "items": {
                "type": "array",
                "items": _ref("schemas", "ItemRef"),
                "description": "at most api.max_count_items",
            }
        }
    ),
    "Counts": _obj({"counts": {"type": "array", "items": _COUNT}}),
    "LikedMany": _obj({"user": _UINT64, "liked": {"type": "array", "items": {"type": "boolean"}}}),
    "BatchOp": _obj(
        {
            "op": {"type": "string", "enum": ["like", "unlike"]},
            "type": {"type": "string", "pattern": NAME},
            "id": _ID_IN_BODY,
            "user": _ID_IN_BODY,
        }
    ),
    "BatchRequest": _obj(
        {
            "ops": {
                "type": "array",
                "items": _ref("schemas", "BatchOp"),
                "description": "at most api.max_batch_ops",
            }
        }
    ),
    "BatchResults": _obj({"results": {"type": "array", "items": _ref("schemas", "LikeResult")}}),
    "Cluster": _obj(
        {
            "node": {"type": "object"},
            "members": {"type": "array", "items": {"type": "object"}},
            "items": _COUNT,
            "likes": {**_COUNT, "description": "likes held over every item (the sum of their counts)"},
            "fingerprint": {"type": "string"},
            "gossip": {"type": "object"},
            "wal": _obj(
                {
                    "failure": {
                        "type": "string",
                        "nullable": True,
                        "description": "why the write-ahead log refuses writes now; null while it takes them",
                    },
                    "failed_since": {
                        "type": "number",
                        "nullable": True,
                        "description": "Unix time (seconds) the current failure began; null while none",
                    },
                    "failures": {**_COUNT, "description": "times the log failed since the node started"},
                    "recoveries": {**_COUNT, "description": "times it took writes again after failing"},
                },
                loose=True,
            ),
            "checkpoint": {"type": "object"},
            "writes": {"type": "object", "description": "local writes that changed state, by kind"},
        },
        loose=True,
    ),
    "DashboardNode": _obj(
        {
            "name": {"type": "string"},
            "url": {"type": "string"},
            "up": {"type": "boolean"},
            "error": {"type": "string", "nullable": True, "description": "why the node is shown as down"},
            "fingerprint": {"type": "string", "nullable": True},
            "agrees": {"type": "boolean", "nullable": True},
            "likes_held": {"type": "integer", "nullable": True, "description": "over every item"},
            "local_likes": {"type": "integer", "nullable": True, "description": "likes made on this node"},
            "like_rate": {"type": "number", "nullable": True, "description": "local likes per second"},
            "gossip_bytes_rate": {"type": "number", "nullable": True},
            "wal_fsync_p50_ms": {"type": "number", "nullable": True},
            "ready": {
                "type": "boolean",
                "nullable": True,
                "description": "it takes writes (false: its write-ahead log failed); null while down",
            },
            "wal_failure": {"type": "string", "nullable": True, "description": "why it refuses writes"},
            "checkpoint_lag_ms": {"type": "integer", "nullable": True},
        },
        loose=True,
    ),
    "Dashboard": _obj(
        {
            "node": {"type": "string"},
            "time": {"type": "number", "description": "Unix time of the gathering, seconds"},
            "poll_ms": _COUNT,
            "members": {
                "type": "array",
                "items": _obj({"name": {"type": "string"}, "state": {"type": "string"}}),
            },
            "alive": _COUNT,
            "agree": {"type": "boolean", "description": "every answering node reports the same fingerprint"},
            "convergence_lag_s": {"type": "number", "minimum": 0},
            "nodes": {"type": "array", "items": _ref("schemas", "DashboardNode")},
            "history": {"type": "array", "items": {"type": "object"}, "description": "samples for charts"},
        }
    ),
    "LiveCounts": _obj(
        {
            "node": {"type": "string"},
            "counts": {"type": "object", "additionalProperties": _COUNT, "description": "`type:id` -> count"},
        }
    ),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}, "node": {"type": "string"}}),
    "Ready": _obj({"ready": {"type": "boolean", "enum": [True]}, "node": {"type": "string"}}),
    "Keyring": _obj({"primary": {"type": "string"}, "keys": {"type": "array", "items": {"type": "string"}}}),
    "KeyringChange": _obj(
        {"key_id": {"type": "string"}, "primary": {"type": "string"}, "keys": {"type": "array"}}, loose=True
    ),
    "InstallKey": _obj({"key": {"type": "string", "description": "16-1024 bytes"}}),
    "UseKey": _obj({"key_id": {"type": "string", "pattern": "^[0-9a-fA-F]{8}$"}}),
}

_ERROR = _ref("schemas", "Error")
RESPONSES: dict[str, Any] = {
    "Malformed": _json(
        _ERROR,
        "`malformed`: the body is not strict JSON (repeated keys, NaN, trailing "
        "data...) or not of the expected shape; `bad_causal_token`: the causal token is not one",
    ),
    "Unauthorized": {
        **_json(
            _ERROR,
            "`unauthorized`: a write or admin request without a valid bearer token (when "
            "`security.api_tokens` is set), or an admin request without a valid signature",
        ),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "NotFound": _json(_ERROR, "`not_found`: the path names no route (a segment holding `/`, say)"),
    "Conflict": _json(_ERROR, "`conflict`: the change would break the keyring"),
    "TooLarge": _json(_ERROR, "`too_large`: the body is over `api.max_body_bytes`"),
    "UnsupportedMediaType": _json(
        _ERROR, "`unsupported_media_type`: the body is not `application/json` (UTF-8)"
    ),
    "Invalid": _json(
        _ERROR,
        "`invalid`: a value out of its domain (an id of 2^64, a bad type name, a "
        "limit, an unknown field, more ops of one user than `api.user_burst`)",
    ),
    "RateLimited": {
        **_json(
            _ERROR,
            "`rate_limited`: the client (`api.client_rate`) or a user (`api.user_rate`) is "
            "over its limit; nothing was applied",
        ),
        "headers": {
            "Retry-After": {
                "required": True,
                "description": "seconds to wait",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
    "Unavailable": _json(
        _ERROR,
        "`write_timeout` (the write level was not met in time; the write is "
        "durable here and still spreads), `not_durable` (this node's disk fails), `causal_timeout` "
        "(the writes a causal token names did not arrive in time; nothing was applied) or `unavailable` "
        "(the node is still reading its item store in, or found a stored state damaged; `Retry-After` "
        "says when to ask again, another node can answer at once)",
    ),
    "NotReady": _json(
        _ERROR,
        "`not_ready`: the node should get no traffic now, its message says why: its write-ahead log "
        "failed (it still serves reads and takes writes again by itself once its disk does), or it "
        "is still reading its item store in after a start (it serves meanwhile)",
    ),
}

PARAMETERS: dict[str, Any] = {
    "type": {
        "name": "type",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": NAME},
    },
    "id": {"name": "id", "in": "path", "required": True, "schema": _UINT64},
    "user": {"name": "user", "in": "path", "required": True, "schema": _UINT64},
    "name": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "counter name",
        "schema": {"type": "string", "pattern": NAME},
    },
    "w": {
        "name": "w",
        "in": "query",
        "description": "write level: acknowledged once fsynced here (1), or also merged by a majority or "
        "all of the nodes of the cluster file",
        "schema": {"type": "string", "enum": list(WRITE_LEVELS)},
    },
    "limit": {
        "name": "limit",
        "in": "query",
        "description": "page size, 1 to api.max_page_limit (default api.default_page_limit)",
        "schema": {"type": "integer", "minimum": 1},
    },
    "after_user": {"name": "after", "in": "query", "description": "user id cursor", "schema": _UINT64},
    "after_item": {
        "name": "after",
        "in": "query",
        "description": "`type:id` cursor",
        "schema": {"type": "string", "pattern": ITEM},
    },
    "item": {
        "name": "item",
        "in": "query",
        "required": True,
        "style": "form",
        "explode": True,
        "description": "an item as `type:id`; repeat the parameter for more (at most 32)",
        "schema": {
            "type": "array",
            "minItems": 1,
            "maxItems": 32,
            "items": {"type": "string", "pattern": ITEM},
        },
    },
    "key_id": {
        "name": "key_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{8}$"},
    },
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "one of `security.api_tokens`"},
    "adminKeyId": {"type": "apiKey", "in": "header", "name": "X-Likes-Key-Id"},
    "adminTimestamp": {"type": "apiKey", "in": "header", "name": "X-Likes-Timestamp"},
    "adminSignature": {"type": "apiKey", "in": "header", "name": "X-Likes-Signature"},
}
#: Writes need a token only when tokens are configured: either requirement satisfies the document.
_WRITE_SECURITY: list[dict[str, list[str]]] = [{}, {"bearer": []}]
_ADMIN: dict[str, list[str]] = {"adminKeyId": [], "adminTimestamp": [], "adminSignature": []}
_ADMIN_SECURITY: list[dict[str, list[str]]] = [_ADMIN, {**_ADMIN, "bearer": []}]


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: list[str],
    *,
    params: Sequence[str] = (),
    body: str | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    """One operation: its 200, the named error responses, and 429 (every route is rate limited)."""
    statuses = {
        "Malformed": "400",
        "Unauthorized": "401",
        "NotFound": "404",
        "Conflict": "409",
        "TooLarge": "413",
        "UnsupportedMediaType": "415",
        "Invalid": "422",
        "Unavailable": "503",
        "NotReady": "503",
    }
    responses: dict[str, Any] = {"200": ok}
    for name in errors:
        responses[statuses[name]] = _ref("responses", name)
    responses["429"] = _ref("responses", "RateLimited")
    operation: dict[str, Any] = {"summary": summary, "responses": dict(sorted(responses.items()))}
    if params:
        operation["parameters"] = [_ref("parameters", name) for name in params]
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref("schemas", body)}},
        }
    if security is not None:
        operation["security"] = security
    return operation


_PATH = ["type", "id"]
_WRITE_ERRORS = ["Malformed", "Unauthorized", "NotFound", "Invalid", "Unavailable"]
_BODY_ERRORS = ["Malformed", "NotFound", "TooLarge", "UnsupportedMediaType", "Invalid"]
_LIKE = _json(
    _ref("schemas", "LikeResult"), "the like as it now stands; `changed`: this call made the difference"
)

PATHS: dict[str, Any] = {
    "/v1/items/{type}/{id}/likes/{user}": {
        "put": _op(
            "Like (idempotent)", _LIKE, _WRITE_ERRORS, params=[*_PATH, "user", "w"], security=_WRITE_SECURITY
        ),
        "delete": _op(
            "Unlike (idempotent)",
            _LIKE,
            _WRITE_ERRORS,
            params=[*_PATH, "user", "w"],
            security=_WRITE_SECURITY,
        ),
        "get": _op(
            "Whether the user likes the item",
            _json(_ref("schemas", "Liked"), "liked or not"),
            ["NotFound", "Invalid"],
            params=[*_PATH, "user"],
        ),
    },
    "/v1/items/{type}/{id}": {
        "get": _op(
            "The item's like count and named counters",
            _json(_ref("schemas", "Item"), "the item"),
            ["NotFound", "Invalid"],
            params=_PATH,
        ),
    },
    "/v1/items/{type}/{id}/likes": {
        "get": _op(
            "The item's likers in ascending user id, a page at a time",
            _json(_ref("schemas", "Likers"), "a page of likers"),
            ["NotFound", "Invalid"],
            params=[*_PATH, "limit", "after_user"],
        ),
    },
    "/v1/users/{user}/likes": {
        "get": _op(
            "The items a user likes in (type, id) order, a page at a time (503 `unavailable` while the "
            "node still reads its item store in after a start)",
            _json(_ref("schemas", "UserLikes"), "a page of items"),
            ["NotFound", "Invalid", "Unavailable"],
            params=["user", "limit", "after_item"],
        ),
    },
    "/v1/items/{type}/{id}/counters/{name}": {
        "post": _op(
            "Add to a named PN-counter of the item",
            _json(_ref("schemas", "CounterValue"), "the counter's new value"),
            sorted({*_WRITE_ERRORS, *_BODY_ERRORS}),
            params=[*_PATH, "name", "w"],
            body="CounterDelta",
            security=_WRITE_SECURITY,
        ),
    },
    "/v1/counts": {
        "post": _op(
            "Like counts of many items, in the order asked (a read)",
            _json(_ref("schemas", "Counts"), "one count per item"),
            _BODY_ERRORS,
            body="CountsRequest",
        ),
    },
    "/v1/users/{user}/liked": {
        "post": _op(
            "Whether the user likes each of many items, in the order asked (a read)",
            _json(_ref("schemas", "LikedMany"), "one answer per item"),
            _BODY_ERRORS,
            params=["user"],
            body="CountsRequest",
        ),
    },
    "/v1/batch": {
        "post": _op(
            "Many likes and unlikes: all validated (and rate limited) first, then applied in order",
            _json(_ref("schemas", "BatchResults"), "one result per op"),
            sorted({*_WRITE_ERRORS, *_BODY_ERRORS}),
            params=["w"],
            body="BatchRequest",
            security=_WRITE_SECURITY,
        ),
    },
    "/v1/cluster": {
        "get": _op(
            "This node, its members, its state's fingerprint, log and checkpoint lag",
            _json(_ref("schemas", "Cluster"), "the node's view"),
            [],
        ),
    },
    "/v1/dashboard": {
        "get": _op(
            "Every node's status gathered by this one, agreement, convergence lag, recent samples",
            _json(_ref("schemas", "Dashboard"), "a node that does not answer is reported as down"),
            [],
        ),
    },
    "/v1/keyring": {
        "get": _op(
            "Key ids of the gossip keyring, the signing key first",
            _json(_ref("schemas", "Keyring"), "the keyring"),
            ["Unauthorized"],
            security=_ADMIN_SECURITY,
        ),
        "post": _op(
            "Install a gossip key",
            _json(_ref("schemas", "KeyringChange"), "installed or already there"),
            ["Malformed", "Unauthorized", "Conflict", "TooLarge", "UnsupportedMediaType", "Invalid"],
            body="InstallKey",
            security=_ADMIN_SECURITY,
        ),
    },
    "/v1/keyring/primary": {
        "put": _op(
            "Sign gossip with an installed key",
            _json(_ref("schemas", "KeyringChange"), "the primary now"),
            ["Malformed", "Unauthorized", "Conflict", "TooLarge", "UnsupportedMediaType", "Invalid"],
            body="UseKey",
            security=_ADMIN_SECURITY,
        ),
    },
    "/v1/keyring/{key_id}": {
        "delete": _op(
            "Remove a gossip key",
            _json(_ref("schemas", "KeyringChange"), "removed or already gone"),
            ["Unauthorized", "NotFound", "Conflict", "Invalid"],
            params=["key_id"],
            security=_ADMIN_SECURITY,
        ),
    },
    "/healthz": {
        "get": _op(
            "Liveness: 200 while the process answers, its disk failing or not. What an orchestrator "
            "restarts the node on; `/readyz` says whether to send it traffic",
            _json(_ref("schemas", "Health"), "the process answers"),
            [],
        ),
    },
    "/readyz": {
        "get": _op(
            "Readiness: 200 while the node takes writes, 503 `not_ready` (with the reason) while it "
            "does not. What a load balancer takes the node out of rotation on, and back in once it "
            "answers 200; a restart does not cure it",
            _json(_ref("schemas", "Ready"), "the node takes writes"),
            ["NotReady"],
        ),
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            [],
        ),
    },
    "/dashboard": {
        "get": _op(
            "The operator's dashboard (it polls /v1/dashboard)",
            {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
            [],
        ),
    },
    "/openapi.json": {
        "get": _op(
            "This document",
            {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}},
            [],
        ),
    },
    "/v1/events": {
        "get": _op(
            "Live like counts of the items named (Server-Sent Events): a `hello` event (`node`, "
            "`items`), then `counts` events (`{\"counts\": {\"type:id\": n}}`) with the counts at once "
            "and each change, whichever node the likes arrived at. A client that does not accept "
            "`text/event-stream` gets the counts once as JSON. 429 `too_many_streams` when the node "
            "serves its maximum of open streams",
            {
                "description": "an event stream, or the counts once as JSON",
                "content": {
                    "text/event-stream": {"schema": {"type": "string"}},
                    "application/json": {"schema": _ref("schemas", "LiveCounts")},
                },
            },
            ["Malformed", "Invalid"],
            params=["item"],
        ),
    },
    "/": {
        "get": _op(
            "The like page: like buttons for demo posts, live counts, an offline queue",
            {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
            [],
        ),
    },
    "/like.js": {
        "get": _op(
            "The like page's script",
            {"description": "JavaScript", "content": {"text/javascript": {"schema": {"type": "string"}}}},
            [],
        ),
    },
    "/like.css": {
        "get": _op(
            "The like page's style sheet",
            {"description": "CSS", "content": {"text/css": {"schema": {"type": "string"}}}},
            [],
        ),
    },
}


def _with_causal_tokens(paths: dict[str, Any]) -> dict[str, Any]:
    """Every route that honours ``Likes-Causal-Token`` (``node.http.causal``) documents it: the request
    header, the token a write answers with, 400 for a bad token and 503 when its writes never came."""
    header = {
        "schema": {"type": "string"},
        "description": "covers this write and the token sent with it; send it with the next request",
    }
    for path, operations in paths.items():
        if not path.startswith(causal.ROUTE_PREFIXES):
            continue
        for method, operation in operations.items():
            operation["parameters"] = [*operation.get("parameters", ()), _ref("parameters", "causal_token")]
            operation["responses"]["400"] = _ref("responses", "Malformed")
            operation["responses"]["503"] = _ref("responses", "Unavailable")
            if method in ("put", "delete", "post"):
                operation["responses"]["200"] = {
                    **operation["responses"]["200"],
                    "headers": {causal.HEADER: header},
                }
            operation["responses"] = dict(sorted(operation["responses"].items()))
    return paths


PARAMETERS["causal_token"] = {
    "name": causal.HEADER,
    "in": "header",
    "description": "a token from an earlier write's answer: this request is applied (or answered) only "
    "after the writes it names, waiting up to `api.causal_wait_ms`",
    "schema": {"type": "string", "maxLength": causal.MAX_TOKEN_CHARS},
}
PATHS = _with_causal_tokens(PATHS)


def document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh copy each call is not needed: callers must not mutate it)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "likes",
            "version": "1",
            "description": "A CRDT-based distributed like counter; every node serves all of this. Errors "
            'are `{"error": {"code", "message"}}`; a rejected request changes nothing.',
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "parameters": PARAMETERS,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
