"""The HTTP API of one node through aiohttp's test client: every endpoint, and every kind of bad input."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from node.http.api import DURABILITY, METRICS, STORE
from node.state.item import ItemKey
from node.state.store import LikeStore
from tests.node.conftest import Client, ClientFactory, make_app

ITEM = "/v1/items/post/42"


async def call(client: Client, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
    """Make a request, check its status, return its JSON body."""
    response = await client.request(method, path, **kwargs)
    body = await response.read()
    assert response.status == status, body
    assert response.content_type == "application/json"
    return orjson.loads(body)


def fingerprint(client: Client) -> tuple[int, str]:
    store = client.app[STORE]
    return len(store), store.fingerprint()


async def expect_error(client: Client, method: str, path: str, status: int, code: str, **kwargs: Any) -> None:
    """The request is rejected with the JSON error shape and changes nothing."""
    before = fingerprint(client)
    body = await call(client, method, path, status, **kwargs)
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert fingerprint(client) == before


# -- likes -------------------------------------------------------------------------------------------


async def test_like_unlike_and_read_back(client: Client) -> None:
    assert await call(client, "PUT", f"{ITEM}/likes/7") == {"liked": True, "changed": True, "count": 1}
    assert await call(client, "PUT", f"{ITEM}/likes/7") == {"liked": True, "changed": False, "count": 1}
    assert await call(client, "PUT", f"{ITEM}/likes/8") == {"liked": True, "changed": True, "count": 2}
    assert await call(client, "GET", f"{ITEM}/likes/7") == {"liked": True}
    assert await call(client, "DELETE", f"{ITEM}/likes/7") == {"liked": False, "changed": True, "count": 1}
    assert await call(client, "DELETE", f"{ITEM}/likes/7") == {"liked": False, "changed": False, "count": 1}
    assert await call(client, "GET", f"{ITEM}/likes/7") == {"liked": False}


async def test_the_largest_ids_are_accepted(client: Client) -> None:
    top = 2**64 - 1
    await call(client, "PUT", f"/v1/items/a/{top}/likes/{top}")
    assert await call(client, "GET", f"/v1/users/{top}/likes") == {
        "user": top,
        "items": [{"type": "a", "id": top}],
        "next": None,
    }
    assert (await call(client, "GET", "/v1/items/a/0018446744073709551615"))["count"] == 1  # leading zeros


async def test_item_shows_count_and_counters(client: Client) -> None:
    assert await call(client, "GET", ITEM) == {"type": "post", "id": 42, "count": 0, "counters": {}}
    await call(client, "PUT", f"{ITEM}/likes/1")
    assert await call(client, "POST", f"{ITEM}/counters/views", json={"delta": 5}) == {"value": 5}
    assert await call(client, "POST", f"{ITEM}/counters/views", json={"delta": -2}) == {"value": 3}
    assert await call(client, "POST", f"{ITEM}/counters/views", json={"delta": 0}) == {"value": 3}
    assert await call(client, "GET", ITEM) == {"type": "post", "id": 42, "count": 1, "counters": {"views": 3}}


async def test_likers_are_paginated_in_user_order(client: Client) -> None:
    for user in (5, 3, 9, 1, 7):
        await call(client, "PUT", f"{ITEM}/likes/{user}")
    page = await call(client, "GET", f"{ITEM}/likes?limit=2")
    assert page == {"type": "post", "id": 42, "count": 5, "likers": [1, 3], "next": "3"}
    page = await call(client, "GET", f"{ITEM}/likes?limit=2&after={page['next']}")
    assert page["likers"] == [5, 7] and page["next"] == "7"
    page = await call(client, "GET", f"{ITEM}/likes?limit=2&after=7")
    assert page["likers"] == [9] and page["next"] is None
    assert (await call(client, "GET", f"{ITEM}/likes"))["likers"] == [1, 3, 5, 7, 9]
    assert (await call(client, "GET", "/v1/items/post/1/likes"))["likers"] == []


async def test_my_likes_are_paginated_and_follow_unlikes(client: Client) -> None:
    for path in ("/v1/items/post/2", "/v1/items/photo/9", "/v1/items/post/1"):
        await call(client, "PUT", f"{path}/likes/77")
    page = await call(client, "GET", "/v1/users/77/likes?limit=2")
    assert page["items"] == [{"type": "photo", "id": 9}, {"type": "post", "id": 1}]
    assert page["next"] == "post:1"
    page = await call(client, "GET", "/v1/users/77/likes?after=post:1")
    assert page == {"user": 77, "items": [{"type": "post", "id": 2}], "next": None}
    await call(client, "DELETE", "/v1/items/photo/9/likes/77")
    assert len((await call(client, "GET", "/v1/users/77/likes"))["items"]) == 2
    assert (await call(client, "GET", "/v1/users/78/likes"))["items"] == []


async def test_counts_of_many_items_in_order(client: Client) -> None:
    await call(client, "PUT", f"{ITEM}/likes/1")
    await call(client, "PUT", f"{ITEM}/likes/2")
    await call(client, "PUT", "/v1/items/photo/1/likes/1")
    items = [{"type": "post", "id": 42}, {"type": "nothing", "id": 1}, {"type": "photo", "id": "1"}]
    assert await call(client, "POST", "/v1/counts", json={"items": items}) == {"counts": [2, 0, 1]}
    assert await call(client, "POST", "/v1/counts", json={"items": []}) == {"counts": []}


async def test_whether_a_user_likes_many_items_in_order(client: Client) -> None:
    await call(client, "PUT", f"{ITEM}/likes/1")
    await call(client, "PUT", "/v1/items/photo/1/likes/1")
    await call(client, "PUT", "/v1/items/photo/1/likes/2")
    items = [{"type": "post", "id": 42}, {"type": "nothing", "id": 1}, {"type": "photo", "id": "1"}]
    answer = await call(client, "POST", "/v1/users/1/liked", json={"items": items})
    assert answer == {"user": 1, "liked": [True, False, True]}
    answer = await call(client, "POST", "/v1/users/2/liked", json={"items": items})
    assert answer == {"user": 2, "liked": [False, False, True]}
    assert await call(client, "POST", "/v1/users/3/liked", json={"items": []}) == {"user": 3, "liked": []}


async def test_batch_applies_in_order_with_one_result_per_op(client: Client) -> None:
    ops = [
        {"op": "like", "type": "post", "id": 42, "user": 1},
        {"op": "like", "type": "post", "id": 42, "user": 1},
        {"op": "like", "type": "post", "id": "42", "user": "2"},
        {"op": "unlike", "type": "post", "id": 42, "user": 1},
        {"op": "unlike", "type": "photo", "id": 1, "user": 1},
    ]
    body = await call(client, "POST", "/v1/batch", json={"ops": ops})
    assert body["results"] == [
        {"liked": True, "changed": True, "count": 1},
        {"liked": True, "changed": False, "count": 1},
        {"liked": True, "changed": True, "count": 2},
        {"liked": False, "changed": True, "count": 1},
        {"liked": False, "changed": False, "count": 0},
    ]


async def test_a_batch_with_one_bad_op_applies_nothing(client: Client) -> None:
    ops = [
        {"op": "like", "type": "post", "id": 42, "user": 1},
        {"op": "like", "type": "post", "id": 42, "user": -1},
    ]
    await expect_error(client, "POST", "/v1/batch", 422, "invalid", json={"ops": ops})
    assert (await call(client, "GET", ITEM))["count"] == 0


async def test_a_batch_at_a_write_level_ships_its_deltas_and_the_states_of_unchanged_items(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    app = make_app(tmp_path)
    durability = app[DURABILITY]
    shipped: list[list[tuple[bytes, bytes]]] = []

    async def replicate(items: Sequence[tuple[bytes, bytes]], copies: int, timeout: float) -> int:
        shipped.append(list(items))
        return copies

    durability._replicate, durability._cluster_size = replicate, 3
    client = await aiohttp_client(app)
    await call(client, "PUT", "/v1/items/photo/1/likes/2")
    ops = [
        {"op": "like", "type": "post", "id": 42, "user": 1},
        {"op": "like", "type": "post", "id": 42, "user": 1},
        {"op": "like", "type": "photo", "id": 1, "user": 2},  # already liked: its state goes instead
        {"op": "unlike", "type": "photo", "id": 9, "user": 2},  # never heard of: nothing to ship
    ]
    body = await call(client, "POST", "/v1/batch?w=majority", json={"ops": ops})
    assert [r["changed"] for r in body["results"]] == [True, False, False, False]
    [items] = shipped
    post, photo = ItemKey("post", 42).to_bytes(), ItemKey("photo", 1).to_bytes()
    assert [key for key, _ in items] == [post, photo]
    assert items[1][1] == app[STORE].state(photo)


async def test_cluster_health_and_metrics(client: Client) -> None:
    await call(client, "PUT", f"{ITEM}/likes/1")
    cluster = await call(client, "GET", "/v1/cluster")
    assert cluster["node"]["name"] == "n1" and cluster["node"]["writer"].startswith("n1-")
    assert cluster["members"] == [
        {"name": "n1", "address": "127.0.0.1:9001", "state": "alive", "incarnation": 0}
    ]
    assert cluster["items"] == 1 and len(cluster["fingerprint"]) == 32
    assert cluster["gossip"] == {"frames_sent": 0}
    assert await call(client, "GET", "/healthz") == {"status": "ok", "node": "n1"}
    batch = {"ops": [{"op": "like", "type": "post", "id": 42, "user": u} for u in (1, 2, 3)]}
    await call(client, "POST", "/v1/batch", json=batch)
    assert cluster["wal"]["records"] == 1 and cluster["wal"]["fsync"] == "always"
    metrics = await client.get("/metrics")
    text = await metrics.text()
    assert metrics.status == 200 and "likes_items 1.0" in text and "likes_gossip_frames_sent" in text
    assert 'likes_writes_total{kind="like"} 3.0' in text  # user 1 once, then 2 and 3 from the batch
    route = 'method="PUT",route="/v1/items/{type}/{id}/likes/{user}",status="200"'
    assert f"likes_http_requests_total{{{route}}} 1.0" in text
    page = await client.get("/")
    assert page.status == 200 and "like" in await page.text()


# -- bad input ---------------------------------------------------------------------------------------

BAD_IDS = [
    "-1",
    "18446744073709551616",
    "99999999999999999999999",
    "+1",
    "1.0",
    "1e3",
    "abc",
    " 1",
    "0x1",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() says yes
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_in_paths_are_422(client: Client, bad: str) -> None:
    await expect_error(client, "PUT", f"/v1/items/post/{bad}/likes/1", 422, "invalid")
    await expect_error(client, "PUT", f"/v1/items/post/1/likes/{bad}", 422, "invalid")
    await expect_error(client, "GET", f"/v1/items/post/{bad}", 422, "invalid")
    await expect_error(client, "GET", f"/v1/users/{bad}/likes", 422, "invalid")


@pytest.mark.parametrize("bad", ["Post", "1post", "_x", "a" * 21, "po-st", "pöst", "post%20x"])
async def test_bad_content_types_and_counter_names_are_422(client: Client, bad: str) -> None:
    await expect_error(client, "PUT", f"/v1/items/{bad}/1/likes/1", 422, "invalid")
    await expect_error(client, "POST", f"{ITEM}/counters/{bad}", 422, "invalid", json={"delta": 1})


@pytest.mark.parametrize(
    "body",
    [
        {"ops": [{"op": "like", "type": "post", "id": 2**64, "user": 1}]},
        {"ops": [{"op": "like", "type": "post", "id": -1, "user": 1}]},
        {"ops": [{"op": "like", "type": "post", "id": 1.5, "user": 1}]},
        {"ops": [{"op": "like", "type": "post", "id": True, "user": 1}]},
        {"ops": [{"op": "like", "type": "post", "id": "+1", "user": 1}]},
        {"ops": [{"op": "like", "type": "Post", "id": 1, "user": 1}]},
        {"ops": [{"op": "like", "type": 5, "id": 1, "user": 1}]},
        {"ops": [{"op": "love", "type": "post", "id": 1, "user": 1}]},
        {"ops": [{"op": "like", "type": "post", "id": 1, "user": 1, "extra": 1}]},
        {"ops": [{"op": "like", "type": "post", "id": 1, "user": 1}] * 6},
        {"ops": [], "more": 1},
    ],
)
async def test_bad_batch_values_are_422(client: Client, body: Any) -> None:
    await expect_error(client, "POST", "/v1/batch", 422, "invalid", json=body)


@pytest.mark.parametrize(
    "body",
    [[], {"ops": {}}, {"ops": [1]}, {"ops": [{"op": "like", "type": "post", "id": 1}]}, {}, "ops", None],
)
async def test_batch_bodies_of_the_wrong_shape_are_400(client: Client, body: Any) -> None:
    headers = {"Content-Type": "application/json"}
    await expect_error(
        client, "POST", "/v1/batch", 400, "malformed", data=orjson.dumps(body), headers=headers
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"items": [{"type": "post", "id": -5}]}, 422),
        ({"items": [{"type": "post"}]}, 400),
        ({"items": [{"type": "post", "id": 1}] * 6}, 422),
        ({"items": "post"}, 400),
    ],
)
async def test_bad_counts_requests_are_rejected(client: Client, body: Any, status: int) -> None:
    code = "invalid" if status == 422 else "malformed"
    await expect_error(client, "POST", "/v1/counts", status, code, json=body)
    await expect_error(client, "POST", "/v1/users/1/liked", status, code, json=body)
    assert await call(client, "GET", "/v1/users/1/likes") == {"user": 1, "items": [], "next": None}


async def test_a_bad_user_in_a_bulk_liked_request_is_invalid(client: Client) -> None:
    body = {"items": [{"type": "post", "id": 1}]}
    await expect_error(client, "POST", f"/v1/users/{2**64}/liked", 422, "invalid", json=body)
    await expect_error(client, "POST", "/v1/users/x/liked", 422, "invalid", json=body)


@pytest.mark.parametrize(
    ("body", "status"),
    [({"delta": 1001}, 422), ({"delta": 1.0}, 422), ({"delta": "1"}, 422), ({"delta": True}, 422), ({}, 400)],
)
async def test_bad_counter_deltas_are_rejected(client: Client, body: Any, status: int) -> None:
    await expect_error(
        client,
        "POST",
        f"{ITEM}/counters/views",
        status,
        "invalid" if status == 422 else "malformed",
        json=body,
    )


async def test_an_item_holds_at_most_the_configured_counters(client: Client) -> None:
    for name in ("a", "b", "c"):
        await call(client, "POST", f"{ITEM}/counters/{name}", json={"delta": 1})
    await expect_error(client, "POST", f"{ITEM}/counters/d", 422, "invalid", json={"delta": 1})


@pytest.mark.parametrize(
    "raw", [b"{", b"", b"\xff\xfe", b"{'ops': []}", b"[" * 2000, b'{"ops": [1,]}', b"NaN"]
)
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    await expect_error(client, "POST", "/v1/batch", 400, "malformed", data=raw, headers=headers)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None],
)
async def test_bodies_must_be_json(client: Client, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = orjson.dumps({"ops": [{"op": "like", "type": "post", "id": 1, "user": 1}]})
    await expect_error(client, "POST", "/v1/batch", 415, "unsupported_media_type", data=body, headers=headers)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/json; charset=UTF-8", "Application/JSON"]
)
async def test_json_in_utf8_is_accepted_however_it_is_spelled(client: Client, content_type: str) -> None:
    headers = {"Content-Type": content_type}
    assert await call(client, "POST", "/v1/counts", data=b'{"items": []}', headers=headers) == {"counts": []}


async def test_oversized_bodies_are_413(client: Client) -> None:
    ops = [{"op": "like", "type": "post", "id": 1, "user": i} for i in range(300)]
    await expect_error(client, "POST", "/v1/batch", 413, "too_large", json={"ops": ops})

    async def chunks() -> Any:  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b" " * 1000

    headers = {"Content-Type": "application/json"}
    await expect_error(client, "POST", "/v1/counts", 413, "too_large", data=chunks(), headers=headers)


async def test_unknown_routes_are_404_and_wrong_methods_405(client: Client) -> None:
    await expect_error(client, "GET", "/v1/nothing", 404, "not_found")
    await expect_error(client, "GET", f"{ITEM}/likes/1/extra", 404, "not_found")
    await expect_error(client, "POST", f"{ITEM}/likes/1", 405, "method_not_allowed")
    response = await client.request("PATCH", ITEM)
    assert response.status == 405 and "GET" in response.headers["Allow"]


@pytest.mark.parametrize("query", ["limit=0", "limit=51", "limit=-1", "limit=x", "after=-1", "after=2e3"])
async def test_bad_paging_parameters_are_422(client: Client, query: str) -> None:
    await expect_error(client, "GET", f"{ITEM}/likes?{query}", 422, "invalid")


@pytest.mark.parametrize("after", ["post", "post:", ":1", "Post:1", "post:-1", "post:18446744073709551616"])
async def test_bad_item_cursors_are_422(client: Client, after: str) -> None:
    await expect_error(client, "GET", f"/v1/users/1/likes?after={after}", 422, "invalid")


async def test_no_random_request_gets_a_500(client: Client) -> None:
    """A bounded fuzz over paths, methods and bodies: every answer is a JSON 2xx or 4xx."""
    rng = random.Random(20240601)
    segments = [
        "v1",
        "items",
        "users",
        "likes",
        "counters",
        "post",
        "42",
        "-1",
        "",
        "%00",
        "..",
        "1" * 30,
        "a b",
    ]
    bodies: list[bytes] = [
        b"",
        b"{}",
        b"[]",
        b"null",
        b'{"ops": null}',
        b'{"items": [{}]}',
        b'{"delta": 1e400}',
    ]
    for _ in range(300):
        path = "/v1/" + "/".join(rng.choice(segments) for _ in range(rng.randint(0, 7)))
        method = rng.choice(["GET", "PUT", "POST", "DELETE", "PATCH"])
        response = await client.request(
            method, path, data=rng.choice(bodies), headers={"Content-Type": "application/json"}
        )
        await response.read()
        assert response.status < 500, (method, path)


async def test_an_unexpected_failure_is_a_counted_json_500(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = make_app(tmp_path)

    def broken(self: LikeStore, key: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(LikeStore, "count", broken)
    client = await aiohttp_client(app)
    body = await call(client, "GET", ITEM, 500)
    assert body["error"]["code"] == "internal" and "a bug" not in body["error"]["message"]
    assert app[METRICS].internal_error_count() == 1
