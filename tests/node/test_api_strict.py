"""Strict bodies on every body-taking route: media type (415), size (413), strict JSON (400), one shape."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from gossip.security import Keyring
from node.http.keyring_api import add_keyring_routes
from tests.node.conftest import TEST_LIMITS, Client, ClientFactory, make_app
from tests.node.test_api import expect_error

#: Every route that reads a JSON body, with a body it accepts.
BODY_ROUTES = [
    ("/v1/items/post/1/counters/views", b'{"delta": 1}'),
    ("/v1/counts", b'{"items": [{"type": "post", "id": 1}]}'),
    ("/v1/batch", b'{"ops": [{"op": "like", "type": "post", "id": 1, "user": 1}]}'),
]
JSON = {"Content-Type": "application/json"}

NOT_STRICT = [
    b'{"delta": 1, "delta": 2}',  # a repeated key: parsers disagree on which wins
    b'{"items": [{"type": "post", "id": 1, "id": 2}]}',
    b'{"ops": [{"op": "like", "op": "unlike", "type": "post", "id": 1, "user": 1}]}',
    b'{"ops": [{"op": "like", "type": "p:st", "type": "post", "id": 1, "user": 1}]}',  # colons in strings
    b'{"ops": [], "op\\u0073": []}',  # the same key spelled with an escape
    b'{"delta": NaN}',
    b'{"delta": Infinity}',
    b'{"delta": 1e400}',
    b'{"delta": 1} trailing',
    b'{"delta": 1}{"delta": 2}',
    b"\xef\xbb\xbf{}",  # a byte order mark
    b'{"a": "\\ud800"}',  # a lone surrogate
    b"{'delta': 1}",
]


@pytest.mark.parametrize(("path", "good"), BODY_ROUTES)
@pytest.mark.parametrize("raw", NOT_STRICT)
async def test_bodies_that_are_not_strict_json_are_400(
    client: Client, path: str, good: bytes, raw: bytes
) -> None:
    await expect_error(client, "POST", path, 400, "malformed", data=raw, headers=JSON)
    assert (await client.post(path, data=good, headers=JSON)).status == 200


async def test_colons_and_escapes_in_strings_without_repeats_are_fine(client: Client) -> None:
    raw = b'{"items": [{"type": "post", "id": "1"}], "\\u0069tems2": 1}'
    await expect_error(client, "POST", "/v1/counts", 422, "invalid", data=raw, headers=JSON)  # unknown field
    raw = b'{"ops": [{"op": "like", "type": "post", "id": "1", "user": "2"}]}'
    assert (
        await client.post("/v1/batch", data=raw.replace(b'"op"', b'"\\u006fp"'), headers=JSON)
    ).status == 200


@pytest.mark.parametrize(("path", "good"), BODY_ROUTES)
async def test_every_body_route_wants_json_and_caps_size(client: Client, path: str, good: bytes) -> None:
    for content_type in ("text/plain", "application/xml", "application/json; charset=latin-1"):
        await expect_error(
            client,
            "POST",
            path,
            415,
            "unsupported_media_type",
            data=good,
            headers={"Content-Type": content_type},
        )
    await expect_error(client, "POST", path, 415, "unsupported_media_type", data=good)
    await expect_error(client, "POST", path, 413, "too_large", data=b" " * 5000 + good, headers=JSON)


async def test_the_keyring_routes_answer_in_the_one_error_shape(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    app = make_app(tmp_path)
    add_keyring_routes(app, Keyring([b"the-cluster-key-0123456789abcdef"]))
    client = await aiohttp_client(app)
    for method, path in (("GET", "/v1/keyring"), ("POST", "/v1/keyring"), ("PUT", "/v1/keyring/primary")):
        await expect_error(client, method, path, 401, "unauthorized", data=b"{}", headers=JSON)
    await expect_error(client, "PATCH", "/v1/keyring", 405, "method_not_allowed")


async def test_429_and_401_use_the_one_error_shape_too(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    # A burst of 5 refilled at 1 per second: the 429 does not depend on how fast a loaded machine
    # sends the next request (at the default 20 per second, a 50 ms stall refilled one token).
    client = await aiohttp_client(
        make_app(tmp_path, dataclasses.replace(TEST_LIMITS, user_rate=1, user_burst=5))
    )
    body = orjson.dumps({"ops": [{"op": "like", "type": "post", "id": i, "user": 5} for i in range(5)]})
    assert (await client.post("/v1/batch", data=body, headers=JSON)).status == 200  # the whole burst
    await expect_error(client, "PUT", "/v1/items/post/99/likes/5", 429, "rate_limited")
