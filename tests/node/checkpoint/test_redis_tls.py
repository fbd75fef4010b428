"""The Redis sink over TLS (``rediss://``), against a real ``redis-server`` this test starts with a
certificate it makes (a CA and a server certificate for 127.0.0.1), on a port of its own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from node.checkpoint import RedisSink
from node.checkpoint.sink import ItemCheckpoint
from node.config import load_config
from node.errors import SinkUnavailable
from node.state.item import ItemKey
from tests.node.checkpoint.conftest import server_unreachable

#: Seconds the server may take to answer, and each openssl step to run.
PATIENCE = 10.0


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=PATIENCE)


def certificates(directory: Path) -> None:
    """ca.pem/ca.key, and server.pem/server.key signed by it for IP 127.0.0.1."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=likes test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "server.pem", cwd=directory)  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server on 127.0.0.1 (its port, the CA file); stopped, by its pid, at the end."""
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        server_unreachable("redis-server or openssl is not installed: no TLS Redis to test against")
    certificates(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem",
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tmp_path / "ca.pem"))
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server_unreachable("redis-server did not start with TLS (built without it?)")
                time.sleep(0.05)
        client.close()
        yield port, tmp_path / "ca.pem"
    finally:
        server.terminate()
        server.wait(timeout=PATIENCE)


async def test_the_redis_sink_writes_over_tls_and_verifies_the_server(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    key = ItemKey("post", 42)
    sink = RedisSink(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", prefix="tls:")
    await sink.open()
    await sink.write([ItemCheckpoint(key, 2, {1: 1_700_000_000_000, 2: 1_700_000_000_000}, (), {}, None)])
    assert await sink.read_item(key) == (2, {1, 2})
    await sink.close()
    # Without the CA that signed it, the server's certificate is refused: no plaintext, no blind trust.
    untrusting = RedisSink(f"rediss://127.0.0.1:{port}/0", prefix="tls:", timeout=2.0)
    with pytest.raises(SinkUnavailable):
        await untrusting.open()
    await untrusting.close()


def test_a_rediss_or_unix_url_is_a_valid_redis_sink(tmp_path: Path) -> None:
    for url in ("rediss://127.0.0.1:6380/0?ssl_ca_certs=/etc/ca.pem", "unix:///run/redis.sock"):
        path = tmp_path / "cluster.yaml"
        path.write_text(
            "nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: 9001}\n"
            "security: {secret: 0123456789abcdef0123}\n"
            f"checkpoint: {{redis_url: '{url}'}}\n"
        )
        assert load_config(path).checkpoint.redis_url == url
