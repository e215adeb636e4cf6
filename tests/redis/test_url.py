"""Redis URLs become typed, frozen targets; bad ones fail at construction, scrubbed."""

from __future__ import annotations

import ssl

import pytest

from sergas_guard.errors import ConfigurationError
from sergas_guard.redis import (
    ClusterTarget,
    SentinelTarget,
    SingleTarget,
    TcpAddress,
    UnixAddress,
    parse_url,
)


def test_a_plain_url_names_one_server_and_its_options() -> None:
    target = parse_url("redis://app:pw@cache.internal:6380/3?client_name=web&connections=3")
    assert isinstance(target, SingleTarget)
    assert target.address == TcpAddress("cache.internal", 6380)
    options = target.options
    assert (options.username, options.password, options.db) == ("app", "pw", 3)
    assert (options.client_name, options.connections, options.tls) == ("web", 3, False)
    assert "pw" not in repr(target)


def test_defaults_and_timeouts_from_the_caller_unless_the_url_sets_them() -> None:
    target = parse_url("redis://h", connect_timeout=0.5, socket_timeout=0.25)
    assert isinstance(target, SingleTarget)
    assert target.address == TcpAddress("h", 6379)
    assert (target.options.connect_timeout, target.options.socket_timeout) == (0.5, 0.25)
    assert target.options.db == 0
    assert target.options.password is None
    overridden = parse_url("redis://h?socket_timeout=2&socket_connect_timeout=3", socket_timeout=1)
    assert (overridden.options.socket_timeout, overridden.options.connect_timeout) == (2.0, 3.0)


def test_rediss_builds_a_tls_context_from_the_options() -> None:
    verified = parse_url("rediss://h:6380/0")
    assert verified.options.ssl is not None
    assert verified.options.ssl.verify_mode == ssl.CERT_REQUIRED
    assert verified.options.ssl.check_hostname
    lax = parse_url("rediss://h:6380/0?ssl_cert_reqs=none")
    assert lax.options.ssl is not None
    assert lax.options.ssl.verify_mode == ssl.CERT_NONE


def test_unix_cluster_and_sentinel_targets() -> None:
    unix = parse_url("unix://:pw@/run/redis.sock?db=2")
    assert isinstance(unix, SingleTarget)
    assert unix.address == UnixAddress("/run/redis.sock")
    assert (unix.options.db, unix.options.password) == (2, "pw")
    cluster = parse_url("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001")
    assert isinstance(cluster, ClusterTarget)
    assert cluster.nodes == (TcpAddress("10.0.0.1", 7000), TcpAddress("10.0.0.2", 7001))
    sentinel = parse_url(
        "redis+sentinel://:master-pw@s1,s2:26380,[::1]:26381/mymaster/4"
        "?sentinel_password=s-pw&sentinel_username=watcher"
    )
    assert isinstance(sentinel, SentinelTarget)
    assert sentinel.sentinels == (
        TcpAddress("s1", 26379), TcpAddress("s2", 26380), TcpAddress("::1", 26381)
    )  # fmt: skip
    assert (sentinel.service, sentinel.options.db, sentinel.options.password) == (
        "mymaster", 4, "master-pw"
    )  # fmt: skip
    assert (sentinel.sentinel_username, sentinel.sentinel_password) == ("watcher", "s-pw")
    assert "s-pw" not in repr(sentinel)
    assert "master-pw" not in repr(sentinel)


def test_targets_are_frozen() -> None:
    target = parse_url("redis://h")
    assert isinstance(target, SingleTarget)
    with pytest.raises(AttributeError):
        target.address = TcpAddress("elsewhere", 1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("http://h", "url"),
        ("redis://h:99999", "url"),
        ("redis://h/zero", "db"),
        ("redis://h?socket_timeout=soon", "socket_timeout"),
        ("redis://h?socket_timeout=-1", "socket_timeout"),
        ("redis://h?connections=0", "connections"),
        ("redis://h?colour=blue", "url"),
        ("redis://h1,h2", "url"),
        ("redis+cluster://h1:7000,h2", "url"),
        ("redis+cluster://h1:7000/2", "db"),
        ("redis+sentinel://s1:26379", "url"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("rediss://h?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs"),
        ("unix://", "url"),
    ],
)
def test_a_bad_url_is_refused_naming_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_url(url)
    assert error.value.field == field


@pytest.mark.parametrize(
    "url",
    [
        "redis://app:Sup3rSecret@h:99999",
        "redis://h/0?password=Sup3rSecret&colour=blue",
        "redis+sentinel://:Sup3rSecret@s1:26379",
        "redis://app:Sup3r/Secret@h",
    ],
)
def test_messages_never_show_a_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_url(url)
    assert "Sup3r" not in str(error.value)
    assert "Secret" not in str(error.value)


def test_foreign_options_are_accepted_only_when_named() -> None:
    with pytest.raises(ConfigurationError):
        parse_url("redis://h?health_check_interval=30")
    target = parse_url("redis://h?health_check_interval=30", foreign={"health_check_interval"})
    assert isinstance(target, SingleTarget)
