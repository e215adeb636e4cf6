"""Real servers for the test suite: redis-server, a 3-master Redis Cluster, a Sentinel
topology (master, replicas, Sentinels; optionally TLS), PostgreSQL.

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


# --- Redis Sentinel --------------------------------------------------------------------
#
# Sentinel is redis-server started with --sentinel (Debian's redis-sentinel package only
# adds a symlink and a service unit), so the redis-server package is all CI needs.

SENTINEL_SERVICE = "mymaster"


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""

    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        """redis-server options serving TLS only, and speaking TLS to replicas and peers."""
        return [
            "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no",
            "--tls-replication", "yes",
        ]  # fmt: skip


def self_signed_certificate(folder: Path) -> TlsFiles:
    """Make a certificate for 127.0.0.1 in ``folder`` (openssl; skipped or failed if absent)."""
    openssl = require_binary("openssl")
    files = TlsFiles(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(files.key), "-out", str(files.cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return files


@dataclass
class SentinelProcess:
    """One Sentinel: ``redis-server <conf> --sentinel``, its conf in a directory of its own
    (Sentinel rewrites its conf file as it learns the topology)."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.process = subprocess.Popen(
            [binary, str(self.workdir / "sentinel.conf"), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass
class RedisSentinel:
    """A real Sentinel topology on loopback: a master, its replicas, and Sentinels watching
    it under :data:`SENTINEL_SERVICE`. ``master`` is the server the Sentinels name now
    (it changes after :meth:`kill_master` and :meth:`wait_for_failover`). With ``tls``,
    every node listens on TLS only (its ``port`` is the TLS port)."""

    master: RedisServer
    replicas: list[RedisServer]
    sentinels: list[SentinelProcess]
    password: str | None
    master_password: str | None
    tls: TlsFiles | None = None
    service: str = SENTINEL_SERVICE

    @property
    def sentinel_ports(self) -> list[int]:
        return [sentinel.port for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of this topology (``rediss+sentinel`` with TLS)."""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        auth = f":{self.master_password}@" if self.master_password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        query = f"?sentinel_password={self.password}" if self.password else ""
        return f"{scheme}://{auth}{hosts}/{self.service}{query}"

    def sentinel_command(self, port: int, *args: str) -> list[str]:
        """One command to the Sentinel on ``port`` (via redis-cli): its reply's lines."""
        return _cli(port, self.password, self.tls, *args)

    def data_command(self, port: int, *args: str) -> list[str]:
        """One command to the master or a replica on ``port``: its reply's lines."""
        return _cli(port, self.master_password, self.tls, *args)

    def master_addr_by(self, port: int) -> tuple[str, int] | None:
        """What the Sentinel on ``port`` answers to get-master-addr-by-name, if it answers."""
        try:
            lines = self.sentinel_command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        except (subprocess.SubprocessError, OSError):
            return None
        if len(lines) != 2 or not lines[1].isdigit():
            return None
        return lines[0], int(lines[1])

    def role_of(self, port: int) -> str | None:
        """What the data node on ``port`` says it is (master, slave), if it answers."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            lines = self.data_command(port, "ROLE")
            return lines[0] if lines else None
        return None

    def kill_master(self) -> RedisServer:
        """SIGKILL the master (no goodbye to replicas or Sentinels); returns the dead server."""
        dead = self.master
        assert dead.process is not None
        dead.process.kill()
        dead.process.wait()
        dead.process = None
        return dead

    def wait_for_failover(self, timeout: float = 30.0) -> RedisServer:
        """Wait until every live Sentinel names one of the replicas as master and that replica
        says ROLE master; it becomes :attr:`master` (and leaves :attr:`replicas`)."""
        deadline = time.monotonic() + timeout
        by_port = {replica.port: replica for replica in self.replicas}
        while time.monotonic() < deadline:
            answers = {self.master_addr_by(s.port) for s in self.sentinels if s.process is not None}
            if len(answers) == 1:
                (answer,) = answers
                promoted = by_port.get(answer[1]) if answer else None
                if promoted is not None and self.role_of(promoted.port) == "master":
                    self.replicas.remove(promoted)
                    self.master = promoted
                    return promoted
            time.sleep(0.1)
        raise RuntimeError(f"no failover of {self.service!r} completed within {timeout}s")


def _cli(port: int, password: str | None, tls: TlsFiles | None, *args: str) -> list[str]:
    cli = require_binary("redis-cli")
    # REDISCLI_AUTH, not -a: a password on the command line shows in `ps`.
    env = {**os.environ, "REDISCLI_AUTH": password} if password else None
    secure = ["--tls", "--cacert", str(tls.cert)] if tls else []
    done = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), *secure, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=5,
        env=env,
    )
    return done.stdout.splitlines()


def _sentinel_conf(
    port: int,
    master_port: int,
    quorum: int,
    password: str | None,
    master_password: str | None,
    tls: TlsFiles | None,
) -> str:
    listen = [f"port {port}"]
    if tls:
        options = tls.server_args()
        listen = ["port 0", f"tls-port {port}"]
        listen += [
            f"{name[2:]} {value}" for name, value in zip(options[::2], options[1::2], strict=True)
        ]
    lines = [
        *listen,
        "bind 127.0.0.1",
        "daemonize no",
        # Fast enough for a test: down after 1 s, a failed failover retried after 2 x 3 s.
        f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} {quorum}",
        f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000",
        f"sentinel failover-timeout {SENTINEL_SERVICE} 3000",
        f"sentinel parallel-syncs {SENTINEL_SERVICE} 1",
    ]
    if password:
        # Sentinels authenticate to each other with their own requirepass.
        lines.append(f"requirepass {password}")
    if master_password:
        lines.append(f"sentinel auth-pass {SENTINEL_SERVICE} {master_password}")
    return "\n".join(lines) + "\n"


def _wait_sentinels_ready(topology: RedisSentinel, timeout: float = 30.0) -> None:
    """Wait until every Sentinel knows the master (up), all replicas and all other Sentinels."""
    want = {
        "num-slaves": str(len(topology.replicas)),
        "num-other-sentinels": str(len(topology.sentinels) - 1),
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = 0
        for port in topology.sentinel_ports:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                lines = topology.sentinel_command(port, "SENTINEL", "MASTER", topology.service)
                fields = dict(zip(lines[::2], lines[1::2], strict=False))
                if (
                    all(fields.get(k) == v for k, v in want.items())
                    and fields.get("flags") == "master"
                ):
                    ready += 1
        if ready == len(topology.sentinels):
            return
        time.sleep(0.1)
    raise RuntimeError("the Sentinels did not all learn the master, replicas and each other")


def _wait_replicas_linked(topology: RedisSentinel) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            info = topology.data_command(topology.master.port, "INFO", "replication")
            online = sum(1 for line in info if line.startswith("slave") and "state=online" in line)
            if online >= len(topology.replicas):
                return
        time.sleep(0.05)
    raise RuntimeError(f"the replicas did not link to the master on port {topology.master.port}")


@contextlib.contextmanager
def redis_sentinel(
    replicas: int = 1,
    sentinels: int = 3,
    *,
    password: str | None = None,
    master_password: str | None = None,
    tls: bool = False,
) -> Iterator[RedisSentinel]:
    """A master, ``replicas`` replicas and ``sentinels`` Sentinels (quorum: a majority) on
    free loopback ports; ``password`` is the Sentinels' requirepass, ``master_password``
    the data nodes'; ``tls`` makes every node speak TLS only (a self-signed certificate).
    Yields once every Sentinel knows the whole topology; stops every process it started
    on the way out, whatever happened."""
    with tempfile.TemporaryDirectory(prefix="sg-sentinel-") as tmp, contextlib.ExitStack() as stack:
        files = self_signed_certificate(Path(tmp)) if tls else None
        # Diskless full syncs wait 5 s by default for more replicas to join: start at once.
        data_args = ["--repl-diskless-sync-delay", "0"]
        if master_password:
            data_args += ["--requirepass", master_password, "--masterauth", master_password]

        def data_node(name: str, *extra: str) -> RedisServer:
            workdir = Path(tmp) / name
            workdir.mkdir()
            port = free_port()
            # Later options win: with TLS the plain port RedisServer passes is turned off.
            secure = ["--port", "0", "--tls-port", str(port), *files.server_args()] if files else []
            node = RedisServer(port, workdir, [*data_args, *secure, *extra])
            stack.callback(node.stop)
            node.start()
            return node

        master = data_node("master")
        replica_nodes = [
            data_node(f"replica{i}", "--replicaof", "127.0.0.1", str(master.port))
            for i in range(replicas)
        ]
        topology = RedisSentinel(master, replica_nodes, [], password, master_password, files)
        _wait_replicas_linked(topology)
        quorum = sentinels // 2 + 1
        for index in range(sentinels):
            workdir = Path(tmp) / f"sentinel{index}"
            workdir.mkdir()
            watcher = SentinelProcess(free_port(), workdir)
            conf = _sentinel_conf(
                watcher.port, master.port, quorum, password, master_password, files
            )
            (workdir / "sentinel.conf").write_text(conf)
            stack.callback(watcher.stop)
            watcher.start()
            topology.sentinels.append(watcher)
        _wait_sentinels_ready(topology)
        yield topology
