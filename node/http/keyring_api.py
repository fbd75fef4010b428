"""Runtime keyring changes: admin routes under ``/v1/keyring`` and the client ``likes keys`` uses.

A cluster rotates its gossip key without a restart in Serf's three steps, each applied to every node
before the next begins: **install** the new key (every node verifies it), **use** it (every node
signs with it), **remove** the old one. The routes:

=====================================  ========================================================
``GET /v1/keyring``                    ``{"primary": id, "keys": [id, ...]}``
``POST /v1/keyring`` ``{"key": k}``    install ``k``; ``{"key_id", "installed": bool, ...}``
``PUT /v1/keyring/primary``            ``{"key_id": id}``: sign with that (installed) key
``DELETE /v1/keyring/{key_id}``        stop verifying with it (409 while it is the primary)
=====================================  ========================================================

Ids are the 4-byte wire key ids in hex; no response ever carries key material. Every operation is
idempotent (``installed``/``changed``/``removed`` say whether this call made the difference), so the
CLI may simply retry.

**Who may call them.** The HTTP API is public, and whoever installs a key joins gossip, so every
admin request must prove it holds a key of the node's current ring: it carries ``X-Likes-Key-Id``,
``X-Likes-Timestamp`` (``<Unix seconds>.<nonce>``, within ``ADMIN_WINDOW`` of the node's clock) and
``X-Likes-Signature``, a truncated HMAC-SHA256 under that key of the method, path, timestamp and
body digest, prefixed with a label no gossip frame can start with. A signature is accepted once, so
a captured request cannot be replayed. This authenticates requests; it does not hide them: the
body of an install carries the new key in the clear, so run ``likes keys`` over a trusted network
(or loopback) until the API has TLS. When ``security.api_tokens`` is set, these routes also need
``Authorization: Bearer <token>`` like every write (``node.http.api.guard``); the CLI sends the first.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TextIO

from aiohttp import web

from gossip.security import KEY_ID_BYTES, MIN_KEY_BYTES, Keyring, KeyringError, key_id
from node.config import ClusterConfig, NodeSpec
from node.errors import InvalidValue, MalformedRequest, RequestError
from node.http.api import read_json, reply

#: Seconds an admin request's timestamp may differ from the node's clock.
ADMIN_WINDOW = 60
#: Signatures remembered against replay (admin requests are rare; the oldest go first past this).
MAX_REMEMBERED = 4096
#: Longest key accepted, in bytes: a key is a secret, not a payload.
MAX_KEY_BYTES = 1024
#: How long the CLI waits for one node, in seconds.
QUERY_TIMEOUT = 5.0
KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "X-Likes-Key-Id", "X-Likes-Timestamp", "X-Likes-Signature"
_LABEL = b"likes/admin/v1\n"  # 'l' is no protocol version: a frame's tag never verifies a request


class Unauthorized(RequestError):
    """An admin request without a fresh, unused signature under a key of the node's ring."""

    status = 401
    code = "unauthorized"


class KeyringConflict(RequestError):
    """A keyring change that would break the ring: removing the primary, using an absent key."""

    status = 409
    code = "conflict"


