"""Waves from a config file, the `gelombang wave` admin client and `gelombang keygen` against a
real service process (settings precedence in-process: tests/unit/test_settings.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from queue_service.tokens import KeyRing, key_id
from tests.helpers.processes import OriginProcess, ServeProcess
from tests.helpers.support import ADMIN_TOKEN, SAMPLE_CONFIG


def gelombang(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gelombang.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_config_waves_load_at_start_and_the_wave_cli_manages_them(
    redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "gelombang.toml"
    config.write_text(SAMPLE_CONFIG.replace('admin_token = "from-file"\n', ""))
    with ServeProcess(redis_url, tmp_path, config=config) as server:
        env = {"GELOMBANG_URL": server.url, "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN}
        shown = gelombang("wave", "show", "gelombang-1", "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        assert view["state"] == "scheduled"
        assert view["wave"]["admit_rate"] == 41.5 and view["wave"]["quota"] == 600000
        changed = gelombang(
            "wave", "put", "gelombang-1", "--set", "admit_rate=80", "--json", env=env
        )
        assert changed.returncode == 0, changed.stderr
        assert json.loads(changed.stdout)["wave"]["admit_rate"] == 80
        paused = gelombang("wave", "pause", "gelombang-1", env=env)
        assert paused.returncode == 0 and "gelombang-1  scheduled" in paused.stdout
        listed = json.loads(gelombang("wave", "list", "--json", env=env).stdout)
        assert [w["wave"]["id"] for w in listed["waves"]] == ["gelombang-1"]
        # for people: one line per wave, times where the operator is
        lines = gelombang("wave", "list", "--tz", "Asia/Jakarta", env=env).stdout.splitlines()
        assert lines[0].split() == [
            "WAVE", "STATE", "WAITING", "ACTIVE/MAX", "RATE/S", "ADMITTED/QUOTA", "OPENS", "CLOSES"
        ]  # fmt: skip
        assert lines[1].split() == [
            "gelombang-1", "scheduled", "0", "0/22,500", "80", "0/600,000",
            "2030-01-01", "12:00", "WIB", "2030-01-04", "12:00", "WIB",
        ]  # fmt: skip
        refused = gelombang("wave", "list", env={**env, "GELOMBANG_ADMIN_TOKEN": "wrong"})
        assert refused.returncode == 1 and "401" in refused.stderr
        assert "invalid_admin_token" in refused.stderr and len(refused.stderr.splitlines()) == 1
    # a restart does not revert the change made live through the admin API
    with ServeProcess(redis_url, tmp_path, config=config) as server:
        env = {"GELOMBANG_URL": server.url, "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN}
        view = json.loads(gelombang("wave", "show", "gelombang-1", "--json", env=env).stdout)
        assert view["wave"]["admit_rate"] == 80
        # deleting a wave: refused while anyone waits, unless forced
        opened = gelombang("wave", "put", "gelombang-1", "--set", f"opens_at={int(time.time())}",
                           env=env)  # fmt: skip
        assert opened.returncode == 0, opened.stderr
        join = urllib.request.Request(
            f"{server.url}/api/v1/waves/gelombang-1/join",
            data=json.dumps({"registrant": "someone"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(join, timeout=10) as response:
            assert response.status == 201
        kept = gelombang("wave", "delete", "gelombang-1", env=env)
        assert kept.returncode == 1 and "wave_in_use" in kept.stderr
        gone = gelombang("wave", "delete", "gelombang-1", "--force", env=env)
        assert gone.returncode == 0 and gone.stdout.strip() == "deleted wave gelombang-1"
        missing = gelombang("wave", "show", "gelombang-1", env=env)
        assert missing.returncode == 1 and "404" in missing.stderr


def test_keygen_and_configured_signing_keys_with_rotation(redis_url: str, tmp_path: Path) -> None:
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    for path in (old, new):
        result = gelombang("keygen", "--out", str(path))
        assert result.returncode == 0 and "kid" in result.stdout
    assert oct(old.stat().st_mode & 0o777) == "0o600"
    assert gelombang("keygen", "--out", str(old)).returncode == 1  # never overwrite silently
    ring = KeyRing.from_pem_files([new, old])
    env = {"GELOMBANG_SIGNING_KEYS": f"{new},{old}"}
    with ServeProcess(redis_url, tmp_path, env=env) as server:
        import urllib.request

        with urllib.request.urlopen(server.url + "/.well-known/jwks.json") as response:
            kids = {k["kid"] for k in json.load(response)["keys"]}
    assert kids == set(ring.public_keys) and ring.signing_kid in kids
    assert ring.signing_kid == key_id(ring.signing_key.public_key())


def test_serve_without_redis_url_starts_and_stops_an_embedded_redis(tmp_path: Path) -> None:
    with ServeProcess("", tmp_path) as server:
        log = server.log_text()
        assert "embedded redis-server on port" in log
        port = int(log.split("embedded redis-server on port ")[1].split()[0].rstrip(","))
        assert port != 6379
        assert redis.Redis(port=port).ping()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
        except redis.ConnectionError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the embedded redis-server outlived the service")
    assert (tmp_path / "redis" / "appendonlydir").exists()  # AOF on


def test_help_names_every_setting_and_has_no_noise() -> None:
    from dataclasses import fields

    from gelombang.cli import COMMANDS
    from queue_service.settings import Settings

    serve_help = gelombang("serve", "--help").stdout
    flat = " ".join(serve_help.split())
    for field in fields(Settings):
        name = field.name.upper()
        if field.name == "waves":
            continue  # the config file's [[waves]], named by --config
        assert f"GELOMBANG_{name}" in flat or f"_{name}" in flat, field.name
    for command in COMMANDS:
        text = gelombang(command, "--help").stdout
        assert "(default: None)" not in text and "default: []" not in text, command


def test_the_wave_client_reads_toml_refuses_a_postponement_and_says_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    """`wave put --file` takes the service's own config file (it used to end in a traceback on
    its TOML times); moving the opening of an opened wave is refused with what to do instead;
    a client pointed at something that is not a queue says so, not "malformed token"; `| head`
    is no error."""
    config = tmp_path / "waves.toml"
    config.write_text(
        SAMPLE_CONFIG.replace('admin_token = "from-file"\n', "").replace(
            'opens_at = "2030-01-01T12:00:00+07:00"', "opens_at = 2030-01-01T12:00:00+07:00"
        )  # a TOML datetime, not a string
    )
    with ServeProcess(redis_url, tmp_path) as server:
        env = {"GELOMBANG_URL": server.url, "GELOMBANG_ADMIN_TOKEN": ADMIN_TOKEN}
        put = gelombang("wave", "put", "gelombang-1", "--file", str(config), "--json", env=env)
        assert put.returncode == 0, put.stderr
        assert json.loads(put.stdout)["wave"]["opens_at"] == "2030-01-01T05:00:00+00:00"
        missing = gelombang("wave", "put", "other", "--file", str(config), env=env)
        assert missing.returncode == 2 and missing.stderr.count("\n") == 1
        assert "no [[waves]] entry with id 'other' (it has: gelombang-1)" in missing.stderr

        now = int(time.time())
        opened = gelombang("wave", "put", "gelombang-1", "--set", f"opens_at={now - 60}",
                           env=env)  # fmt: skip
        assert opened.returncode == 0, opened.stderr
        later = gelombang("wave", "put", "gelombang-1", "--set", f"opens_at={now + 600}",
                          env=env)  # fmt: skip
        assert later.returncode == 1 and later.stderr.count("\n") == 1
        assert "(wave_already_opened)" in later.stderr
        assert "gelombang wave pause gelombang-1" in later.stderr
        shown = json.loads(gelombang("wave", "show", "gelombang-1", "--json", env=env).stdout)
        assert shown["state"] == "open"  # not "open" with a future opening time

        join = urllib.request.Request(
            f"{server.url}/api/v1/waves/gelombang-1/join",
            data=json.dumps({"registrant": "someone"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(join, timeout=10) as response:
            assert response.status == 201
        kept = gelombang("wave", "delete", "gelombang-1", env=env)
        assert kept.returncode == 1
        assert (
            "1 person is waiting" in kept.stderr and "delete it anyway with --force" in kept.stderr
        )

        head = subprocess.run(
            f"{sys.executable} -m gelombang.cli wave show gelombang-1 | head -1",
            shell=True, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
        )  # fmt: skip
        assert head.stdout.startswith("WAVE") and "Traceback" not in head.stderr, head.stderr

        # pointed at the registration origin by mistake: it refuses the admin token as a
        # "malformed token", which must not be what the SRE reads
        with OriginProcess(server.url, tmp_path / "origin.log") as origin:
            wrong = gelombang("wave", "list", env={**env, "GELOMBANG_URL": origin.url})
        assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
        assert f"{origin.url} is not a Gelombang queue service" in wrong.stderr
        assert "malformed" not in wrong.stderr
