"""The configuration refuses settings that would make gossip misbehave silently."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gossip import GossipConfig, Peer
from gossip.security import Keyring
from tests.gossip.conftest import KEY


def test_the_local_preset_is_faster_than_the_defaults() -> None:
    default = GossipConfig("n1", keyring=(KEY,))
    local = GossipConfig.local("n1", keyring=(KEY,), seeds=(Peer("n2", "127.0.0.1", 7002),))
    assert local.probe_interval < default.probe_interval
    assert local.suspicion_timeout < default.suspicion_timeout
    assert local.delta_interval < default.delta_interval
    assert local.port == 0 and local.seeds[0].address == ("127.0.0.1", 7002)


@pytest.mark.parametrize(
    "change",
    [
        {"keyring": ()},
        {"keyring": (b"short",)},
        {"name": ""},
        {"port": 70000},
        {"probe_timeout": 0.6},
        {"delta_interval": 0.0},
        {"fanout": 0},
        {"max_frame_bytes": 1024},
        {"max_frame_bytes": 2**33},
    ],
)
def test_invalid_settings_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid GossipConfig"):
        replace(GossipConfig("n1", keyring=(KEY,)), **change)


def test_a_keyring_needs_a_key() -> None:
    with pytest.raises(ValueError):
        Keyring([])
