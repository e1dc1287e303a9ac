"""Settings precedence (file < GELOMBANG_* environment < flags) and refusals, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from queue_service.settings import load_settings
from tests.helpers.support import SAMPLE_CONFIG


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    config = tmp_path / "gelombang.toml"
    config.write_text(SAMPLE_CONFIG)
    env = {"GELOMBANG_PORT": "9002", "GELOMBANG_ADMIN_TOKEN": "from-env",
           "GELOMBANG_RATE_LIMITS": "off"}  # fmt: skip
    settings = load_settings({"config": str(config), "port": 9003}, environ=env)
    assert settings.port == 9003
    assert settings.admin_token == "from-env"
    assert settings.trusted_proxies == ("10.0.0.0/8",)
    assert settings.rate_limits.join_per_ip.burst == 7
    assert settings.rate_limits.enabled is False
    assert settings.waves[0]["id"] == "gelombang-1"
    assert load_settings({"config": str(config)}, environ={}).port == 9001


def test_bad_settings_are_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[service]\nportt = 1\n")
    with pytest.raises(ValueError, match="portt"):
        load_settings({"config": str(bad)}, environ={})
    with pytest.raises(ValueError):
        load_settings({"trusted_proxies": "not-a-network"}, environ={})


def test_shedding_bounds_are_auto_unless_a_number_pins_them(tmp_path: Path) -> None:
    defaults = load_settings(environ={})
    assert defaults.max_connections is None and defaults.max_inflight is None  # auto
    assert defaults.target_queue_delay_s == 0.03
    config = tmp_path / "gelombang.toml"
    config.write_text('[service]\nmax_connections = 500\nmax_inflight = "auto"\n')
    from_file = load_settings({"config": str(config)}, environ={})
    assert from_file.max_connections == 500 and from_file.max_inflight is None
    env = {"GELOMBANG_MAX_CONNECTIONS": "AUTO", "GELOMBANG_MAX_INFLIGHT": "128",
           "GELOMBANG_TARGET_QUEUE_DELAY_S": "0.1"}  # fmt: skip
    from_env = load_settings({"config": str(config)}, environ=env)
    assert from_env.max_connections is None and from_env.max_inflight == 128
    assert from_env.target_queue_delay_s == 0.1
    flags = load_settings({"max_connections": "300", "max_inflight": "auto"}, environ=env)
    assert flags.max_connections == 300 and flags.max_inflight is None


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("GELOMBANG_MAX_CONNECTIONS", "lots", "max_connections must be auto or a whole number"),
        ("GELOMBANG_MAX_CONNECTIONS", "0", "max_connections must be above 0"),
        ("GELOMBANG_MAX_INFLIGHT", "12.5", "max_inflight must be auto or a whole number"),
        ("GELOMBANG_TARGET_QUEUE_DELAY_S", "0", "target_queue_delay_s must be above 0"),
        ("GELOMBANG_TARGET_QUEUE_DELAY_S", "50", "a delay in seconds, at most 10"),
    ],
)
def test_bad_shedding_settings_are_refused_naming_the_variable(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(ValueError, match=variable) as refused:
        load_settings(environ={variable: value})
    assert says in str(refused.value)
