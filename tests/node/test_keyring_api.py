"""The keyring admin routes: only a holder of a current key may change the ring, and no key leaks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gossip.security import Keyring, key_id
from node.http.api import METRICS
from node.http.keyring_api import ADMIN_WINDOW, add_keyring_routes, admin_headers
from node.process.cli import main
from tests.node.conftest import Client, ClientFactory, make_app

OLD = b"the-old-cluster-key-0123456789ab"
NEW = b"the-new-cluster-key-0123456789ab"
STRANGER = b"somebody-elses-key-0123456789abc"


@pytest.fixture
async def admin(aiohttp_client: ClientFactory, tmp_path: Path) -> AsyncIterator[tuple[Client, Keyring]]:
    app = make_app(tmp_path)
    keyring = Keyring([OLD])
    add_keyring_routes(app, keyring)
    yield await aiohttp_client(app), keyring
    assert app[METRICS].internal_error_count() == 0, "a request was answered 500"


async def send(
    client: Client,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: bytes | None = OLD,
    now: float | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = b"" if body is None else orjson.dumps(body)
    headers = {} if key is None else admin_headers(key, method, path, data, now)
    if body is not None:
        headers["Content-Type"] = "application/json"
    response = await client.request(method, path, data=data or None, headers=headers)
    return response.status, await response.json(), headers


async def test_rotation_through_the_routes_never_shows_a_key(admin: tuple[Client, Keyring]) -> None:
    client, keyring = admin
    old, new = key_id(OLD).hex(), key_id(NEW).hex()
    status, body, _ = await send(client, "GET", "/v1/keyring")
    assert (status, body) == (200, {"primary": old, "keys": [old]})

    status, body, _ = await send(client, "POST", "/v1/keyring", {"key": NEW.decode()})
    assert (status, body) == (200, {"key_id": new, "installed": True, "primary": old, "keys": [old, new]})
    status, body, _ = await send(client, "POST", "/v1/keyring", {"key": NEW.decode()})
    assert (status, body["installed"]) == (200, False)

    status, body, _ = await send(client, "PUT", "/v1/keyring/primary", {"key_id": new})
    assert (status, body["changed"], body["primary"]) == (200, True, new)
    assert keyring.primary_id == key_id(NEW)

    status, body, _ = await send(client, "DELETE", f"/v1/keyring/{old}", key=NEW)
    assert (status, body) == (200, {"key_id": old, "removed": True, "primary": new, "keys": [new]})
    status, body, _ = await send(client, "DELETE", f"/v1/keyring/{old}", key=NEW)
    assert (status, body["removed"]) == (200, False)
    assert keyring.ids() == [key_id(NEW)]


async def test_changes_that_would_break_the_ring_are_refused(admin: tuple[Client, Keyring]) -> None:
    client, keyring = admin
    old, stranger = key_id(OLD).hex(), key_id(STRANGER).hex()
    cases = [
        ("DELETE", f"/v1/keyring/{old}", None, 409),  # the primary
        ("PUT", "/v1/keyring/primary", {"key_id": stranger}, 409),  # not installed
        ("PUT", "/v1/keyring/primary", {"key_id": "xyz"}, 422),
        ("DELETE", "/v1/keyring/0011", None, 422),
        ("POST", "/v1/keyring", {"key": "too-short"}, 422),
        ("POST", "/v1/keyring", {"key": 12345678901234567890}, 422),
        ("POST", "/v1/keyring", {"key": NEW.decode(), "extra": 1}, 400),
        ("POST", "/v1/keyring", [NEW.decode()], 400),
    ]
    for method, path, body, expected in cases:
        status, answer, _ = await send(client, method, path, body)
        assert status == expected, (method, path, body, answer)
        assert set(answer) == {"error"}
    assert keyring.ids() == [key_id(OLD)]


@pytest.mark.parametrize(
    "how",
    ["unsigned", "stranger's key", "stale", "from the future", "tampered body", "other path", "replayed"],
)
async def test_an_unauthenticated_change_is_refused_and_changes_nothing(
    admin: tuple[Client, Keyring], how: str
) -> None:
    client, keyring = admin
    body = orjson.dumps({"key": STRANGER.decode()})
    path = "/v1/keyring"
    key: bytes | None = OLD
    now = time.time()
    signed_body, signed_path = body, path
    if how == "unsigned":
        key = None
    elif how == "stranger's key":
        key = STRANGER
    elif how == "stale":
        now -= ADMIN_WINDOW + 5
    elif how == "from the future":
        now += ADMIN_WINDOW + 5
    elif how == "tampered body":
        signed_body = orjson.dumps({"key": NEW.decode()})
    elif how == "other path":
        signed_path = "/v1/keyring/primary"
    headers = {} if key is None else admin_headers(key, "POST", signed_path, signed_body, now)
    headers["Content-Type"] = "application/json"
    if how == "replayed":
        first = await client.post(path, data=body, headers=headers)
        assert first.status == 200
        keyring.remove(key_id(STRANGER))  # undo, then try the very same request again
    response = await client.post(path, data=body, headers=headers)
    assert response.status == 401, await response.text()
    assert (await response.json())["error"]["code"] == "unauthorized"
    assert keyring.ids() == [key_id(OLD)]


async def test_listing_needs_a_signature_too(admin: tuple[Client, Keyring]) -> None:
    client, _ = admin
    status, _, _ = await send(client, "GET", "/v1/keyring", key=None)
    assert status == 401


def test_the_cli_refuses_a_missing_key_without_touching_any_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 1, gossip_port: 2}\n"
        "security: {secret: 0123456789abcdef}\n"
    )
    assert main(["keys", "install", "--config", str(config), "--key-env", "LIKES_NO_SUCH_VAR"]) == 2
    assert "LIKES_NO_SUCH_VAR is not set" in capsys.readouterr().err
    assert main(["keys", "use", "--config", str(config)]) == 2
    assert main(["keys", "remove", "--config", str(config), "--key-id", "abc"]) == 2
    assert main(["keys", "install", "--config", str(config), "--key-id", key_id(NEW).hex()]) == 2
