"""A real Redis Cluster on loopback: six ``redis-server --cluster-enabled yes`` processes (three primaries,
one replica each) joined by ``redis-cli --cluster create``, each owned by the test so it can SIGKILL a
primary and watch its replica take over.

``cluster-node-timeout`` is 1000 ms, so a killed primary is marked failed and its replica promoted within
a few seconds. Each node has its own client port and cluster-bus port (``--cluster-port``, Redis 7), both
free ports: the default bus port (client port + 10000) may be taken or past 65535.

The harness talks to the nodes with redis-py's plain clients (one connection per node) and never through
arqscale, so a test of arqscale's cluster mode does not rely on the code it tests to tell it where a slot
lives.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis as sync_redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from redis_server import RedisServer, free_port

SLOTS = 16384


def system_redis_cli() -> str:
    """``redis-cli`` from the same place as the distribution's redis-server (Debian's redis-tools)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    found = shutil.which("redis-cli", path=path)
    if found is None:
        raise RuntimeError("redis-cli is not installed: run scripts/install-test-deps or `apt-get install redis-tools`")
    return found


def slot_of(key: str) -> int:
    """The hash slot of ``key`` (honours a ``{tag}``), as every cluster client computes it."""
    return int(key_slot(key.encode()))


class ClusterNodeServer(RedisServer):
    """One cluster node. Its ``nodes.conf`` lives in its own directory and survives a kill, so a restarted
    node rejoins the cluster with its old identity (and, if it was a primary that lost its slots, as a
    replica of the node that took them)."""

    def __init__(
        self, workdir: Path, *, node_timeout_ms: int, password: str | None, require_full_coverage: bool = True
    ) -> None:
        self.bus_port = free_port()
        auth = ["--masterauth", password] if password else []
        coverage = [] if require_full_coverage else ["--cluster-require-full-coverage", "no"]
        super().__init__(
            workdir,
            password=password,
            extra_args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--cluster-port",
                str(self.bus_port),
                *auth,
                *coverage,
            ],
        )
        while self.bus_port == self.port:
            self.bus_port = free_port()
            self.extra_args[self.extra_args.index("--cluster-port") + 1] = str(self.bus_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: float = 2.0) -> sync_redis.Redis:
        """A plain connection to this node alone (no redirections followed)."""
        return sync_redis.Redis(port=self.port, password=self.password, socket_timeout=timeout, decode_responses=True)

    def cluster_info(self) -> dict[str, str]:
        with self.client() as client:
            text = client.execute_command("CLUSTER INFO")
        if isinstance(text, dict):  # redis-py parses it already
            return {str(k): str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


class RedisClusterSetup:
    """``start()`` forms the cluster and waits until every node says ``cluster_state:ok`` with all 16384
    slots served and every replica in sync; ``stop()`` SIGKILLs every node (also after a failed start)."""

    def __init__(
        self,
        workdir: Path,
        *,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        node_timeout_ms: int = 1000,
        password: str | None = None,
        require_full_coverage: bool = True,
    ) -> None:
        """``require_full_coverage``: Redis' default (yes) makes every node refuse commands while any slot
        has no primary, so a failover stalls every shard; no keeps the other shards serving."""
        self.workdir = workdir
        self.password = password
        self.node_timeout_ms = node_timeout_ms
        self.replicas_per_primary = replicas_per_primary
        count = primaries * (1 + replicas_per_primary)
        self.nodes = [
            ClusterNodeServer(
                workdir / f"node-{i}",
                node_timeout_ms=node_timeout_ms,
                password=password,
                require_full_coverage=require_full_coverage,
            )
            for i in range(count)
        ]

    # --- settings for arqscale and clients -------------------------------------------------------------

    @property
    def seeds(self) -> str:
        """``REDIS_CLUSTER_NODES``: every node as a seed (a client needs one that answers)."""
        return ",".join(node.address for node in self.nodes)

    def env(self) -> dict[str, str]:
        """The ``REDIS_*`` settings that point an arqscale process at this cluster."""
        env = {"REDIS_CLUSTER_NODES": self.seeds}
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        return env

    def client(self, **kwargs: object) -> RedisCluster:
        """redis-py's own cluster client (not arqscale's), seeded with every node."""
        options: dict[str, object] = {"decode_responses": True, "socket_timeout": 2} | kwargs
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes],
            password=self.password,
            **options,  # type: ignore[arg-type]
        )

    # --- life cycle ------------------------------------------------------------------------------------

    def start(self, within: float = 60.0) -> RedisClusterSetup:
        try:
            for node in self.nodes:
                node.start()
            command = [system_redis_cli(), "--cluster", "create", *(n.address for n in self.nodes)]
            command += ["--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"]
            env = dict(os.environ)
            if self.password:
                env["REDISCLI_AUTH"] = self.password  # not on the command line (ps shows it)
            made = subprocess.run(command, capture_output=True, text=True, timeout=within, env=env, check=False)
            if made.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{made.stdout[-3000:]}\n{made.stderr[-2000:]}")
            self.wait_until_ok(within)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every node still running."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()

    def alive(self) -> list[ClusterNodeServer]:
        return [node for node in self.nodes if node.alive]

    def node_at(self, port: int) -> ClusterNodeServer:
        return next(node for node in self.nodes if node.port == port)

    # --- topology, as the live nodes see it -------------------------------------------------------------

    def _problems(self) -> list[str]:
        """Why the cluster is not (yet) fully ok, as seen from every live node; empty when it is."""
        problems = []
        live = self.alive()
        for node in live:
            try:
                info = node.cluster_info()
                with node.client() as client:
                    replication = client.info("replication")
            except (sync_redis.RedisError, OSError) as exc:
                problems.append(f"{node.address}: {exc}")
                continue
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != SLOTS:
                problems.append(f"{node.address}: {info.get('cluster_state')} slots_ok {info.get('cluster_slots_ok')}")
            if int(info.get("cluster_known_nodes", 0)) < len(self.nodes):
                problems.append(f"{node.address}: knows {info.get('cluster_known_nodes')} nodes")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                problems.append(f"{node.address}: replica link {replication.get('master_link_status')}")
        if not problems and live:
            # Every live node must agree on who serves each slot (gossip converges after a failover).
            maps = {node.address: self._slot_owners(node) for node in live}
            if len({tuple(sorted(m.items())) for m in maps.values()}) != 1:
                problems.append(f"nodes disagree on slot owners: {maps}")
            elif any(port not in {n.port for n in live} for port in next(iter(maps.values())).values()):
                problems.append("a slot is served by a dead node")
        return problems

    def wait_until_ok(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while problems := self._problems():
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster not ok within {within}s: {problems}")
            time.sleep(0.05)

    @staticmethod
    def _slot_owners(node: ClusterNodeServer) -> dict[tuple[int, int], int]:
        """(first slot, last slot) -> port of the primary serving that range, from ``CLUSTER SLOTS``."""
        with node.client() as client:
            rows = client.execute_command("CLUSTER SLOTS")
        owners: dict[tuple[int, int], int] = {}
        if isinstance(rows, dict):  # redis-py's parsed form: {(start, end): {"primary": (host, port), ...}}
            for (start, end), row in rows.items():
                owners[(int(start), int(end))] = int(row["primary"][1])
        else:
            for row in rows:
                owners[(int(row[0]), int(row[1]))] = int(row[2][1])
        return owners

    def slot_owners(self) -> dict[tuple[int, int], int]:
        for node in self.alive():
            with contextlib.suppress(sync_redis.RedisError, OSError):
                return self._slot_owners(node)
        raise AssertionError("no live node answers CLUSTER SLOTS")

    def primary_for_slot(self, slot: int) -> ClusterNodeServer:
        for (start, end), port in self.slot_owners().items():
            if start <= slot <= end:
                return self.node_at(port)
        raise AssertionError(f"slot {slot} is not served")

    def primary_for_key(self, key: str) -> ClusterNodeServer:
        """The primary that serves ``key``'s hash slot now."""
        return self.primary_for_slot(slot_of(key))

    def primaries(self) -> list[ClusterNodeServer]:
        return sorted({self.node_at(port) for port in self.slot_owners().values()}, key=lambda n: n.port)

    def replicas_of(self, primary: ClusterNodeServer) -> list[ClusterNodeServer]:
        with primary.client() as client:
            info = client.info("replication")
        ports = {int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)}
        return [self.node_at(port) for port in sorted(ports)]

    def names_on_distinct_primaries(self, count: int, prefix: str = "q") -> list[str]:
        """``count`` names ``prefix0``, ``prefix1``, ... chosen so that the hash tags ``{name}`` land on
        different primaries (round-robin when ``count`` exceeds the number of primaries)."""
        owners = self.slot_owners()
        by_primary: dict[int, list[str]] = {port: [] for port in sorted(set(owners.values()))}
        n = 0
        while min(len(v) for v in by_primary.values()) < -(-count // len(by_primary)):
            name = f"{prefix}{n}"
            slot = slot_of(name)
            port = next(p for (s, e), p in owners.items() if s <= slot <= e)
            by_primary[port].append(name)
            n += 1
        names: list[str] = []
        for i in range(count):
            ports = list(by_primary)
            names.append(by_primary[ports[i % len(ports)]][i // len(ports)])
        return names

    # --- faults ----------------------------------------------------------------------------------------

    def kill(self, node: ClusterNodeServer) -> None:
        """SIGKILL a node (the crash case)."""
        node.kill()

    def wait_for_promotion(self, old: ClusterNodeServer, within: float = 30.0) -> ClusterNodeServer:
        """After ``old`` (a primary) was killed: the replica that took its slots, once every live node
        agrees and the cluster is ok again."""
        slots = [start for (start, _), port in self.slot_owners().items() if port == old.port]
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(sync_redis.RedisError, OSError, AssertionError, StopIteration):
                owners = {self.primary_for_slot(s).port for s in slots} if slots else set()
                if owners and old.port not in owners and not self._problems():
                    (port,) = owners
                    return self.node_at(port)
            if time.monotonic() > deadline:
                raise AssertionError(f"no replica promoted within {within}s: {self._problems()}")
            time.sleep(0.05)

    def fail_primary(self, primary: ClusterNodeServer, within: float = 30.0) -> tuple[ClusterNodeServer, float]:
        """SIGKILL ``primary`` and wait for its replica's promotion; returns the new primary and the
        seconds from the kill until the cluster was ok again."""
        killed = time.monotonic()
        self.kill(primary)
        new = self.wait_for_promotion(primary, within)
        return new, time.monotonic() - killed

    def restart(self, node: ClusterNodeServer, within: float = 30.0) -> None:
        """Start a killed node again (same ports, same ``nodes.conf``); it rejoins, as a replica if its
        slots were taken over, and this returns once the cluster is fully ok with it in sync."""
        node.start()
        self.wait_until_ok(within)

    def flushall(self) -> None:
        """Empty every primary (replicas follow)."""
        for node in self.primaries():
            with node.client() as client:
                client.flushall()
