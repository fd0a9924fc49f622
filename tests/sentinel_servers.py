"""A real Sentinel setup on loopback: a primary, a replica (``--replicaof``) and three sentinels
(``redis-server CONF --sentinel``), each on a free port and owned by the test (so it can SIGKILL the
primary). ``down-after-milliseconds`` is small so a failover ends within seconds."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import redis as sync_redis

from redis_server import RedisServer, free_port
from tls_material import TlsFiles, TlsRedisServer

MASTER = "mymaster"


class SentinelSetup:
    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10_000,
        sentinels: int = 3,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: every node and sentinel speaks only TLS (replication and the sentinels' own links too)."""
        self.workdir = workdir
        self.tls = tls
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        auth = ["--masterauth", password] if password else []
        if tls is None:
            self.primary = RedisServer(workdir / "primary", password=password, extra_args=auth)
            self.replica = RedisServer(
                workdir / "replica",
                password=password,
                extra_args=[*auth, "--replicaof", "127.0.0.1", str(self.primary.port)],
            )
        else:
            auth += ["--tls-replication", "yes"]
            self.primary = TlsRedisServer(workdir / "primary", tls, password=password, extra_args=auth)
            self.replica = TlsRedisServer(
                workdir / "replica",
                tls,
                password=password,
                extra_args=[*auth, "--replicaof", "127.0.0.1", str(self.primary.port)],
            )
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels(self) -> str:
        """``REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def env(self) -> dict[str, str]:
        """The ``REDIS_*`` settings that point arqscale at this setup."""
        env = {"REDIS_SENTINELS": self.sentinels, "REDIS_SENTINEL_MASTER": MASTER}
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        if self.sentinel_password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        if self.tls is not None:
            env |= {"REDIS_TLS": "true", "REDIS_SENTINEL_TLS": "true", "REDIS_TLS_CA_FILE": str(self.tls.ca_cert)}
        return env

    def _sentinel_conf(self, port: int) -> Path:
        directory = self.workdir / f"sentinel-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        listen = [f"port {port}"]
        if self.tls is not None:
            listen = [
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {self.tls.server_cert}",
                f"tls-key-file {self.tls.server_key}",
                f"tls-ca-cert-file {self.tls.ca_cert}",
                "tls-auth-clients no",
                "tls-replication yes",  # the sentinels' links to the nodes and to each other
            ]
        lines = [
            *listen,
            "bind 127.0.0.1",
            f"dir {directory}",
            f"logfile {directory / 'sentinel.log'}",
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2",
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {MASTER} {self.password}")
        if self.sentinel_password:
            # Clients and the other sentinels both authenticate with it.
            lines += [f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
        conf = directory / "sentinel.conf"  # sentinels rewrite their config file: one each, writable
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def tls_kwargs(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.tls.ca_cert)}

    def sentinel_client(self, index: int = 0) -> sync_redis.Redis:
        return sync_redis.Redis(
            port=self.sentinel_ports[index],
            password=self.sentinel_password,
            socket_timeout=2,
            decode_responses=True,
            **self.tls_kwargs(),
        )

    def start(self, within: float = 30.0) -> SentinelSetup:
        self.primary.start()
        self.replica.start()
        binary = self.primary.binary
        for port in self.sentinel_ports:
            conf = self._sentinel_conf(port)
            self.sentinel_procs.append(
                subprocess.Popen(
                    [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        self.wait_until_watched(within)
        return self

    def wait_until_watched(self, within: float) -> None:
        """Until every sentinel sees the primary up, the replica in sync and the other sentinels: only
        then can they agree on a failover."""
        deadline = time.monotonic() + within
        want_others = len(self.sentinel_ports) - 1
        while True:
            problems = []
            for index in range(len(self.sentinel_ports)):
                try:
                    with self.sentinel_client(index) as client:
                        state = client.sentinel_master(MASTER)
                        replicas = client.sentinel_slaves(MASTER)
                except (sync_redis.RedisError, OSError) as exc:
                    problems.append(f"sentinel {index}: {exc}")
                    continue
                synced = [r for r in replicas if not r["is_sdown"] and r.get("master-link-status") == "ok"]
                if state["is_sdown"] or int(state["num-other-sentinels"]) < want_others or not synced:
                    problems.append(f"sentinel {index}: {state['flags']}, others {state['num-other-sentinels']}")
            if not problems:
                return
            assert time.monotonic() < deadline, f"sentinels not ready: {problems}"
            time.sleep(0.1)

    def master_port(self, index: int = 0) -> int:
        with self.sentinel_client(index) as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def kill_primary(self) -> int:
        """SIGKILL the primary (the crash case); returns its port."""
        self.primary.kill()
        return self.primary.port

    def wait_for_promotion(self, old_port: int, within: float = 30.0) -> int:
        """The port of the new primary, once the sentinels have promoted one."""
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(sync_redis.RedisError, OSError):
                port = self.master_port()
                if port != old_port:
                    return port
            assert time.monotonic() < deadline, "no failover within the deadline"
            time.sleep(0.05)

    def wait_until_promoted_everywhere(self, new_port: int, within: float = 30.0) -> None:
        """Until every sentinel names ``new_port`` and that server says it is a primary. Before that, a server
        started on the old primary's port (empty) could still be taken for the primary by a sentinel that
        missed the failover, and the new primary made its replica: a full sync from an empty server."""
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(sync_redis.RedisError, OSError):
                named = {self.master_port(index) for index in range(len(self.sentinel_ports))}
                with sync_redis.Redis(port=new_port, password=self.password, **self.tls_kwargs()) as node:
                    role = node.info("replication")["role"]
                if named == {new_port} and role == "master":
                    return
            assert time.monotonic() < deadline, f"the sentinels do not all name {new_port} as the primary"
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.replica.kill()
        self.primary.kill()