def signed_text(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    """What an admin signature covers: method, path with query, timestamp (with its nonce) and body
    digest."""
    digest = hashlib.sha256(body).hexdigest()
    return _LABEL + f"{method.upper()}\n{path}\n{timestamp}\n{digest}".encode()


def admin_headers(
    key: bytes, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers that authenticate one admin request under ``key``."""
    # A nonce after the seconds makes every request's signature unique, so a repeat is not a replay.
    timestamp = f"{int(time.time() if now is None else now)}.{secrets.token_hex(8)}"
    signature = Keyring([key]).sign(signed_text(method, path, timestamp, body))
    return {KEY_ID_HEADER: key_id(key).hex(), TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature.hex()}


class ReplayGuard:
    """The signatures accepted within the window, so each is accepted once."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def first_use(self, signature: bytes, now: float) -> bool:
        """Remember ``signature``; False if it was already used."""
        while self._seen and (
            len(self._seen) >= MAX_REMEMBERED or next(iter(self._seen.values())) < now - 2 * ADMIN_WINDOW
        ):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


KEYRING = web.AppKey("keyring", Keyring)
REPLAYS = web.AppKey("keyring_replays", ReplayGuard)
routes = web.RouteTableDef()


def add_keyring_routes(app: web.Application, keyring: Keyring) -> None:
    """Serve the admin routes of ``keyring`` (the gossiper's own: changes apply to the next frame)."""
    app[KEYRING] = keyring
    app[REPLAYS] = ReplayGuard()
    app.add_routes(routes)


async def _authorized(request: web.Request) -> Keyring:
    """The keyring, once the request is shown to come from a holder of one of its keys."""
    keyring = request.app[KEYRING]
    headers = request.headers
    try:
        ident = bytes.fromhex(headers[KEY_ID_HEADER])
        timestamp = headers[TIMESTAMP_HEADER]
        signature = bytes.fromhex(headers[SIGNATURE_HEADER])
        age = abs(time.time() - int(timestamp.split(".", 1)[0]))
    except (KeyError, ValueError):
        raise Unauthorized(
            f"sign admin requests with a cluster key: {KEY_ID_HEADER}, {TIMESTAMP_HEADER}, {SIGNATURE_HEADER}"
        ) from None
    if age > ADMIN_WINDOW:
        raise Unauthorized(f"the request's timestamp is more than {ADMIN_WINDOW} s from the node's clock")
    body = await request.read()
    if not keyring.current().verify(
        ident, signed_text(request.method, request.raw_path, timestamp, body), signature
    ):
        raise Unauthorized("the signature does not verify under any key of this node's keyring")
    if not request.app[REPLAYS].first_use(signature, time.time()):
        raise Unauthorized("this signed request was already used")
    return keyring


def _view(keyring: Keyring) -> dict[str, Any]:
    ids = keyring.ids()
    return {"primary": ids[0].hex(), "keys": [ident.hex() for ident in ids]}


def _key_id(value: object, where: str) -> bytes:
    if isinstance(value, str) and len(value) == 2 * KEY_ID_BYTES:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise InvalidValue(f"{where}: expected a key id of {2 * KEY_ID_BYTES} hex digits")


def _only(body: object, field: str) -> object:
    if not isinstance(body, dict) or set(body) != {field}:
        raise MalformedRequest(f'expected {{"{field}": ...}} and nothing else')
    return body[field]


@routes.get("/v1/keyring")
async def list_keys(request: web.Request) -> web.Response:
    """The key ids of the ring, the signing key first."""
    return reply(_view(await _authorized(request)))


@routes.post("/v1/keyring")
async def install_key(request: web.Request) -> web.Response:
    """Install a key: frames signed with it verify from now on."""
    keyring = await _authorized(request)
    value = _only(await read_json(request), "key")
    key = value.encode() if isinstance(value, str) else b""
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InvalidValue(f"key: expected a string of {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes")
    try:
        installed = keyring.install(key)
    except KeyringError as exc:
        raise KeyringConflict(str(exc)) from None
    return reply({"key_id": key_id(key).hex(), "installed": installed, **_view(keyring)})


@routes.put("/v1/keyring/primary")
async def use_key(request: web.Request) -> web.Response:
    """Sign every frame with an installed key from now on."""
    keyring = await _authorized(request)
    ident = _key_id(_only(await read_json(request), "key_id"), "key_id")
    try:
        changed = keyring.use(ident)
    except KeyringError as exc:
        raise KeyringConflict(str(exc)) from None
    return reply({"key_id": ident.hex(), "changed": changed, **_view(keyring)})


@routes.delete("/v1/keyring/{key_id}")
async def remove_key(request: web.Request) -> web.Response:
    """Remove a key: frames signed with it are rejected from now on."""
    keyring = await _authorized(request)
    ident = _key_id(request.match_info["key_id"], "key_id")
    try:
        removed = keyring.remove(ident)
    except KeyringError as exc:
        raise KeyringConflict(str(exc)) from None
    return reply({"key_id": ident.hex(), "removed": removed, **_view(keyring)})


# -- the client: ``likes keys`` --------------------------------------------------------------------

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Answer:
    """One node's answer: the HTTP status and JSON body, or why there was none (status 0)."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200

    def describe(self) -> str:
        error = self.body.get("error")
        if isinstance(error, dict):
            return f"{self.status} {error.get('code')}: {error.get('message')}"
        return f"{self.status} {self.body}"


def call(
    spec: NodeSpec,
    keys: tuple[bytes, ...],
    method: str,
    path: str,
    body: object = None,
    token: str | None = None,
) -> Answer:
    """One signed admin request to one node, trying each of our keys until one is accepted.

    Trying them all lets an operator list the new key first in the cluster file before every node
    has installed it: nodes still on the old ring accept the old key's signature.
    """
    data = b"" if body is None else json.dumps(body).encode()
    answer = Answer(0, {"error": {"code": "no_key", "message": "no key configured"}})
    for key in keys:
        request = urllib.request.Request(spec.url + path, data=data or None, method=method)
        for name, value in admin_headers(key, method, path, data).items():
            request.add_header(name, value)
        if data:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with _DIRECT.open(request, timeout=QUERY_TIMEOUT) as response:
                answer = Answer(response.status, _json(response.read()))
        except urllib.error.HTTPError as exc:
            answer = Answer(exc.code, _json(exc.read()))
        except OSError as exc:
            return Answer(0, {"error": {"code": "unreachable", "message": str(getattr(exc, "reason", exc))}})
        if answer.status != 401:
            return answer
    return answer


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def run_keys_command(
    config: ClusterConfig,
    operation: str,
    *,
    key: bytes | None = None,
    ident: bytes | None = None,
    force: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Apply ``operation`` (list, install, use, remove) to every node of the cluster file, in order.

    ``use`` first checks that every node has the key installed, and ``remove`` that no node signs
    with it, because either mistake cuts the cluster in two; ``force`` skips the check (for a node
    that is down for good). 0 if every node answered and agreed, 1 otherwise.
    """
    ours = config.security.resolve_keys()
    token = next(iter(config.security.resolve_api_tokens()), None)
    if key is not None:
        ident = key_id(key)
    if not force and operation in ("use", "remove"):
        assert ident is not None
        problems = _preflight(config, ours, operation, ident, token)
        if problems:
            for problem in problems:
                print(problem, file=out)
            print(f"likes keys {operation}: nothing changed (--force skips this check)", file=out)
            return 1
    failed = 0
    for spec in config.nodes:
        if operation == "list":
            answer = call(spec, ours, "GET", "/v1/keyring", token=token)
        elif operation == "install":
            assert key is not None
            answer = call(spec, ours, "POST", "/v1/keyring", {"key": key.decode()}, token)
        elif operation == "use":
            assert ident is not None
            answer = call(spec, ours, "PUT", "/v1/keyring/primary", {"key_id": ident.hex()}, token)
        else:
            assert ident is not None
            answer = call(spec, ours, "DELETE", f"/v1/keyring/{ident.hex()}", token=token)
        failed += not answer.ok
        print(f"{spec.name:<8} {_summary(operation, answer)}", file=out)
    return 1 if failed else 0


def _preflight(
    config: ClusterConfig, ours: tuple[bytes, ...], operation: str, ident: bytes, token: str | None
) -> list[str]:
    problems = []
    for spec in config.nodes:
        answer = call(spec, ours, "GET", "/v1/keyring", token=token)
        if not answer.ok:
            problems.append(f"{spec.name}: cannot read its keyring ({answer.describe()})")
        elif operation == "use" and ident.hex() not in answer.body.get("keys", []):
            problems.append(f"{spec.name}: key {ident.hex()} is not installed; install it everywhere first")
        elif operation == "remove" and answer.body.get("primary") == ident.hex():
            problems.append(
                f"{spec.name}: still signs with key {ident.hex()}; use another key everywhere first"
            )
    return problems


def _summary(operation: str, answer: Answer) -> str:
    if not answer.ok:
        return f"FAILED {answer.describe()}"
    body = answer.body
    done = {"install": "installed", "use": "changed", "remove": "removed"}.get(operation)
    note = "" if done is None else ("done " if body.get(done) else "already so ")
    return f"{note}primary={body.get('primary')} keys={','.join(body.get('keys', []))}"
