"""Real servers for the test suite: redis-server, a 3-master Redis Cluster, PostgreSQL.

Each starts on a free loopback port in a temporary directory and is stopped at the end
of its fixture. A missing binary skips the tests that need it locally and fails them
with ``CI=true`` (CI must have installed it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str, *candidates: str) -> str:
    """Path of a server binary; skip (locally) or fail (CI) when it is missing."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
        if found:
            return found
    message = f"{name} is not installed (apt-get install it, or run .ci/run)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port too."""
    while (port := free_port()) > 55535:
        pass
    return port


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class RedisServer:
    """A redis-server process of our own; ``stop``/``start`` simulate an outage."""

    port: int
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def redis_server(*extra_args: str) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="sg-redis-") as tmp:
        server = RedisServer(port=free_port(), workdir=Path(tmp), extra_args=list(extra_args))
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(Exception):
                server.resume()
            server.stop()


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisCluster]:
    cli = require_binary("redis-cli")
    with tempfile.TemporaryDirectory(prefix="sg-cluster-") as tmp:
        nodes = []
        try:
            for index in range(masters):
                workdir = Path(tmp) / str(index)
                workdir.mkdir()
                node = RedisServer(
                    port=free_cluster_port(),
                    workdir=workdir,
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(workdir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
                node.start()
                nodes.append(node)
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            _wait_cluster_ok(cli, [node.port for node in nodes])
            yield RedisCluster(nodes)
        finally:
            for node in nodes:
                node.stop()


def _wait_cluster_ok(cli: str, ports: list[int], timeout: float = 30.0) -> None:
    """Wait until every node says cluster_state:ok and knows all 16384 slots."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = 0
        for port in ports:
            info = subprocess.run(
                [cli, "-p", str(port), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if "cluster_state:ok" in info and "cluster_slots_ok:16384" in info:
                ready += 1
        if ready == len(ports):
            return
        time.sleep(0.1)
    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok on every node")


@dataclass
class PostgresServer:
    port: int
    datadir: Path
    user: str
    password: str
    bindir: Path

    def dsn(self, password: str | None = None, database: str = "postgres") -> str:
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        _run_as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args])

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("stop", "-m", "immediate", "-w")

    def start(self) -> None:
        self.pg_ctl(
            "start",
            "-w",
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1",
        )
        wait_for_port(self.port)


def _postgres_bindir() -> Path:
    for pattern in ("/usr/lib/postgresql/*/bin",):
        for found in sorted(glob.glob(pattern), reverse=True):
            if os.path.isfile(os.path.join(found, "initdb")):
                return Path(found)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    message = "PostgreSQL server binaries are not installed (apt-get install postgresql)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _run_as_postgres(cmd: list[str]) -> None:
    # initdb and postgres refuse to run as root; drop to the postgres system user then.
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(
        cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120
    )


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _postgres_bindir()
    tmp = tempfile.mkdtemp(prefix="sg-pg-")
    try:
        datadir = Path(tmp) / "data"
        pwfile = Path(tmp) / "pw"
        password = "s3cret-pw-" + os.urandom(4).hex()
        pwfile.write_text(password)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for path in (tmp, pwfile):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        _run_as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "guard",
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
            ]
        )
        server = PostgresServer(free_port(), datadir, "guard", password, bindir)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
