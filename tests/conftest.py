"""Shared fixtures: a real redis-server per test session on a free port (never 6379), and a
clean database for every test; the tiers (tests/helpers/tiers.py): everything in tests/e2e/ is
slow, and a quick test may start no process but that Redis and may not run long."""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from _pytest.nodeid import NodeId
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.ratelimit import RateLimitRules
from queue_service.redis_server import EmbeddedRedis
from queue_service.settings import Settings
from queue_service.tokens import KeyRing
from tests.helpers import tiers
from tests.helpers.support import ADMIN_TOKEN, NEVER_SHED, T0
from tests.helpers.tools import require_tool

E2E = Path(__file__).resolve().parent / "e2e"


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """redis-server, which every Redis-backed test needs: missing, such a test fails."""
    return require_tool("redis-server", package="redis-server")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run the soak test (tests/e2e/test_soak.py) for this long; off by default",
    )


SOAK_SETUP_AND_REPORT_S = 180.0
"""Start-up, the Redis restart, the final checks and the report, on top of the soak itself."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything in tests/e2e/ is slow; the soak test's time bound follows --soak; every test
    has a node id of its own."""
    seconds = float(config.getoption("--soak"))
    unique_node_ids(items)
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.slow)
        if seconds > 0 and item.name == "test_soak":
            item.add_marker(pytest.mark.timeout(seconds + SOAK_SETUP_AND_REPORT_S))


def unique_node_ids(items: list[pytest.Item]) -> None:
    """pytest-xdist schedules tests by node id and runs one test of each: schemathesis 4.32
    under pytest 9 names its one test per API operation `test[GET /path]` but leaves every node
    id without the operation, so the parallel suite ran 1 of the 32 operations (found
    2026-12-07: 862 collected, 831 reported). Such an item gets its name as its node id; any
    other duplicate stops the run."""
    for item in items:
        if item.parent is not None and not item.nodeid.endswith("::" + item.name):
            # pytest keeps the node id in `_id` (a NodeId); the check below catches a change
            item._id = NodeId.parse(f"{item.parent.nodeid}::{item.name}")
    counts = collections.Counter(item.nodeid for item in items)
    duplicates = sorted(node_id for node_id, count in counts.items() if count > 1)
    if duplicates:
        raise pytest.UsageError(f"tests sharing a node id (xdist runs one): {duplicates[:5]}")


_quick_seconds: dict[str, float] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", tiers.EXCLUSIVE_DOC)
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # set in every worker of one parallel run
    directory = None
    if run:
        directory = os.path.join(tempfile.gettempdir(), f"gelombang-tests-{run}")
        os.makedirs(directory, exist_ok=True)
    config.stash[_machine_lock] = tiers.MachineLock(directory)


_machine_lock = pytest.StashKey[tiers.MachineLock]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """Every test runs (setup, call and teardown) holding the machine lock, shared or, when
    marked exclusive, alone; a quick test also with process starts forbidden."""
    lock = item.config.stash[_machine_lock]
    with lock.held(exclusive=item.get_closest_marker("exclusive") is not None):
        if item.get_closest_marker("slow"):
            return (yield)
        with tiers.forbid_processes(item.nodeid):
            return (yield)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Time spent by each quick test (reports reach the controller under pytest-xdist too)."""
    if "slow" not in report.keywords:
        _quick_seconds[report.nodeid] = _quick_seconds.get(report.nodeid, 0.0) + report.duration


_started_at = pytest.StashKey[float]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """A quick test that ran (setup to teardown) longer than the quick tier allows fails."""
    report: pytest.TestReport = yield
    if item.get_closest_marker("slow"):
        return report
    if call.when == "setup":
        item.stash[_started_at] = call.start
    elif call.when == "teardown" and report.passed:
        spent = call.stop - item.stash.get(_started_at, call.start)
        if spent > tiers.QUICK_TEST_LIMIT_S:
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} took {spent:.1f} s, more than a quick test may "
                f"({tiers.QUICK_TEST_LIMIT_S:g} s): mark it slow or move it to tests/e2e/"
            )
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    near = sorted(
        ((s, nodeid) for nodeid, s in _quick_seconds.items() if s > tiers.QUICK_TEST_WARN_S),
        reverse=True,
    )
    if near:
        terminalreporter.section("quick tests close to the slow tier")
        for seconds, nodeid in near:
            terminalreporter.line(f"{seconds:6.1f} s  {nodeid}")


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory, redis_executable: str
) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("redis"), appendonly=False, executable=redis_executable
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


# -- the queue service in-process, on an injected clock ------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.from_keys(Ed25519PrivateKey.generate())


@pytest.fixture
def make_settings(redis_url: str, state_dir: Path) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "redis_url": redis_url,
            "state_dir": state_dir,
            "admin_token": ADMIN_TOKEN,
            "log_format": "text",
            "rate_limits": RateLimitRules(enabled=False),
            "redis_timeout_s": 5.0,  # a loaded CI machine is slow; the fault tests set their own
            **NEVER_SHED,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
) -> TestClient:
    """The app on a manual clock with its admission loop off: tests step admission with
    `admit(client, wave)`."""
    app = create_app(make_settings(), clock=clock, keyring=keyring, run_admission=False)
    return await aiohttp_client(app)
