"""Fixtures for the real-browser tests: a 3-node cluster of ``likes node`` processes and Debian's chromium
driven by Playwright's sync API.

The browser is Debian's ``chromium`` (``make install`` and ``make test`` install the package when it is
missing); Playwright's own browser download is never used, since it cannot be fetched here. Locally a
missing browser (or Playwright) skips these tests with the reason; under ``CI=true`` it fails them, so a
green CI run has really driven a browser (``server_unreachable``).

The tests are plain (sync) functions: Playwright's sync API refuses to run inside a running asyncio
loop, and pytest-aiohttp only runs one for ``async def`` tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.checkpoint.conftest import server_unreachable
from tests.node.processes import NodeProcesses

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

#: Where screenshots of a test run go (``save_screenshot``); ignored by git.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
#: Debian's chromium, or the one ``LIKES_TEST_CHROMIUM`` names.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium")
#: Flags for a headless run in a container with no GPU, no sandbox and no network but loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NODES = ("n1", "n2", "n3")


def chromium_path() -> str | None:
    """The chromium executable to drive, or None when none is installed."""
    override = os.environ.get("LIKES_TEST_CHROMIUM")
    for candidate in (override, *CHROMIUM_CANDIDATES) if override else CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless chromium for the module; tests open pages with ``browser.new_page()`` or
    ``browser.new_context()`` and close them (``context`` does it for you)."""
    if sync_playwright is None:
        server_unreachable("playwright is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        server_unreachable("chromium is not installed (make install runs: apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (its own localStorage), closed after the test."""
    opened = browser.new_context(viewport={"width": 1100, "height": 900})
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcesses]:
    """Three ``likes node`` processes n1, n2, n3 on loopback, every member alive; ``.urls[name]``."""
    nodes = NodeProcesses(tmp_path_factory.mktemp("browser-cluster"), NODES)
    try:
        nodes.start_all()
        yield nodes
    finally:
        nodes.stop_all()


def save_screenshot(page: Page, name: str) -> Path:
    """Write the whole page to ``build/screenshots/<name>.png`` and return that path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
