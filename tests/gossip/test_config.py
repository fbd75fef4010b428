"""The configuration refuses settings that would make gossip misbehave silently, and says how a
cluster file writes each setting it lets an operator tune."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import pytest

from gossip import GossipConfig, Peer
from gossip.config import MS, GossipSettings, file_keys
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


@pytest.mark.parametrize("change", [{"fanout": 0}, {"probe_timeout": 0.5}, {"gossip_to_the_dead": -1.0}])
def test_the_settings_alone_are_checked_as_in_a_member_config(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid GossipSettings"):
        GossipSettings(**change)


def vars_of(settings: GossipSettings) -> dict[str, Any]:
    """Every setting by name (slotted dataclasses have no ``vars``)."""
    return {f.name: getattr(settings, f.name) for f in fields(GossipSettings)}


def test_a_member_config_is_the_settings_plus_who_the_member_is() -> None:
    settings = GossipSettings(delta_interval=0.02, fanout=3, gossip_to_the_dead=5.0)
    seeds = (Peer("n2", "127.0.0.1", 7002),)
    config = GossipConfig.from_settings(settings, "n1", keyring=(KEY,), port=7001, seeds=seeds)
    assert config == GossipConfig("n1", port=7001, seeds=seeds, keyring=(KEY,), **vars_of(settings))
    assert (config.delta_interval, config.fanout, config.gossip_to_the_dead) == (0.02, 3, 5.0)
    with pytest.raises(ValueError, match="name is empty"):
        GossipConfig.from_settings(settings, "", keyring=(KEY,))


def test_every_timing_a_file_gives_is_in_milliseconds_and_every_other_setting_as_is() -> None:
    keys = file_keys()
    assert set(keys) == {
        "delta_interval_ms",
        "fanout",
        "full_fanout_peers",
        "anti_entropy_interval_ms",
        "anti_entropy_max_leaves",
        "probe_interval_ms",
        "probe_timeout_ms",
        "indirect_probes",
        "suspicion_timeout_ms",
        "membership_sync_interval_ms",
        "max_frame_bytes",
    }
    for key, (name, spec) in keys.items():
        assert spec.key == key
        assert key == (f"{name}_ms" if spec.scale == MS else name)
        assert isinstance(getattr(GossipSettings(), name), float if spec.scale == MS else int)
        assert spec.low <= spec.write(getattr(GossipSettings(), name)) <= spec.high  # the default fits
    assert GossipSettings().as_file()["delta_interval_ms"] == 50


def test_a_file_written_from_settings_reads_back_as_the_same_settings() -> None:
    settings = GossipSettings(delta_interval=0.02, anti_entropy_interval=0.2, max_frame_bytes=2**20)
    keys = file_keys()
    read = {keys[key][0]: keys[key][1].read(value) for key, value in settings.as_file().items()}
    assert GossipSettings(**read) == settings
    assert type(read["fanout"]) is int


def test_a_keyring_needs_a_key() -> None:
    with pytest.raises(ValueError):
        Keyring([])
