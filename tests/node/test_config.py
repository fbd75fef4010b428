"""The cluster file: defaults, and every kind of bad file rejected with a ConfigError naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gossip.config import GossipSettings
from node.config import DEVELOPMENT_SECRET, ClusterConfig, load_config
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
nodes:
  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: 9001}
  - {name: n2, host: 127.0.0.1, http_port: 8002, gossip_port: 9002}
security: {secret: 0123456789abcdef}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def test_the_shipped_cluster_file_is_valid() -> None:
    config = load_config(ROOT / "cluster.yaml")
    assert [n.name for n in config.nodes] == ["n1", "n2", "n3"]
    assert {n.host for n in config.nodes} == {"127.0.0.1"}
    assert config.storage.data_dir == ROOT / "data"
    assert config.security.resolve() == b"local-dev-secret-not-for-production"


@pytest.mark.parametrize(
    ("host", "refused"),
    [("10.0.0.2", True), ("db1.example.org", True), ("0.0.0.0", True), ("localhost", False), ("::1", False)],
)
def test_the_development_secret_is_refused_off_loopback(tmp_path: Path, host: str, refused: bool) -> None:
    shipped = (ROOT / "cluster.yaml").read_text()
    assert DEVELOPMENT_SECRET in shipped
    moved = shipped.replace("{name: n2, host: 127.0.0.1,", f"{{name: n2, host: '{host}',")
    assert moved != shipped
    if not refused:
        load_config(write(tmp_path, moved))
        return
    with pytest.raises(ConfigError, match=r"node n2 is on .*security\.secret_env"):
        load_config(write(tmp_path, moved))
    own = moved.replace(DEVELOPMENT_SECRET, "a-secret-of-our-own-0123456789")
    assert load_config(write(tmp_path, own)).node("n2").host == host  # any other secret: fine
    ring = f"keys: [other-key-0123456789, {DEVELOPMENT_SECRET}]"
    as_keys = moved.replace(f"secret: {DEVELOPMENT_SECRET}", ring)
    with pytest.raises(ConfigError, match="development secret"):
        load_config(write(tmp_path, as_keys))


def test_defaults_fill_what_a_minimal_file_leaves_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert isinstance(config, ClusterConfig)
    assert config.gossip == GossipSettings()
    assert config.storage.data_dir == tmp_path / "data"  # relative to the file, not the cwd
    assert config.node_dir("n2") == tmp_path / "data" / "n2"
    assert config.node("n1").url == "http://127.0.0.1:8001"
    assert config.api.max_body_bytes == 1024 * 1024


def test_the_shipped_file_sets_every_gossip_key_to_its_default() -> None:
    config = load_config(ROOT / "cluster.yaml")
    assert config.gossip == GossipSettings()


def test_gossip_timings_are_read_in_milliseconds_into_the_one_gossip_settings_type(tmp_path: Path) -> None:
    text = GOOD + "gossip: {delta_interval_ms: 20, probe_interval_ms: 200, probe_timeout_ms: 80, fanout: 3}\n"
    gossip = load_config(write(tmp_path, text)).gossip
    assert isinstance(gossip, GossipSettings)
    assert (gossip.delta_interval, gossip.probe_interval, gossip.probe_timeout) == (0.02, 0.2, 0.08)
    assert gossip.fanout == 3 and type(gossip.fanout) is int
    assert gossip.suspicion_timeout == GossipSettings().suspicion_timeout  # what the file leaves out
    assert gossip.as_file()["probe_timeout_ms"] == 80


def test_the_secret_can_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("secret: 0123456789abcdef", "secret_env: MY_SECRET"))
    security = load_config(path).security
    assert security.resolve({"MY_SECRET": "x" * 16}) == b"x" * 16
    with pytest.raises(ConfigError, match=r"security\.secret_env.*MY_SECRET is not set"):
        security.resolve({})
    with pytest.raises(ConfigError, match=r"security\.secret_env.*at least 16 bytes"):
        security.resolve({"MY_SECRET": "short"})


NODE = "  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: 9001}\n"
SECRET = "security: {secret: 0123456789abcdef}\n"

BAD_FILES = [
    # (the file, the key the error must name)
    ("nodes: [\n", "not valid YAML"),
    ("- just\n- a list\n", "(top level)"),
    ("", "(top level)"),
    (SECRET, "nodes"),
    ("nodes: []\n" + SECRET, "nodes"),
    ("nodes: {n1: 1}\n" + SECRET, "nodes"),
    ("nodes:\n" + NODE + SECRET + "colour: blue\n", "colour"),
    ("nodes:\n" + NODE + NODE.replace("8001", "8002").replace("9001", "9002") + SECRET, "nodes[1].name"),
    ("nodes:\n" + NODE + NODE.replace("n1", "n2").replace("9001", "9002") + SECRET, "nodes[1].http_port"),
    ("nodes:\n" + NODE + NODE.replace("n1", "n2").replace("8001", "8002") + SECRET, "nodes[1].gossip_port"),
    ("nodes:\n" + NODE.replace("9001", "8001") + SECRET, "nodes[0].gossip_port"),
    ("nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 8001}\n" + SECRET, "nodes[0].gossip_port"),
    ("nodes:\n  - {name: n1, http_port: 8001, gossip_port: 9001}\n" + SECRET, "nodes[0].host"),
    ("nodes:\n" + NODE.replace("8001", '"8001"') + SECRET, "nodes[0].http_port"),
    ("nodes:\n" + NODE.replace("8001", "80.5") + SECRET, "nodes[0].http_port"),
    ("nodes:\n" + NODE.replace("8001", "true") + SECRET, "nodes[0].http_port"),
    ("nodes:\n" + NODE.replace("8001", "70000") + SECRET, "nodes[0].http_port"),
    ("nodes:\n" + NODE.replace("8001", "0") + SECRET, "nodes[0].http_port"),
    ("nodes:\n" + NODE.replace("name: n1", "name: 'n 1'") + SECRET, "nodes[0].name"),
    ("nodes:\n" + NODE.replace("name: n1", "name: 7") + SECRET, "nodes[0].name"),
    ("nodes:\n" + NODE.replace("}", ", weight: 3}") + SECRET, "nodes[0].weight"),
    ("nodes:\n" + NODE + SECRET + "gossip: {fanout: 0}\n", "gossip.fanout"),
    ("nodes:\n" + NODE + SECRET + "gossip: {delta_interval: 5}\n", "gossip.delta_interval"),
    ("nodes:\n" + NODE + SECRET + "gossip: {gossip_to_the_dead: 5}\n", "gossip.gossip_to_the_dead"),
    ("nodes:\n" + NODE + SECRET + "gossip: {delta_interval_ms: 0}\n", "gossip.delta_interval_ms"),
    ("nodes:\n" + NODE + SECRET + "gossip: {delta_interval_ms: 60001}\n", "gossip.delta_interval_ms"),
    ("nodes:\n" + NODE + SECRET + "gossip: {delta_interval_ms: 0.5}\n", "gossip.delta_interval_ms"),
    ("nodes:\n" + NODE + SECRET + "gossip: {probe_interval_ms: '500'}\n", "gossip.probe_interval_ms"),
    ("nodes:\n" + NODE + SECRET + "gossip: {indirect_probes: true}\n", "gossip.indirect_probes"),
    ("nodes:\n" + NODE + SECRET + "gossip: {max_frame_bytes: 1024}\n", "gossip.max_frame_bytes"),
    ("nodes:\n" + NODE + SECRET + "gossip: {probe_timeout_ms: 500}\n", "gossip.probe_timeout_ms"),
    (
        "nodes:\n" + NODE + SECRET + "gossip: {probe_interval_ms: 100, probe_timeout_ms: 100}\n",
        "gossip.probe_timeout_ms",
    ),
    ("nodes:\n" + NODE + SECRET + "gossip: [1]\n", "gossip"),
    ("nodes:\n" + NODE + SECRET + "api: {max_body_bytes: -1}\n", "api.max_body_bytes"),
    (
        "nodes:\n" + NODE + SECRET + "api: {default_page_limit: 500, max_page_limit: 100}\n",
        "api.default_page_limit",
    ),
    ("nodes:\n" + NODE + SECRET + "storage: {data_dir: 5}\n", "storage.data_dir"),
    ("nodes:\n" + NODE + SECRET + "storage: {dir: x}\n", "storage.dir"),
    ("nodes:\n" + NODE + SECRET + "storage: {snapshot_bytes: 1024}\n", "renamed storage.flush_bytes"),
    ("nodes:\n" + NODE + SECRET + "checkpoint: {redis_url: 'http://x:6379'}\n", "checkpoint.redis_url"),
    ("nodes:\n" + NODE + SECRET + "checkpoint: {mysql_url: 'rediss://127.0.0.1'}\n", "checkpoint.mysql_url"),
    ("nodes:\n" + NODE, "security"),
    ("nodes:\n" + NODE + "security: {}\n", "security"),
    ("nodes:\n" + NODE + "security: {secret: 0123456789abcdef, secret_env: X}\n", "security"),
    ("nodes:\n" + NODE + "security: {secret: short}\n", "security.secret"),
    ("nodes:\n" + NODE + "security: {secret_env: 'not a name'}\n", "security.secret_env"),
    ("nodes:\n" + NODE + "security: {secret: 0123456789abcdef, token: x}\n", "security.token"),
    ("nodes:\n" + NODE + SECRET + "api: {}\napi: {}\n", "api: duplicate key"),
]


@pytest.mark.parametrize(("text", "key"), BAD_FILES)
def test_a_bad_file_raises_config_error_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert key in str(caught.value)


def test_a_missing_or_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(binary)


def test_an_unknown_node_name_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="no node named 'n9'"):
        config.node("n9")


def test_the_environment_overrides_any_key_of_a_section(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    environ = {
        "LIKES_API__MAX_BATCH_OPS": "500",
        "LIKES_CHECKPOINT__SQLITE": "false",
        "LIKES_CHECKPOINT__REDIS_PREFIX": "0042",  # text stays text
        "LIKES_GOSSIP__DELTA_INTERVAL_MS": "20",
        "LIKES_STORAGE__DATA_DIR": "2024",
        "LIKES_SECURITY__SECRET": "1234567890123456",
        "LIKES_API_TOKENS": "not read: one underscore",
        "LIKES_SECRET": "not read either",
    }
    config = load_config(path, environ)
    assert config.api.max_batch_ops == 500 and not config.checkpoint.sqlite
    assert config.checkpoint.redis_prefix == "0042"
    assert config.gossip.delta_interval == 0.02
    assert config.storage.data_dir == tmp_path / "2024"
    assert config.security.resolve() == b"1234567890123456"
    assert load_config(path, {}).api.max_batch_ops == 1000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LIKES_NODES__0", "x", "no section 'nodes'"),
        ("LIKES_API__MAX_BATCH", "5", "api has no key 'max_batch'"),
        ("LIKES_GOSSIP__FANOUT", "[1", "not a YAML value"),
        ("LIKES_API__MAX_BATCH_OPS", "0", "api.max_batch_ops"),
    ],
)
def test_a_bad_environment_override_is_a_config_error_naming_it(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, GOOD), {name: value})
