"""The OpenAPI document names exactly the routes the node serves, and every error the one shape."""

from __future__ import annotations

from pathlib import Path

from gossip.security import Keyring
from node.http.api import create_app  # noqa: F401  (the routes table the app registers)
from node.http.keyring_api import add_keyring_routes
from node.http.openapi import document
from tests.node.conftest import Client, make_app

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def served_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route a whole node registers (HEAD is aiohttp's echo of GET)."""
    app = make_app(tmp_path)
    add_keyring_routes(app, Keyring([b"the-cluster-key-0123456789abcdef"]))
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def test_every_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    documented = {
        (method, path)
        for path, operations in document()["paths"].items()
        for method in operations
        if method in METHODS
    }
    served = served_routes(tmp_path)
    assert served - documented == set(), "routes missing from node/http/openapi.py"
    assert documented - served == set(), "node/http/openapi.py documents routes nobody serves"


def test_every_operation_documents_429_and_its_errors_in_the_one_shape() -> None:
    doc = document()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "200" in responses and "429" in responses, (method, path)
            for status, response in responses.items():
                if status != "200":
                    name = response["$ref"].rsplit("/", 1)[1]
                    schema = doc["components"]["responses"][name]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= set(responses), (method, path)
            if method in {"put", "delete"} or path in {"/v1/batch", "/v1/items/{type}/{id}/counters/{name}"}:
                requirements = operation["security"]
                assert "401" in responses and any("bearer" in r for r in requirements), (method, path)
    assert doc["components"]["responses"]["RateLimited"]["headers"]["Retry-After"]["required"] is True


async def test_the_document_is_served(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.json() == document()
