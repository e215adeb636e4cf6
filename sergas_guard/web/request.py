"""RequestInfo: the framework-free view of a request that key, cost and exempt functions get.

The ASGI and WSGI edges each wrap their native request (``scope`` / ``environ``) in one
of these, so one key function serves both. Everything is read lazily: a key function
that only wants the client address never makes the headers get parsed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from sergas_guard.types import Environ, Scope
from sergas_guard.web.identity import ClientAddressResolver

__all__ = [
    "AsgiRequestInfo",
    "HeaderView",
    "RequestInfo",
    "WsgiRequestInfo",
    "route_path",
    "wsgi_route_path",
]

_DEFAULT_RESOLVER = ClientAddressResolver()


def route_path(path: str, root_path: str) -> str:
    """The ASGI ``path`` below ``root_path``, the part Starlette routes on.

    The root comes off only where it ends at a segment boundary (``/api`` comes off
    ``/api/login`` and ``/api``, not off ``/apix``); a path outside the root is kept
    whole, as Starlette keeps it.
    """
    end = len(root_path)
    if path[end : end + 1] in ("/", "") and path.startswith(root_path):
        return path[end:]
    return path


def wsgi_route_path(path_info: str) -> str:
    """The path werkzeug routes on, from a WSGI ``PATH_INFO``.

    PEP 3333 passes the path's bytes as latin-1 characters; werkzeug and Django decode
    them as UTF-8 (undecodable bytes become U+FFFD here, as in werkzeug). Werkzeug also
    routes ``//login`` as ``/login``: every leading slash but one is dropped.
    """
    path = path_info
    if not path.isascii():
        # A character above U+00FF means a server that decoded the path already.
        with contextlib.suppress(UnicodeEncodeError):
            path = path.encode("latin-1").decode("utf-8", "replace")
    if path[:1] == "/" != path[1:2]:  # one leading slash: the common case, at its cheapest
        return path
    return "/" + path.lstrip("/")


class RequestInfo:
    """Method, path, headers, client address and user of one request.

    ``path`` is the path the application routes on, the one rules match: percent-decoded,
    without the prefix the app is mounted under (ASGI ``root_path``, WSGI
    ``SCRIPT_NAME``). ``method`` is the method as the framework dispatches it: as sent
    under ASGI (Starlette compares it as sent), upper-cased under WSGI and Django.
    ``raw`` is the native object (the ASGI scope or the WSGI environ) for anything else.
    """

    __slots__ = ("_client_ip", "_resolver", "method", "path", "peer", "raw")

    def __init__(
        self,
        raw: Any,
        method: str,
        path: str,
        peer: str | None,
        resolver: ClientAddressResolver | None,
    ) -> None:
        self.raw = raw
        self.method = method
        self.path = path
        self.peer = peer
        self._resolver = resolver or _DEFAULT_RESOLVER
        self._client_ip: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method} {self.path} from {self.peer})"

    def header_values(self, name: str) -> list[str]:
        """Every line of header ``name`` (case-insensitive), in order."""
        raise NotImplementedError

    def header_names(self) -> list[str]:
        """The lower-case names of the headers present, in order (repeats included)."""
        raise NotImplementedError

    @property
    def headers(self) -> HeaderView:
        """The headers as a read-only, case-insensitive mapping (like Starlette's)."""
        return HeaderView(self)

    def header(self, name: str) -> str | None:
        """Header ``name`` (case-insensitive), several lines joined by ``", "``; None if absent."""
        values = self.header_values(name)
        return ", ".join(values) if values else None

    @property
    def client_ip(self) -> str:
        """The client's address (grouped by network prefix for IPv6), proxies resolved."""
        if self._client_ip is None:
            self._client_ip = self._resolver.resolve(self.peer, self.header_values)
        return self._client_ip

    @property
    def user(self) -> Any:
        """The authenticated user the framework attached, or None."""
        raise NotImplementedError


class HeaderView(Mapping[str, str]):
    """Case-insensitive, read-only view of a request's headers (several lines joined)."""

    __slots__ = ("_request",)

    def __init__(self, request: RequestInfo) -> None:
        self._request = request

    def __getitem__(self, name: str) -> str:
        value = self._request.header(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(self._request.header_names()))

    def __len__(self) -> int:
        return len(dict.fromkeys(self._request.header_names()))


class AsgiRequestInfo(RequestInfo):
    """A RequestInfo over an ASGI HTTP or WebSocket scope."""

    __slots__ = ()

    def __init__(self, scope: Scope, resolver: ClientAddressResolver | None = None) -> None:
        # Built for every request: set the slots directly rather than through super().
        client = scope.get("client")
        path = scope["path"]
        root_path = scope.get("root_path")
        if root_path:  # uvicorn --root-path, or an app mounted below another one
            path = route_path(path, root_path)
        self.raw = scope
        self.method = scope.get("method", "GET")
        self.path = path
        self.peer = client[0] if client else None
        self._resolver = resolver or _DEFAULT_RESOLVER
        self._client_ip = None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.raw.get("headers", ()) if k.lower() == wanted]

    def header_names(self) -> list[str]:
        return [k.decode("latin-1").lower() for k, _ in self.raw.get("headers", ())]

    @property
    def user(self) -> Any:
        # Starlette's AuthenticationMiddleware sets scope["user"]; reading a missing key
        # through Request.user would assert, so look at the scope itself.
        return self.raw.get("user")


class WsgiRequestInfo(RequestInfo):
    """A RequestInfo over a WSGI environ."""

    __slots__ = ()

    def __init__(self, environ: Environ, resolver: ClientAddressResolver | None = None) -> None:
        super().__init__(
            environ,
            environ.get("REQUEST_METHOD", "GET").upper(),
            wsgi_route_path(environ.get("PATH_INFO", "")),
            environ.get("REMOTE_ADDR") or None,
            resolver,
        )

    def header_values(self, name: str) -> list[str]:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        # WSGI servers fold repeated header lines into one comma-joined value.
        value = self.raw.get(key)
        return [value] if value else []

    def header_names(self) -> list[str]:
        names = [k[5:] for k in self.raw if k.startswith("HTTP_")]
        names += [k for k in ("CONTENT_TYPE", "CONTENT_LENGTH") if self.raw.get(k)]
        return [name.lower().replace("_", "-") for name in names]

    @property
    def user(self) -> Any:
        return self.raw.get("sergas_guard.user") or self.raw.get("REMOTE_USER")
