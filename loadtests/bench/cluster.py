"""A real Redis Cluster on loopback (masters only, no persistence) for the cluster test and the
cluster benchmark: `redis-server --cluster-enabled` nodes on free ports, joined with
`redis-cli --cluster create`, always stopped again."""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from gelombang_harness import ChildProcess, PortReady, stop_all
from queue_service.keys import WaveKeys
from queue_service.redis_server import free_port

START_TIMEOUT_S = 15.0


@dataclass
class LocalCluster:
    ports: list[int]
    data_dir: Path

    @property
    def url(self) -> str:
        # two seeds, as a deployment would list them, so start-up survives one node being down
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, host="127.0.0.1", socket_timeout=5)

    def answers(self, port: int) -> bool:
        with self.node(port) as client:
            return bool(client.ping())

    def is_ok(self, port: int) -> bool:
        """The node sees the whole cluster: every slot served."""
        with self.node(port) as client:
            info: dict[str, object] = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        return info.get("cluster_state") == "ok"

    def owner(self, key: str) -> tuple[int, int]:
        """(the slot of `key` as Redis computes it, the port of the master that owns it)."""
        with self.node(self.ports[0]) as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            nodes = client.execute_command("CLUSTER NODES")
        for address, node in nodes.items():
            if "master" in node["flags"] and any(
                int(r[0]) <= slot <= int(r[-1]) for r in node["slots"]
            ):
                return slot, int(address.split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"no master owns slot {slot}: {nodes}")

    def keys_in_slot(self, port: int, slot: int) -> list[str]:
        with self.node(port) as client:
            keys = client.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
        return [k.decode() if isinstance(k, bytes) else str(k) for k in keys]

    def one_wave_per_master(self, candidates: list[str]) -> dict[int, str]:
        """The first candidate wave id whose hash slot each master owns, by master port."""
        chosen: dict[int, str] = {}
        for wave in candidates:
            _, port = self.owner(WaveKeys(wave).cfg)
            chosen.setdefault(port, wave)
        if len(chosen) != len(self.ports):
            raise RuntimeError(f"candidate waves cover only masters {sorted(chosen)}")
        return chosen


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server redis-tools)")
    return path


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports and port not in range(6379, 6382):
            ports.append(port)
    return ports


def _node(data_dir: Path, port: int, bus_port: int) -> ChildProcess:
    args = [
        _tool("redis-server"),
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(data_dir / f"nodes-{port}.conf"),
        "--port", str(port),
        # the bus port defaults to port + 10000, which may be taken or above 65535
        "--cluster-port", str(bus_port),
        "--bind", "127.0.0.1",
        "--appendonly", "no",
        "--save", "",
        "--dir", str(data_dir),
        "--logfile", str(data_dir / f"redis-{port}.log"),
    ]  # fmt: skip
    return ChildProcess(
        f"redis-server :{port}",
        args,
        log=data_dir / f"redis-{port}.out",
        ready=PortReady(port),
        ready_timeout_s=START_TIMEOUT_S,
        stop_timeout_s=5.0,
    )


def _wait_until(check: Callable[[], bool], what: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@contextmanager
def local_cluster(data_dir: Path, masters: int = 3) -> Iterator[LocalCluster]:
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = _distinct_free_ports(2 * masters)
    client_ports, bus_ports = ports[:masters], ports[masters:]
    nodes = [
        _node(data_dir, port, bus_port)
        for port, bus_port in zip(client_ports, bus_ports, strict=True)
    ]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_ready()
        local = LocalCluster(client_ports, data_dir)
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in client_ports:
            _wait_until(functools.partial(local.answers, port), f"node {port}", deadline)
        create = [
            _tool("redis-cli"), "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in client_ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        subprocess.run(create, check=True, capture_output=True, timeout=START_TIMEOUT_S)
        for port in client_ports:
            _wait_until(
                functools.partial(local.is_ok, port), f"cluster_state:ok on node {port}", deadline
            )
        yield local
    finally:
        stop_all(nodes)
