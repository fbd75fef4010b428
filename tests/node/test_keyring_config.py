"""The keyring in the cluster file: one key or several, inline or from the environment, checked strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossip.security import key_id
from node.config import ClusterConfig, load_config
from node.errors import ConfigError
from node.process.server import gossip_config

NODES = "nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: 9001}\n"
NEW, OLD = "new-key-0123456789abcdef", "old-key-0123456789abcdef"


def load_config_text(tmp_path: Path, security: str) -> ClusterConfig:
    path = tmp_path / "cluster.yaml"
    path.write_text(NODES + security)
    return load_config(path)


def test_a_list_of_keys_is_a_keyring_signing_with_the_first(tmp_path: Path) -> None:
    config = load_config_text(tmp_path, f"security: {{keys: [{NEW}, {OLD}]}}\n")
    assert config.security.resolve_keys() == (NEW.encode(), OLD.encode())
    assert config.security.resolve() == NEW.encode()
    assert gossip_config(config, config.nodes[0], config.security.resolve_keys()).keyring == (
        NEW.encode(),
        OLD.encode(),
    )


def test_keys_can_come_from_one_environment_variable(tmp_path: Path) -> None:
    security = load_config_text(tmp_path, "security: {keys_env: LIKES_KEYS}\n").security
    assert security.resolve_keys({"LIKES_KEYS": f" {NEW} , {OLD}"}) == (NEW.encode(), OLD.encode())
    with pytest.raises(ConfigError, match=r"security\.keys_env: environment variable LIKES_KEYS is not set"):
        security.resolve_keys({})
    with pytest.raises(
        ConfigError, match=r"security\.keys_env \(LIKES_KEYS\)\[1\]: a key must be at least 16"
    ):
        security.resolve_keys({"LIKES_KEYS": f"{NEW},short"})
    with pytest.raises(ConfigError, match=r"\[1\]: the same key is listed twice"):
        security.resolve_keys({"LIKES_KEYS": f"{NEW},{NEW}"})


def test_one_secret_is_still_a_keyring_of_one(tmp_path: Path) -> None:
    config = load_config_text(tmp_path, f"security: {{secret: {OLD}}}\n")
    assert config.security.resolve_keys() == (OLD.encode(),)
    assert key_id(config.security.resolve()) == key_id(OLD.encode())


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (f"security: {{keys: [{NEW}], secret: {OLD}}}\n", r"exactly one .*found secret, keys"),
        (f"security: {{keys: [{NEW}], keys_env: X}}\n", r"exactly one"),
        ("security: {keys: []}\n", r"security\.keys: list at least one key"),
        (f"security: {{keys: {NEW}}}\n", r"security\.keys: expected a list of strings"),
        (
            f"security: {{keys: [{NEW}, 12345678901234567890]}}\n",
            r"security\.keys: expected a list of strings",
        ),
        (f"security: {{keys: [{NEW}, short]}}\n", r"security\.keys\[1\]: a key must be at least 16 bytes"),
        (f"security: {{keys: [{NEW}, {NEW}]}}\n", r"security\.keys\[1\]: the same key is listed twice"),
        (
            "security: {keys_env: 'not a name'}\n",
            r"security\.keys_env: expected an environment variable name",
        ),
        ("security: {}\n", r"exactly one .*found none"),
    ],
)
def test_a_bad_keyring_is_refused_naming_the_key(tmp_path: Path, security: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(tmp_path, security).security.resolve_keys({})
