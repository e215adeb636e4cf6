"""The master of a Sentinel-watched service, as an :class:`AddressResolver`.

A connection asks :meth:`SentinelResolver.resolve` before each (re)connect. The resolver
follows the Redis client guidelines for Sentinel (https://redis.io/docs/latest/develop/
reference/sentinel-clients/):

1. ask the Sentinels in turn ``SENTINEL GET-MASTER-ADDR-BY-NAME <service>``; one that is
   unreachable, refuses our credentials or knows no such service is skipped;
2. ask the address a Sentinel named for its ``ROLE``: right after a failover a Sentinel
   may still name the old master, which is down or has come back as a replica, and
   writing to it would fail (or, worse, be lost); such an answer is skipped too;
3. the first verified master is returned and kept until a connection reports it failed
   (:meth:`~SentinelResolver.invalidate`); the Sentinel that named it moves to the front
   of the list, so the next lookup starts with one known to answer.

Each exchange (connect, AUTH, one command, its reply) is bounded by ``connect_timeout``;
one lookup therefore costs at most ``2 x len(sentinels) x connect_timeout`` (a Sentinel
and the candidate it names, each), and usually one round trip to each of the first
Sentinel and the master. There is no waiting and retrying inside a lookup: when no
Sentinel names a live master, :class:`~sergas_guard.errors.StorageUnavailable` is raised
at once and the caller's failure policy decides (its next connect asks again).

Lookups go over short-lived sockets of their own (:mod:`sergas_guard.redis.control`):
they happen once per reconnect, not per command.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
from collections.abc import Generator, Sequence

from sergas_guard import validation
from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.redis.address import Address, TcpAddress
from sergas_guard.redis.control import ErrorReply, ProtocolError, Reply, exchange, exchange_sync
from sergas_guard.secrets import scrub

__all__ = ["SentinelResolver"]


# One step a lookup asks its driver to perform: send these commands to that address.
_Step = tuple[TcpAddress, tuple[tuple[str, ...], ...]]
# What the driver sends back: the replies, or why there are none.
_Outcome = list[Reply] | OSError | ProtocolError
_Lookup = Generator[_Step, _Outcome, TcpAddress]


class SentinelResolver:
    """Resolves ``service`` to its current master by asking ``sentinels``.

    ``username``/``password`` authenticate to the Sentinels (their ``requirepass`` or an
    ACL user), ``master_username``/``master_password`` to the data nodes, for the
    ``ROLE`` check (the credentials of a ``redis+sentinel://user:pw@...`` URL). ``ssl``,
    when given, wraps both kinds of connection. Every argument is checked here: a bad
    one raises :class:`~sergas_guard.errors.ConfigurationError` naming it; passwords
    never appear in messages or the repr.
    """

    __slots__ = (
        "_flight",
        "_master",
        "_master_auth",
        "_sentinel_auth",
        "_sentinels",
        "_ssl",
        "_sync_lock",
        "connect_timeout",
        "service",
    )

    def __init__(
        self,
        sentinels: Sequence[TcpAddress],
        service: str,
        *,
        username: str | None = None,
        password: str | None = None,
        master_username: str | None = None,
        master_password: str | None = None,
        connect_timeout: float,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self._sentinels = _checked_sentinels(sentinels)
        self.service = _checked_service(service)
        self._sentinel_auth = _auth_command(username, password, "username", "password")
        self._master_auth = _auth_command(
            master_username, master_password, "master_username", "master_password"
        )
        self.connect_timeout = validation.seconds(connect_timeout, "connect_timeout")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise ConfigurationError(
                f"ssl must be an ssl.SSLContext or None, not {type(ssl).__name__}", field="ssl"
            )
        self._ssl = ssl
        self._master: TcpAddress | None = None
        self._flight: asyncio.Task[TcpAddress] | None = None
        self._sync_lock = threading.Lock()

    @property
    def sentinels(self) -> tuple[TcpAddress, ...]:
        """The Sentinels in the order the next lookup asks them."""
        return self._sentinels

    @property
    def master(self) -> TcpAddress | None:
        """The master found by the last lookup, until it is invalidated."""
        return self._master

    def secrets(self) -> tuple[str, ...]:
        """The passwords this resolver holds (for :func:`sergas_guard.secrets.secrets_of`)."""
        return tuple(auth[-1] for auth in (self._sentinel_auth, self._master_auth) if auth)

    async def resolve(self) -> Address:
        """The master's address, looked up if none is known; one lookup at a time per
        event loop, however many connections ask at once.

        Raises StorageUnavailable when no Sentinel names a master that says it is one.
        """
        master = self._master
        if master is not None:
            return master
        loop = asyncio.get_running_loop()
        flight = self._flight
        if flight is None or flight.done() or flight.get_loop() is not loop:
            flight = loop.create_task(self._resolve_async())
            flight.add_done_callback(_retrieve)
            self._flight = flight
        # shield: one caller cancelled (its own timeout) does not cancel the others' lookup.
        return await asyncio.shield(flight)

    def resolve_sync(self) -> Address:
        """:meth:`resolve` for threads: blocks (bounded as the module says); one lookup at
        a time, the threads that waited for it take its answer.

        Raises StorageUnavailable when no Sentinel names a master that says it is one.
        """
        with self._sync_lock:
            master = self._master
            if master is not None:
                return master
            run = _Run(self._lookup())
            while run.found is None:
                address, commands = run.step
                outcome: _Outcome
                try:
                    outcome = exchange_sync(
                        address, commands, timeout=self.connect_timeout, ssl=self._ssl
                    )
                except (OSError, ProtocolError) as exc:
                    outcome = exc
                run.record(outcome)
            return run.found

    def invalidate(self, address: Address) -> None:
        """Forget ``address`` if it is the master we know: the next resolve asks the
        Sentinels again. A report about an address we no longer hand out changes nothing
        (a connection to the old master failing late must not discard the new one)."""
        if address == self._master:
            self._master = None

    async def _resolve_async(self) -> TcpAddress:
        run = _Run(self._lookup())
        while run.found is None:
            address, commands = run.step
            outcome: _Outcome
            try:
                async with asyncio.timeout(self.connect_timeout):
                    outcome = await exchange(address, commands, ssl=self._ssl)
            except (OSError, ProtocolError) as exc:
                outcome = exc
            run.record(outcome)
        return run.found

    def _lookup(self) -> _Lookup:
        """The lookup as a plan: yields each exchange to perform, receives its outcome,
        returns the verified master (remembered) or raises StorageUnavailable."""
        sentinels = self._sentinels
        problems: list[str] = []
        # A candidate named by several Sentinels is checked once per lookup.
        checked: dict[TcpAddress, str | None] = {}
        for sentinel in sentinels:
            ask = ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            outcome = yield sentinel, (*self._sentinel_auth_commands(), ask)
            candidate, problem = _named_master(outcome, self.service)
            if candidate is None:
                problems.append(f"Sentinel {sentinel} {problem}")
                continue
            if candidate not in checked:
                outcome = yield candidate, (*self._master_auth_commands(), ("ROLE",))
                checked[candidate] = _not_master_because(outcome)
            refusal = checked[candidate]
            if refusal is not None:
                problems.append(f"Sentinel {sentinel} named {candidate}, which {refusal}")
                continue
            self._sentinels = (sentinel, *(s for s in sentinels if s != sentinel))
            self._master = candidate
            return candidate
        raise StorageUnavailable(
            self._scrubbed(
                f"no Sentinel named a master for service {self.service!r}: " + "; ".join(problems)
            )
        )

    def _sentinel_auth_commands(self) -> tuple[tuple[str, ...], ...]:
        return (self._sentinel_auth,) if self._sentinel_auth else ()

    def _master_auth_commands(self) -> tuple[tuple[str, ...], ...]:
        return (self._master_auth,) if self._master_auth else ()

    def _scrubbed(self, text: str) -> str:
        return scrub(text, *self.secrets())

    def __repr__(self) -> str:
        sentinels = ",".join(str(s) for s in self._sentinels)
        auth = ", password=***" if self._sentinel_auth else ""
        return f"SentinelResolver({self.service!r} via {sentinels}{auth}, master={self._master})"


class _Run:
    """A lookup plan being driven: :attr:`step` is the exchange it wants next, until
    :attr:`found` holds its answer (:meth:`record` raises StorageUnavailable instead)."""

    __slots__ = ("_plan", "found", "step")

    def __init__(self, plan: _Lookup) -> None:
        self._plan = plan
        self.step: _Step = next(plan)
        self.found: TcpAddress | None = None

    def record(self, outcome: _Outcome) -> None:
        """Hand the plan the outcome of :attr:`step`."""
        try:
            self.step = self._plan.send(outcome)
        except StopIteration as done:
            self.found = done.value


def _retrieve(task: asyncio.Task[TcpAddress]) -> None:
    # Every waiter may have been cancelled: take the outcome so asyncio does not log it
    # as "never retrieved" (the next resolve starts a fresh lookup anyway).
    if not task.cancelled():
        task.exception()


def _named_master(outcome: _Outcome, service: str) -> tuple[TcpAddress | None, str]:
    """The address a Sentinel's replies name, or None and why not (for the error)."""
    if isinstance(outcome, Exception):
        return None, _unreachable(outcome)
    *auth, answer = outcome
    for reply in auth:
        if isinstance(reply, ErrorReply):
            return None, f"refused our credentials ({reply.text})"
    if isinstance(answer, ErrorReply) and answer.code == "NOAUTH":
        return None, f"wants credentials we were not given ({answer.text}): set its password"
    if isinstance(answer, ErrorReply):
        return None, f"answered an error ({answer.text})"
    if answer is None:
        return None, f"knows no master named {service!r}"
    if (
        isinstance(answer, list)
        and len(answer) == 2
        and isinstance(answer[0], str)
        and answer[0]
        and isinstance(answer[1], str)
        and answer[1].isdigit()
        and 0 < int(answer[1]) < 65536
    ):
        return TcpAddress(answer[0], int(answer[1])), ""
    return None, f"answered {str(answer)[:80]!r}, not an address"


def _not_master_because(outcome: _Outcome) -> str | None:
    """None when the ROLE replies say master; else why the candidate is not one."""
    if isinstance(outcome, Exception):
        return _unreachable(outcome)
    *auth, role = outcome
    for reply in auth:
        if isinstance(reply, ErrorReply):
            return f"refused our credentials ({reply.text})"
    if isinstance(role, ErrorReply) and role.code == "NOAUTH":
        return f"wants credentials we were not given ({role.text}): set the master's password"
    if isinstance(role, ErrorReply):
        return f"answered ROLE with an error ({role.text})"
    if isinstance(role, list) and role and role[0] == "master":
        return None
    name = role[0] if isinstance(role, list) and role else role
    return f"is not a master (ROLE {str(name)[:40]})"


def _unreachable(error: OSError | ProtocolError) -> str:
    if isinstance(error, TimeoutError):
        return "did not answer in time"
    if isinstance(error, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(error, ProtocolError):
        return f"does not speak RESP ({error})"
    return f"could not be reached ({type(error).__name__}: {error})"


def _checked_sentinels(sentinels: object) -> tuple[TcpAddress, ...]:
    if isinstance(sentinels, str | bytes | TcpAddress) or not isinstance(sentinels, Sequence):
        raise ConfigurationError(
            "sentinels must be a list of TcpAddress(host, port)", field="sentinels"
        )
    unique: dict[TcpAddress, None] = {}
    for sentinel in sentinels:
        if not isinstance(sentinel, TcpAddress):
            raise ConfigurationError(
                f"sentinels must hold TcpAddress(host, port), not {type(sentinel).__name__}",
                field="sentinels",
            )
        if not isinstance(sentinel.host, str) or not sentinel.host.strip():
            raise ConfigurationError(
                f"a Sentinel's host must be a non-empty string, not {sentinel.host!r}",
                field="sentinels",
            )
        validation.whole(sentinel.port, "sentinels", minimum=1, maximum=65535)
        unique[sentinel] = None  # the same Sentinel twice would only be asked twice
    if not unique:
        raise ConfigurationError("sentinels must name at least one Sentinel", field="sentinels")
    return tuple(unique)


def _checked_service(service: object) -> str:
    name = validation.name(service, "service")
    if any(char.isspace() or not char.isprintable() for char in name):
        raise ConfigurationError(
            f"service must be the name Sentinel monitors (no spaces), not {name!r}",
            field="service",
        )
    return name


def _auth_command(
    username: object, password: object, username_field: str, password_field: str
) -> tuple[str, ...]:
    """The AUTH command for these credentials (empty for none); never shows the password."""
    if password is not None and (not isinstance(password, str) or not password):
        # Not the value: a password in the wrong type is still a password.
        raise ConfigurationError(
            f"{password_field} must be a non-empty string or None", field=password_field
        )
    if username is not None:
        validation.name(username, username_field)
        if password is None:
            raise ConfigurationError(
                f"{username_field} needs {password_field} (AUTH takes both)",
                field=username_field,
            )
        return ("AUTH", str(username), str(password))
    return ("AUTH", str(password)) if password is not None else ()
