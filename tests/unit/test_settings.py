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
