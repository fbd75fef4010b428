"""schemathesis against ``/openapi.json`` of a node served on a real loopback socket.

The node (API, log, keyring routes; no gossip) runs in a thread with its own event loop, so
schemathesis' blocking HTTP client talks to it as to any server. Checks: no 5xx, documented status
codes, content types, headers and bodies. Examples per operation follow the Hypothesis profile
(``ci``: a tenth of its ``max_examples``; ``HYPOTHESIS_PROFILE=dev`` runs ten times as many).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gossip.security import Keyring
from node.http.api import METRICS
from node.http.keyring_api import add_keyring_routes
from tests.node.conftest import free_ports, make_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = max(10, settings.default.max_examples // 10)


class ServedNode:
    """A node app on 127.0.0.1 in a thread; ``stop()`` shuts it down cleanly."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: web.Application | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(data_dir,), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the node did not start")

    def _run(self, data_dir: Path) -> None:
        self._loop.run_until_complete(self._serve(data_dir))

    async def _serve(self, data_dir: Path) -> None:
        self.app = make_app(data_dir)
        add_keyring_routes(self.app, Keyring([b"the-cluster-key-0123456789abcdef"]))
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    served = ServedNode(tmp_path_factory.mktemp("schemathesis"))
    yield served
    served.stop()
    assert served.app is not None
    assert served.app[METRICS].internal_error_count() == 0, "a request was answered 500"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_the_api_keeps_its_contract(node: ServedNode, mode: GenerationMode) -> None:
    """Every operation of the document, valid inputs and then invalid ones: each answer checked."""
    api = schemathesis.openapi.from_url(f"{node.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 16
    sent: dict[int, int] = {}
    ran: list[str] = []

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: Any) -> None:
            response = case.call_and_validate(checks=CHECKS, timeout=10)
            sent[response.status_code] = sent.get(response.status_code, 0) + 1

        try:
            check()
        except Unsatisfiable:  # no parameter and no body: there is no invalid input to make
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        ran.append(operation.label)
    total = sum(sent.values())
    print(f"schemathesis {mode}: {total} requests, {len(ran)} operations, by status {sorted(sent.items())}")
    assert not any(status >= 500 for status in sent)
    assert len(ran) >= (16 if mode is GenerationMode.POSITIVE else 10)
