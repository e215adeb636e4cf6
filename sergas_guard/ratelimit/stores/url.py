"""Choosing a storage by URL, as limits and Flask-Limiter users already do."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sergas_guard.errors import ConfigurationError
from sergas_guard.secrets import credentials_problem, scrub_url

__all__ = ["storage_from_url"]

_REDIS_SCHEMES = {
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
    "unix",
}


def storage_from_url(url: str, **options: Any) -> Any:
    """Build the storage a URL names; ``options`` go to its constructor.

    ``memory://`` (optionally ``memory://?max_keys=50000``) gives a
    :class:`~sergas_guard.storage.MemoryStorage`; ``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://h1:p1,h2:p2`` and ``redis+sentinel://s1:p1,s2:p2/service`` give a
    :class:`~sergas_guard.storage.RedisStorage` (see :func:`sergas_guard.redis.parse_url`).
    Raises ConfigurationError for any other scheme, a malformed URL or a bad option; its
    message shows the URL with every secret in it replaced by ``***``.
    """
    if not isinstance(url, str):
        raise ConfigurationError(
            f"a storage URL must be a string, not {type(url).__name__}", field="storage"
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from sergas_guard.ratelimit.stores.memory import MemoryStorage

        problem = credentials_problem(url, forbidden="")  # only what the parser refuses
        if problem:
            raise ConfigurationError(problem, field="storage")
        query = dict(parse_qsl(urlsplit(url).query))
        if "max_keys" in query:
            try:
                options.setdefault("max_keys", int(query["max_keys"]))
            except ValueError:
                raise ConfigurationError(
                    f"max_keys in {scrub_url(url)!r} must be a whole number", field="max_keys"
                ) from None
        return MemoryStorage(**options)
    if scheme in _REDIS_SCHEMES:
        from sergas_guard.ratelimit.stores.redis import RedisStorage

        return RedisStorage(url, **options)
    raise ConfigurationError(
        f"unknown storage URL {scrub_url(url)!r}: expected memory://, redis://, rediss://, "
        "unix://, redis+cluster:// or redis+sentinel://",
        field="storage",
    )
