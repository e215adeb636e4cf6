"""Redis URLs as typed, frozen targets, checked once at construction.

Accepted forms (query parameters use redis-py's names, so URLs users already have work)::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                                   TLS (ssl_cert_reqs, ssl_ca_certs, ...)
    unix://[[user]:password@]/path/to/socket[?db=N&...]
    redis+cluster://[[user]:password@]host:port[,host:port...][?...]   (rediss+cluster: TLS)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?...]
                                                   (rediss+sentinel: TLS)

For Sentinel the userinfo is the master's credentials; the Sentinels' own are
``?sentinel_username=`` / ``?sentinel_password=`` (none by default). Our options:
``connections`` (multiplexed connections per node), ``client_name``, ``db``,
``socket_timeout``, ``socket_connect_timeout``, ``username``, ``password`` and the TLS
ones (``ssl_cert_reqs`` none/optional/required, ``ssl_ca_certs``, ``ssl_ca_path``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``, ``ssl_check_hostname``).
Every problem is a ConfigurationError naming the field, its message the URL scrubbed.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, unquote, urlsplit

from sergas_guard import validation
from sergas_guard.errors import ConfigurationError
from sergas_guard.redis.address import Address, TcpAddress, UnixAddress
from sergas_guard.secrets import credentials_problem, scrub, url_secrets

__all__ = [
    "DEFAULT_CONNECTIONS",
    "MAX_CONNECTIONS",
    "ClusterTarget",
    "ConnectOptions",
    "SentinelTarget",
    "SingleTarget",
    "Target",
    "parse_url",
]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
#: Multiplexed connections per node and process (and face). One: every connection
#: pipelines, and each more costs a write and a read per loop turn and splits the batches;
#: against two it used less CPU per call in 5 of 5 runs and gave the higher rate in most
#: (docs/storage.md), and it is one connect to fail under a cold burst.
DEFAULT_CONNECTIONS = 1
MAX_CONNECTIONS = 1000
DEFAULT_CONNECT_TIMEOUT = 0.05
DEFAULT_SOCKET_TIMEOUT = 0.05

_SCHEMES = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_OURS = frozenset(
    {
        "db", "username", "password", "client_name", "connections",
        "socket_timeout", "socket_connect_timeout", "sentinel_username", "sentinel_password",
        "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
        "ssl_password", "ssl_check_hostname",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to open and shake hands on each connection to a node (secrets never in repr)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    client_name: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    connections: int = DEFAULT_CONNECTIONS
    ssl: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    #: The name the TLS certificate is checked against (None: the host connected to).
    server_hostname: str | None = None

    @property
    def tls(self) -> bool:
        return self.ssl is not None


@dataclass(frozen=True, slots=True)
class SingleTarget:
    """One server (``redis://``, ``rediss://``, ``unix://``)."""

    address: Address
    options: ConnectOptions


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """A Redis Cluster, known by some of its nodes."""

    nodes: tuple[TcpAddress, ...]
    options: ConnectOptions


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """The master Sentinels name ``service``; exactly what a SentinelResolver needs.

    ``options`` are for connections to the master; ``sentinel_username`` /
    ``sentinel_password`` authenticate to the Sentinels themselves.
    """

    sentinels: tuple[TcpAddress, ...]
    service: str
    options: ConnectOptions
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


Target = SingleTarget | ClusterTarget | SentinelTarget
# parse_url's local error builder: (reason, field) -> the error to raise.
_Fail = Callable[..., ConfigurationError]


def parse_url(
    url: str,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    connections: int = DEFAULT_CONNECTIONS,
    foreign: Collection[str] = (),
) -> Target:
    """The target a Redis URL names; keyword values apply unless the URL sets them.

    ``foreign`` names query parameters to accept and ignore (options of another client
    built from the same URL, e.g. redis-py's ``health_check_interval``).
    Raises ConfigurationError (``field="url"``, or the option's name) for an unknown
    scheme or option, a malformed host, port, database or timeout, credentials a parser
    would misread, or unreadable TLS files; messages never show a secret.
    """
    if not isinstance(url, str):
        raise ConfigurationError(
            f"a Redis URL must be a string, not {type(url).__name__}", field="url"
        )
    secrets = url_secrets(url)

    def fail(reason: str, name: str = "url") -> ConfigurationError:
        return ConfigurationError(scrub(f"{url!r}: {reason}", *secrets), field=name)

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise fail("expected redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://")
    kind, tls = _SCHEMES[scheme]
    problem = credentials_problem(url)
    if problem:
        raise ConfigurationError(problem, field="url")
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _OURS - set(foreign))
    if unknown:
        raise fail(
            f"{len(unknown)} unknown query parameter(s) (percent-encode '&' and '=' in a "
            "password given as ?password=)"
        )
    auth, _, hosts = parts.netloc.rpartition("@")
    user, _, password = auth.partition(":") if auth else ("", "", "")

    def number(name: str, default: float) -> float:
        if name not in query:
            return default
        try:
            value = float(query[name])
        except ValueError:
            raise fail(f"{name} must be a number of seconds", name) from None
        return validation.seconds(value, name)

    db_text = query.get("db", "")
    path = unquote(parts.path)
    service = ""
    if kind == "sentinel":
        service, _, db_in_path = path.strip("/").partition("/")
        if not service:
            raise fail("a Sentinel URL names the service: redis+sentinel://host:port/service")
        db_text = db_in_path or db_text
    elif scheme != "unix" and path.strip("/"):
        db_text = path.strip("/")
    db = _whole(db_text or "0", "db", fail)
    conns = (
        _whole(query["connections"], "connections", fail)
        if "connections" in query
        else (connections)
    )
    options = ConnectOptions(
        username=unquote(user) or query.get("username") or None,
        password=unquote(password) or query.get("password") or None,
        db=db,
        client_name=query.get("client_name") or None,
        connect_timeout=number("socket_connect_timeout", connect_timeout),
        socket_timeout=number("socket_timeout", socket_timeout),
        connections=validation.whole(conns, "connections", minimum=1, maximum=MAX_CONNECTIONS),
        ssl=_tls_context(query, fail) if tls else None,
    )
    if scheme == "unix":
        if not path:
            raise fail("a unix:// URL names the socket's path: unix:///path/to/redis.sock")
        return SingleTarget(UnixAddress(path), options)
    addresses = tuple(_address(one, fail, kind) for one in hosts.split(","))
    if kind == "single":
        if len(addresses) != 1:
            raise fail("a redis:// URL names one host; use redis+cluster:// for several")
        return SingleTarget(addresses[0], options)
    if kind == "cluster":
        if db:
            raise fail("Redis Cluster has only database 0", "db")
        return ClusterTarget(addresses, options)
    return SentinelTarget(
        addresses,
        service,
        options,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
    )


