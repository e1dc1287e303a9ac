"""deploy/nginx.conf for real: Debian's nginx, running the repository's config (rendered with
only what must differ from compose replaced), in front of two `gelombang serve` replicas that
share one Redis and one secret. Any replica verifies any ticket; the client address comes from
X-Forwarded-For only when nginx set it; a replica SIGKILLed mid-load loses no acknowledged join
and nginx fails over to the other. Loopback only; every process is stopped, in bounded time.

Telling nginx apart from a client on loopback: nginx connects to the replicas from 127.0.0.2
(`proxy_bind`, added when rendering: the test's stand-in for the fixed address the `lb` service
has in compose), and that is the only address the replicas trust (GELOMBANG_TRUSTED_PROXIES).
Clients connect from 127.0.0.1 or another 127.x address, so a request straight to a replica
comes from an untrusted peer and its X-Forwarded-For is ignored. Linux answers for the whole of
127.0.0.0/8 on `lo`, so these addresses need no set-up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from gelombang_harness import ChildProcess, HttpReady
from queue_service.keys import WaveKeys
from queue_service.redis_server import free_port
from queue_service.tickets import TicketCodec
from tests.helpers.paths import REPO
from tests.helpers.processes import ServeProcess, listening_sockets
from tests.helpers.support import ADMIN, ORIGIN

pytestmark = pytest.mark.slow

NGINX_CONF = REPO / "deploy" / "nginx.conf"
NGINX_SOURCE = "127.0.0.2"  # nginx -> replicas; the only trusted proxy
SECRET = "nginx-test-secret-shared-by-both-replicas"
STOP_WITHIN_S = 20.0
# How long nginx skips a failed replica before trying it again.
FAIL_TIMEOUT_S = max(int(n) for n in re.findall(r"fail_timeout=(\d+)s", NGINX_CONF.read_text()))

# The load of the failover test: joins at a steady rate from a fixed number of connections,
# one replica killed once a third of them are acknowledged.
LOAD_JOINS = 3000
LOAD_RATE_PER_S = 600.0
LOAD_CONNECTIONS = 32


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("nginx is not installed: run scripts/setup --test")
    return found


def upstream_servers(conf: str) -> list[str]:
    """The `server` lines of the `upstream queue` block (compose service names and ports)."""
    upstream = re.search(r"^\s*upstream queue \{(.*?)\}", conf, flags=re.MULTILINE | re.DOTALL)
    assert upstream, "deploy/nginx.conf has no `upstream queue` block"
    return re.findall(r"^\s*server\s+(\S+)", upstream.group(1), flags=re.MULTILINE)


def render_nginx_conf(
    conf: str, *, listen_port: int, upstream_ports: Sequence[int], prefix: Path
) -> str:
    """deploy/nginx.conf with what must differ here replaced: the upstream servers (in order,
    by the replicas' loopback ports), the listen address, the pid file, and paths Debian's
    binary has compiled in under /var/lib/nginx (root's); plus nginx's source address. Every
    replacement must match exactly once, so an edit to the config that moves what the test
    relies on fails here instead of testing another config."""
    servers = upstream_servers(conf)
    assert len(servers) == len(upstream_ports), (servers, upstream_ports)

    def replace_once(pattern: str, replacement: str, text: str) -> str:
        result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"deploy/nginx.conf: {pattern!r} matched {count} times, not once"
        return result

    for name, port in zip(servers, upstream_ports, strict=True):
        conf = replace_once(
            rf"^(\s*server\s+){re.escape(name)}(\s)", rf"\g<1>127.0.0.1:{port}\2", conf
        )
    conf = replace_once(r"^(\s*listen\s+)8080(\s)", rf"\g<1>127.0.0.1:{listen_port}\2", conf)
    conf = replace_once(r"^pid\s+\S+;", f"pid {prefix / 'nginx.pid'};", conf)
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return replace_once(
        r"^http \{\n",
        "http {\n    # rendered by tests/e2e/test_deploy_nginx.py\n"
        f"{temp_paths}    proxy_bind {NGINX_SOURCE};\n",
        conf,
    )


class NginxProcess(ChildProcess):
    """Debian's nginx in the foreground (`daemon off`), in its own process group and prefix
    directory, on a free loopback port, running the rendered deploy/nginx.conf."""

    def __init__(self, upstream_ports: Sequence[int], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = directory / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                NGINX_CONF.read_text(),
                listen_port=self.port,
                upstream_ports=upstream_ports,
                prefix=directory,
            )
        )
        super().__init__(
            "nginx",
            [nginx_binary(), "-p", f"{directory}/", "-c", str(conf), "-e", "stderr",
             "-g", "daemon off;"],
            log=directory / "nginx.log",
            ready=HttpReady(self.url + "/lb-health"),
            ready_timeout_s=10,
        )  # fmt: skip


@dataclass
class Balanced:
    nginx: NginxProcess
    replicas: list[ServeProcess]  # one per upstream server of deploy/nginx.conf (two, like compose)


StartBalanced = Callable[..., Balanced]


def process_group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def balanced(redis_url: str, tmp_path: Path) -> Iterator[StartBalanced]:
    """Starts nginx in front of a replica for each of its upstream servers; stops them all
    afterwards and checks that every process group is gone and every port closed within
    STOP_WITHIN_S."""
    started: list[NginxProcess | ServeProcess] = []

    def start(*, rate_limits: bool = False) -> Balanced:
        env = {
            "GELOMBANG_SECRET": SECRET,
            "GELOMBANG_TRUSTED_PROXIES": f"{NGINX_SOURCE}/32",
            "GELOMBANG_RATE_LIMITS": "on" if rate_limits else "off",
            "GELOMBANG_REDIS_TIMEOUT_S": "5",  # two shared cores under load are slow
        }
        replicas = []
        for _ in upstream_servers(NGINX_CONF.read_text()):
            replica = ServeProcess(redis_url, tmp_path, env=env)
            started.append(replica.start())
            replicas.append(replica)
        nginx = NginxProcess([replica.port for replica in replicas], tmp_path / "nginx")
        started.append(nginx.start())
        assert len(replicas) >= 2, "the tests need two replicas behind nginx"
        return Balanced(nginx, replicas)

    yield start
    begun = time.monotonic()
    for process in reversed(started):
        process.stop()
    elapsed = time.monotonic() - begun
    for process in started:
        assert not process_group_alive(process.pid), f"{process.name} left processes"
        assert listening_sockets(process.port) == 0, f"port {process.port} still listens"
    assert elapsed < STOP_WITHIN_S, f"stopping took {elapsed:.1f} s"


@contextlib.asynccontextmanager
async def http_client(
    source: str = "127.0.0.1", connections: int = 8
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=connections, local_addr=(source, 0))
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        yield http


async def put_wave(http: aiohttp.ClientSession, url: str, wave: str, **fields: Any) -> None:
    now = time.time()
    body = {"opens_at": now - 1, "closes_at": now + 3600, "admit_rate": 5,
            "origin_url": ORIGIN, "abandon_after_s": 3600, **fields}  # fmt: skip
    async with http.put(f"{url}/admin/v1/waves/{wave}", json=body, headers=ADMIN) as response:
        assert response.status == 201, await response.text()


async def join(
    http: aiohttp.ClientSession,
    url: str,
    wave: str,
    registrant: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{url}/api/v1/waves/{wave}/join", json={"registrant": registrant}, headers=headers
    ) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def status(
    http: aiohttp.ClientSession, url: str, wave: str, ticket: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"{url}/api/v1/waves/{wave}/status", headers={"X-Queue-Ticket": ticket}
    ) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def answered(
    http: aiohttp.ClientSession, replica: ServeProcess, counter: str, wave: str
) -> float:
    """Requests this replica answered for the wave (`gelombang_joins` or
    `gelombang_status_polls`), from its own /metrics."""
    async with http.get(f"{replica.url}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == counter
        for sample in family.samples
        if sample.name == f"{counter}_total" and sample.labels.get("wave") == wave
    )


# ---------------------------------------------------------------------------- any replica


async def test_a_ticket_joined_through_nginx_is_verified_by_the_other_replica(
    balanced: StartBalanced,
) -> None:
    stack = balanced()
    lb = stack.nginx.url
    async with http_client() as http:
        # One admission at once, then none for a long time: places stay put during the test.
        await put_wave(http, lb, "w", admit_rate=0.001, admit_burst=1)
        head = (await join(http, lb, "w", "head"))[1]["ticket"]
        deadline = time.monotonic() + 10
        while True:
            code, view = await status(http, lb, "w", head)
            assert code == 200, view
            if view["state"] == "admitted":
                break
            assert time.monotonic() < deadline, "the first registrant was never admitted"
            await asyncio.sleep(0.05)
        for registrant in ("second", "third"):
            assert (await join(http, lb, "w", registrant))[0] == 201

        joins = "gelombang_joins"
        before = [await answered(http, replica, joins, "w") for replica in stack.replicas]
        code, joined = await join(http, lb, "w", "fourth")
        after = [await answered(http, replica, joins, "w") for replica in stack.replicas]
        assert code == 201 and joined["position"] == 3, joined
        answering = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a > b]
        assert len(answering) == 1, (before, after)
        other = next(r for i, r in enumerate(stack.replicas) if i not in answering)

        code, direct = await status(http, other.url, "w", joined["ticket"])
        assert code == 200, direct
        assert (direct["state"], direct["position"]) == ("waiting", 3)
        # Through nginx several times: every replica answers some, all with the same place.
        polls = "gelombang_status_polls"
        before = [await answered(http, replica, polls, "w") for replica in stack.replicas]
        for _ in range(4 * len(stack.replicas)):
            code, balanced_view = await status(http, lb, "w", joined["ticket"])
            assert code == 200 and balanced_view["position"] == 3, balanced_view
        after = [await answered(http, replica, polls, "w") for replica in stack.replicas]
        assert all(a > b for b, a in zip(before, after, strict=True)), (before, after)
        # And a forged ticket is refused by both, so "verified" means something.
        forged = joined["ticket"][:-2] + ("AA" if not joined["ticket"].endswith("AA") else "BB")
        for replica in stack.replicas:
            code, refused = await status(http, replica.url, "w", forged)
            assert code == 401 and refused["error"]["code"] == "invalid_ticket", refused


# ---------------------------------------------------------------------------- client address


async def test_the_per_address_join_limit_keys_on_the_address_nginx_saw(
    balanced: StartBalanced,
) -> None:
    stack = balanced(rate_limits=True)
    burst = 5
    limits = {"join_per_ip": {"rate_per_s": 0.01, "burst": burst}}  # no refill during the test
    forged_addresses = (f"198.51.100.{i}" for i in itertools.count(1))
    registrants = (f"r{i}" for i in itertools.count())

    async def join_forging(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
        """A join claiming a new address each time."""
        forged = {"X-Forwarded-For": next(forged_addresses)}
        return await join(http, url, "w", next(registrants), forged)

    async with http_client("127.0.0.3") as bot, http_client("127.0.0.4") as neighbour:
        await put_wave(bot, stack.nginx.url, "w", rate_limits=limits)
        # Through nginx, a forged X-Forwarded-For is only the left part of the header nginx
        # sends; the replicas take the address nginx appended (the one it saw), 127.0.0.3.
        answers = [await join_forging(bot, stack.nginx.url) for _ in range(burst + 3)]
        assert [code for code, _ in answers] == [201] * burst + [429] * 3, answers
        assert {body["error"]["code"] for _, body in answers[burst:]} == {"rate_limited"}
        # Another client through the same nginx is another address: the replicas do believe
        # nginx (without that, every request would count against nginx's own 127.0.0.2).
        assert (await join(neighbour, stack.nginx.url, "w", "neighbour"))[0] == 201

    async with http_client("127.0.0.1") as direct:
        # Straight to a replica, a forged header is not believed: every join counts against
        # the peer 127.0.0.1, whichever replica answers (the limit state is in Redis).
        codes = [
            (await join_forging(direct, stack.replicas[i % len(stack.replicas)].url))[0]
            for i in range(burst)
        ]
        assert codes == [201] * burst
        code, body = await join_forging(direct, stack.replicas[0].url)
        assert code == 429 and body["error"]["code"] == "rate_limited", body


# ---------------------------------------------------------------------------- failover


@dataclass
class JoinAttempt:
    registrant: str
    started: float
    ended: float
    status: int | None  # None: the connection to nginx failed
    body: dict[str, Any] | None

    @property
    def acknowledged(self) -> bool:
        return self.status in (200, 201)


async def attempt_join(
    http: aiohttp.ClientSession, url: str, wave: str, registrant: str
) -> JoinAttempt:
    started = time.monotonic()
    try:
        code, body = await join(http, url, wave, registrant)
    except (aiohttp.ClientError, TimeoutError):
        return JoinAttempt(registrant, started, time.monotonic(), None, None)
    return JoinAttempt(registrant, started, time.monotonic(), code, body)


async def paced_joins(
    http: aiohttp.ClientSession, url: str, wave: str, count: int, attempts: list[JoinAttempt]
) -> None:
    """`count` joins at LOAD_RATE_PER_S from LOAD_CONNECTIONS concurrent senders."""
    begun = time.monotonic()
    numbers = iter(range(count))

    async def sender() -> None:
        for number in numbers:  # shared: each sender takes the next registrant
            await asyncio.sleep(max(0.0, begun + number / LOAD_RATE_PER_S - time.monotonic()))
            attempts.append(await attempt_join(http, url, wave, f"load-{number}"))

    await asyncio.gather(*(sender() for _ in range(LOAD_CONNECTIONS)))


async def test_killing_a_replica_mid_load_loses_no_acknowledged_join(
    balanced: StartBalanced, redis_client: aioredis.Redis
) -> None:
    stack = balanced()
    lb = stack.nginx.url
    victim, survivor = stack.replicas[:2]
    attempts: list[JoinAttempt] = []
    async with http_client(connections=LOAD_CONNECTIONS) as http:
        await put_wave(http, lb, "w")
        load = asyncio.create_task(paced_joins(http, lb, "w", LOAD_JOINS, attempts))
        while sum(a.acknowledged for a in attempts) < LOAD_JOINS // 3:
            assert not load.done(), "the load ended before the kill"
            await asyncio.sleep(0.01)
        # Both replicas are serving joins when one dies.
        assert await answered(http, victim, "gelombang_joins", "w") > 0
        assert await answered(http, survivor, "gelombang_joins", "w") > 0
        kill_started = time.monotonic()
        await asyncio.to_thread(victim.kill)  # SIGKILL: no graceful drain
        kill_ended = time.monotonic()
        await load

        failed = [a for a in attempts if not a.acknowledged]
        acked = {a.registrant: a.body["ticket"] for a in attempts if a.acknowledged and a.body}
        after_kill = [a for a in attempts if a.started > kill_ended]
        assert len(attempts) == LOAD_JOINS and len(acked) == LOAD_JOINS - len(failed)
        assert len(after_kill) > LOAD_JOINS // 4, "the load did not go on after the kill"
        # Errors: only joins in flight at the kill (each connection has at most one): nginx
        # never resends a POST it has sent (non_idempotent is not in proxy_next_upstream), so
        # those few get nginx's own JSON 503 (the replica's 502 mapped to it). A join that
        # starts after the kill must not fail: the dead replica's sockets were closed before
        # waitpid returned, so nginx sees them closed first and a refused connect goes on to
        # the other replica.
        assert len(failed) <= LOAD_CONNECTIONS, [(a.status, a.body) for a in failed]
        for attempt in failed:
            assert kill_started <= attempt.ended and attempt.started <= kill_ended, attempt
            assert attempt.status == 503, attempt
            assert attempt.body and attempt.body["error"]["code"] == "service_unavailable"
        # New joins after the kill succeed through nginx, also once fail_timeout has passed and
        # nginx tries the dead replica again (it must still go on to the survivor).
        await asyncio.sleep(max(0.0, kill_ended + FAIL_TIMEOUT_S + 0.5 - time.monotonic()))
        for registrant in (f"after-{i}" for i in range(50)):
            assert (await join(http, lb, "w", registrant))[0] == 201

        # No acknowledged join is lost: the survivor knows every ticket...
        checks = asyncio.Semaphore(LOAD_CONNECTIONS)

        async def check(ticket: str) -> tuple[int, str]:
            async with checks:
                code, body = await status(http, survivor.url, "w", ticket)
                return code, body.get("state", "")

        answers = await asyncio.gather(*(check(ticket) for ticket in acked.values()))
        unknown = [answer for answer in answers if answer[0] != 200]
        assert unknown == [], unknown
        assert {state for _, state in answers} <= {"waiting", "admitted"}
    # ...and Redis holds each one as that registrant's ticket, both ways.
    codec, keys = TicketCodec(SECRET.encode()), WaveKeys("w")
    pipe = redis_client.pipeline(transaction=False)
    expected = []
    for registrant, ticket in acked.items():
        seq = int(ticket.split(".")[0])
        registrant_hash, bucket = codec.registrant_hash("w", registrant)
        pipe.hget(keys.registrant_bucket(bucket), registrant_hash)
        pipe.hget(keys.ticket_bucket(seq), str(seq))
        expected.append((seq, registrant_hash))
    stored = await pipe.execute()
    for (seq, registrant_hash), by_registrant, by_ticket in zip(
        expected, stored[::2], stored[1::2], strict=True
    ):
        assert by_registrant is not None and int(by_registrant) == seq
        assert by_ticket is not None and by_ticket.decode().split("|")[0] == registrant_hash
    print(
        f"\nfailover: {len(acked)} joins acknowledged, 0 lost, {len(failed)} failed at the kill "
        f"({sorted({a.status for a in failed}, key=str)}), "
        f"{len(after_kill)} started after it"
    )
