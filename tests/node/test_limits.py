"""Rate limits and bearer tokens: the buckets alone (a fake clock), their configuration, and through HTTP."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gossip.security import Keyring
from node.config import ApiSettings, parse_config
from node.errors import ConfigError
from node.http import writes
from node.http.api import METRICS, STORE
from node.http.keyring_api import add_keyring_routes, admin_headers
from node.http.limits import ApiGuard, RateLimiter
from tests.node.conftest import TEST_LIMITS, Client, ClientFactory, make_app

ITEM = "/v1/items/post/42"
TOKEN = "an-api-token-0123456789"
OTHER = "another-token-0123456789"
CLUSTER_KEY = b"the-cluster-key-0123456789abcdef"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the buckets ---------------------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=5, max_keys=100, clock=clock)
    assert [limiter.take("u") for _ in range(5)] == [0.0] * 5
    wait = limiter.take("u")
    assert wait == pytest.approx(0.1)  # one token comes back every 1/10 s
    assert limiter.take("u") == pytest.approx(0.1), "a refused take must not use up anything"
    assert limiter.take("v") == 0.0, "buckets are per key"
    clock.now += 0.1
    assert limiter.take("u") == 0.0 and limiter.take("u") > 0
    clock.now += 10
    assert [limiter.take("u") for _ in range(5)] == [0.0] * 5, "refills up to the burst, no further"
    assert limiter.take("u") > 0


def test_take_all_is_all_or_none() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=3, max_keys=100, clock=clock)
    assert limiter.take("a", 2) == 0.0
    costs: Counter[Hashable] = Counter({"a": 2, "b": 1})
    assert limiter.take_all(costs) == pytest.approx(1.0)  # a needs one more token
    assert limiter.take("b", 3) == 0.0, "b was not charged by the refused take_all"
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0, "a was not charged either"


def test_idle_buckets_are_forgotten_only_once_full_and_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=5, max_keys=50, clock=clock)
    for _ in range(5):
        limiter.take("hot")
    for step in range(40):  # 0.5 s refill period, 0.05 s steps: many rotations
        clock.now += 0.05
        wait = limiter.take("hot")
        assert wait > 0 or step % 2 == 1, "a busy key keeps its debt across rotations"
    for i in range(10_000):
        limiter.take(i)
        assert len(limiter) <= 2 * 50 + 1
    clock.now += 1.0
    limiter.take("x")
    assert len(limiter) <= 2


def test_the_guard_checks_tokens_by_digest() -> None:
    guard = ApiGuard(
        client_rate=0, client_burst=1, user_rate=0, user_burst=1, max_keys=10, tokens=[TOKEN, OTHER]
    )
    assert guard.authenticate(f"Bearer {TOKEN}") == 0
    assert guard.authenticate(f"bearer  {OTHER} ") == 1
    for bad in (None, TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", "Bearer \udcff"):
        assert guard.authenticate(bad) is None
    assert (
        ApiGuard(client_rate=0, client_burst=1, user_rate=0, user_burst=1, max_keys=10).authenticate(
            f"Bearer {TOKEN}"
        )
        is None
    )


# -- configuration -------------------------------------------------------------------------------------


def config_of(api: dict[str, Any] | None = None, security: dict[str, Any] | None = None) -> Any:
    raw = {
        "nodes": [{"name": "n1", "host": "127.0.0.1", "http_port": 8001, "gossip_port": 9001}],
        "security": {"secret": "a-secret-of-sixteen-bytes", **(security or {})},
        "api": api or {},
    }
    return parse_config(raw, base_dir=Path("/tmp"))


def test_limits_are_on_by_default_and_configurable() -> None:
    api = config_of().api
    assert (api.client_rate, api.client_burst, api.user_rate, api.user_burst) == (100_000, 200_000, 20, 40)
    api = config_of({"user_rate": 0, "client_rate": 5, "client_burst": 10}).api
    assert (api.user_rate, api.client_rate, api.client_burst) == (0, 5, 10)


@pytest.mark.parametrize(
    ("api", "security", "message"),
    [
        ({"user_rate": -1}, {}, "api.user_rate"),
        ({"user_burst": 0}, {}, "api.user_burst"),
        ({"client_rate": 1.5}, {}, "api.client_rate"),
        ({"rate_limit_keys": 1}, {}, "api.rate_limit_keys"),
        ({}, {"api_tokens": "one-token-of-enough-length"}, "security.api_tokens"),
        ({}, {"api_tokens": []}, "security.api_tokens"),
        ({}, {"api_tokens": ["short"]}, "security.api_tokens[0]"),
        ({}, {"api_tokens": ["has a space in it, sadly"]}, "security.api_tokens[0]"),
        ({}, {"api_tokens": [TOKEN, TOKEN]}, "security.api_tokens[1]"),
        ({}, {"api_tokens": [TOKEN], "api_tokens_env": "X"}, "at most one"),
        ({}, {"api_tokens_env": "not a name"}, "security.api_tokens_env"),
    ],
)
def test_bad_limit_and_token_settings_are_refused(
    api: dict[str, Any], security: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_of(api, security)


def test_tokens_come_from_the_file_or_the_environment() -> None:
    assert config_of().security.resolve_api_tokens() == ()
    assert config_of(security={"api_tokens": [TOKEN]}).security.resolve_api_tokens() == (TOKEN,)
    env_config = config_of(security={"api_tokens_env": "LIKES_API_TOKENS"}).security
    assert env_config.resolve_api_tokens({"LIKES_API_TOKENS": f"{TOKEN}, {OTHER}"}) == (TOKEN, OTHER)
    with pytest.raises(ConfigError, match="not set"):
        env_config.resolve_api_tokens({})
    with pytest.raises(ConfigError, match="16-256"):
        env_config.resolve_api_tokens({"LIKES_API_TOKENS": "short"})


def test_the_shipped_cluster_file_sets_every_limit() -> None:
    from node.config import load_config

    shipped = load_config(Path(__file__).resolve().parents[2] / "cluster.yaml").api
    assert shipped.user_rate > 0 and shipped.client_rate > 0
    # bench/ drives one node from one loopback client at 10,000+ likes/s and batches of distinct users
    assert shipped.client_rate >= 10_000 and shipped.client_burst >= shipped.client_rate


# -- through HTTP ----------------------------------------------------------------------------------------


def fingerprint(client: Client) -> tuple[int, str]:
    store = client.app[STORE]
    return len(store), store.fingerprint()


async def guarded_client(
    aiohttp_client: ClientFactory, tmp_path: Path, *, tokens: tuple[str, ...] = (), **limits: int
) -> tuple[Client, FakeClock]:
    """A node whose guard has ``limits`` over the test defaults, ``tokens``, and a clock we move."""
    app = make_app(tmp_path)
    clock = FakeClock()
    settings = {
        "client_rate": 0,
        "client_burst": 1,
        "user_rate": 0,
        "user_burst": 1,
        "max_keys": 1000,
        **limits,
    }
    guard = ApiGuard(**settings, tokens=tokens, clock=clock)  # type: ignore[arg-type]
    app[writes.WRITES] = dataclasses.replace(app[writes.WRITES], guard=guard)
    add_keyring_routes(app, Keyring([CLUSTER_KEY]))
    return await aiohttp_client(app), clock


async def expect_limited(client: Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    before = fingerprint(client)
    response = await client.request(method, path, **kwargs)
    body = orjson.loads(await response.read())
    assert response.status == 429, body
    assert int(response.headers["Retry-After"]) >= 1
    assert response.content_type == "application/json"
    assert body["error"]["code"] == "rate_limited" and body["error"]["message"]
    assert fingerprint(client) == before, "a limited request changed something"
    return body  # type: ignore[no-any-return]


async def test_a_like_storm_by_one_user_is_429_and_changes_nothing(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client, clock = await guarded_client(aiohttp_client, tmp_path, user_rate=2, user_burst=3)
    for item in range(3):
        assert (await client.put(f"/v1/items/post/{item}/likes/7")).status == 200
    await expect_limited(client, "PUT", "/v1/items/post/9/likes/7")
    await expect_limited(client, "DELETE", "/v1/items/post/0/likes/7")
    assert (await client.put("/v1/items/post/9/likes/8")).status == 200, "other users are not affected"
    assert (await client.get("/v1/items/post/0/likes/7")).status == 200, "reads are not charged to the user"
    clock.now += 0.5
    assert (await client.delete("/v1/items/post/0/likes/7")).status == 200
    assert client.app[METRICS].internal_error_count() == 0


async def test_a_batch_is_limited_per_user_all_or_none(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client, _ = await guarded_client(aiohttp_client, tmp_path, user_rate=1, user_burst=2)
    op = {"op": "like", "type": "post", "id": 1}
    assert (
        await client.post("/v1/batch", json={"ops": [{**op, "user": 1}, {**op, "id": 2, "user": 1}]})
    ).status == 200
    # user 2 is fresh, user 1 is empty: nothing of the batch may be applied
    await expect_limited(
        client, "POST", "/v1/batch", json={"ops": [{**op, "user": 2}, {**op, "id": 3, "user": 1}]}
    )
    assert orjson.loads(await (await client.get("/v1/users/2/likes")).read())["items"] == []
    # more ops of one user than a whole bucket could ever pass: 422, not a 429 to retry forever
    response = await client.post("/v1/batch", json={"ops": [{**op, "id": i, "user": 3} for i in range(3)]})
    assert response.status == 422 and "user_burst" in (await response.json())["error"]["message"]
    assert (
        await client.post("/v1/batch", json={"ops": [{**op, "user": 3}, {**op, "user": 4}]})
    ).status == 200


async def test_a_client_is_limited_by_address_or_by_its_token(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client, clock = await guarded_client(
        aiohttp_client, tmp_path, client_rate=1, client_burst=2, tokens=(TOKEN, OTHER)
    )
    assert (await client.get(ITEM)).status == 200
    assert (await client.post("/v1/counts", json={"items": []})).status == 200
    await expect_limited(client, "GET", ITEM)
    # an unknown token does not buy a fresh bucket: still the address's
    await expect_limited(client, "GET", ITEM, headers={"Authorization": "Bearer made-up-token-0123456789"})
    for token in (TOKEN, OTHER):  # each valid token is a client of its own
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.put(f"{ITEM}/likes/1", headers=auth)).status == 200
        assert (await client.get(ITEM, headers=auth)).status == 200
        await expect_limited(client, "PUT", f"{ITEM}/likes/2", headers=auth)
    clock.now += 1
    assert (await client.get(ITEM)).status == 200


async def test_zero_disables_a_limit(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client, _ = await guarded_client(aiohttp_client, tmp_path)
    for i in range(100):
        assert (await client.put(f"/v1/items/post/{i}/likes/1")).status == 200


async def test_default_limits_let_a_test_client_through(client: Client) -> None:
    """The defaults (the fixture's app uses them) do not get in the way of ordinary use."""
    ops = [{"op": "like", "type": "post", "id": 1, "user": u} for u in range(5)]
    for _ in range(30):
        assert (await client.post("/v1/batch", json={"ops": ops})).status == 200
    assert TEST_LIMITS.user_rate == ApiSettings().user_rate == 20


# -- bearer tokens -----------------------------------------------------------------------------------------

WRITES = [
    ("PUT", f"{ITEM}/likes/1", None),
    ("DELETE", f"{ITEM}/likes/1", None),
    ("POST", f"{ITEM}/counters/views", {"delta": 1}),
    ("POST", "/v1/batch", {"ops": [{"op": "like", "type": "post", "id": 1, "user": 1}]}),
]
ADMIN = [
    ("GET", "/v1/keyring", None),
    ("POST", "/v1/keyring", {"key": "k" * 32}),
    ("DELETE", "/v1/keyring/00112233", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES + ADMIN)
async def test_with_tokens_writes_and_admin_routes_need_one(
    aiohttp_client: ClientFactory, tmp_path: Path, method: str, path: str, body: Any
) -> None:
    client, _ = await guarded_client(aiohttp_client, tmp_path, tokens=(TOKEN,))
    raw = b"" if body is None else orjson.dumps(body)
    json_type = {} if body is None else {"Content-Type": "application/json"}
    before = fingerprint(client)
    for auth, invalid in (
        ({}, False),
        ({"Authorization": f"Bearer {OTHER}"}, True),
        ({"Authorization": TOKEN}, True),
    ):
        response = await client.request(method, path, data=raw, headers={**json_type, **auth})
        answer = await response.json()
        assert response.status == 401 and answer["error"]["code"] == "unauthorized", answer
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and ("invalid_token" in challenge) == invalid
    assert fingerprint(client) == before
    bearer = {**json_type, "Authorization": f"Bearer {TOKEN}"}
    response = await client.request(method, path, data=raw, headers=bearer)
    if path.startswith("/v1/keyring"):
        assert response.status == 401 and "WWW-Authenticate" not in response.headers  # now the signature
        signed = admin_headers(CLUSTER_KEY, method, path, raw)
        response = await client.request(method, path, data=raw, headers={**bearer, **signed})
    assert response.status == 200, await response.text()


async def test_with_tokens_reads_stay_open(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client, _ = await guarded_client(aiohttp_client, tmp_path, tokens=(TOKEN,))
    for path in (
        ITEM,
        f"{ITEM}/likes/1",
        f"{ITEM}/likes",
        "/v1/users/1/likes",
        "/v1/cluster",
        "/healthz",
        "/openapi.json",
    ):
        assert (
            await client.get(path, headers={"Authorization": "Bearer wrong-but-harmless-000"})
        ).status == 200
    assert (await client.post("/v1/counts", json={"items": []})).status == 200
    assert (await client.get("/v1/nothing")).status == 404, "an unknown route is 404, not 401"


async def test_without_tokens_writes_are_open_and_admin_routes_still_need_a_signature(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client, _ = await guarded_client(aiohttp_client, tmp_path)
    assert (await client.put(f"{ITEM}/likes/1")).status == 200
    response = await client.get("/v1/keyring")
    assert response.status == 401 and (await response.json())["error"]["code"] == "unauthorized"