def with_options(target: Target, **changes: object) -> Target:
    """``target`` with some of its ConnectOptions changed (e.g. timeouts from a caller)."""
    return replace(target, options=replace(target.options, **changes))  # type: ignore[arg-type]


def _whole(text: str, name: str, fail: _Fail) -> int:
    if not text.isdigit():
        raise fail(f"{name} must be a whole number", name)
    return int(text)


def _address(text: str, fail: _Fail, kind: str) -> TcpAddress:
    default = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_PORT
    if text.startswith("["):  # an IPv6 address: [::1]:6379
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise fail("a host is missing")
    if kind == "cluster" and not port_text:
        raise fail("each cluster node must be host:port")
    port = int(port_text) if port_text.isdigit() else (default if not port_text else -1)
    if not 0 < port < 65536:
        raise fail("a port must be a number from 1 to 65535")
    return TcpAddress(host, port)


def _tls_context(query: dict[str, str], fail: _Fail) -> ssl.SSLContext:
    """The TLS context of a ``rediss`` URL: verified against the system's CAs by default."""
    reqs_text = query.get("ssl_cert_reqs", "required").lower()
    if reqs_text not in _CERT_REQS:
        raise fail("ssl_cert_reqs must be none, optional or required", "ssl_cert_reqs")
    try:
        context = ssl.create_default_context(
            cafile=query.get("ssl_ca_certs"), capath=query.get("ssl_ca_path")
        )
    except (OSError, ssl.SSLError) as exc:
        raise fail(
            f"cannot load ssl_ca_certs/ssl_ca_path: {exc.strerror or exc}", "ssl_ca_certs"
        ) from None
    check = query.get("ssl_check_hostname", "true" if reqs_text == "required" else "false")
    context.check_hostname = check.lower() in {"1", "true", "yes"}
    context.verify_mode = _CERT_REQS[reqs_text]
    if "ssl_certfile" in query:
        try:
            context.load_cert_chain(
                query["ssl_certfile"], query.get("ssl_keyfile"), query.get("ssl_password")
            )
        except (OSError, ssl.SSLError) as exc:
            raise fail(
                f"cannot load ssl_certfile/ssl_keyfile: {exc.strerror or exc}", "ssl_certfile"
            ) from None
    return context
