"""The rules and the framework's router agree: a request that reaches a limited handler is
always counted against that handler's rule (issue 12, findings 1-3).

Real servers, one per framework and deployment for the module: Starlette and FastAPI
under uvicorn (plain, ``--root-path``, the middleware on a sub-app mounted at ``/v1``),
Flask under werkzeug's server (plain, and mounted at ``/v1`` by werkzeug's dispatcher),
Django's WSGI app under werkzeug and its ASGI app under uvicorn. Requests go over raw
sockets, since HTTP clients normalise the paths an attacker would not. The oracle: each
handler names itself in an ``x-handler`` header, and the ``RateLimit-Policy`` header
names the rule that counted the request. Every rule allows 5 a minute per client and
each generated request comes from a client of its own, so no rejection hides a handler.
"""

from __future__ import annotations

import contextlib
import socket
import string
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import path as django_path
from django.views.decorators.http import require_http_methods
from fastapi import FastAPI
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from sergas_guard.asgi import RateLimitMiddleware as AsgiRateLimit
from sergas_guard.storage import MemoryStorage
from sergas_guard.web import RequestInfo, Rule
from sergas_guard.web.request import AsgiRequestInfo, WsgiRequestInfo
from sergas_guard.web.rules import RuleSet, compile_path
from sergas_guard.wsgi import RateLimitMiddleware as WsgiRateLimit
from tests.web import django_project
from tests.web.conftest import serving, wsgi_serving
from tests.web.django_project import RATE_LIMIT

django_project.configure()

LIMIT = "5/minute"


@dataclass(frozen=True)
class Handler:
    """One route of the test apps, in each framework's syntax, and the policy counting it."""

    name: str
    methods: tuple[str, ...]
    starlette: str
    flask: str
    django: str
    policy: str  # the name of the rule limiting it ("default": no rule, the default limits)


HANDLERS = (
    Handler("login", ("POST",), "/login", "/login", "login", "login"),
    Handler("item", ("GET",), "/items/{id:int}", "/items/<int:id>", "items/<int:id>", "item"),
    Handler("files", ("GET", "PUT"), "/files/{p:path}", "/files/<path:p>", "files/<path:p>",
            "files"),
    Handler("admin", ("GET",), "/admin", "/admin", "admin", "admin"),
    Handler("admin_below", ("GET",), "/admin/{rest:path}", "/admin/<path:rest>",
            "admin/<path:rest>", "admin"),
    Handler("user", ("GET", "DELETE"), "/users/{name}", "/users/<name>", "users/<str:name>",
            "user"),
    Handler("cafe", ("GET",), "/café", "/café", "café", "cafe"),
    Handler("free", ("GET", "POST"), "/free", "/free", "free", "default"),
)  # fmt: skip

RULES = [
    Rule("/login", LIMIT, methods="POST", name="login"),
    Rule("/items/{id:int}", LIMIT, methods="GET", name="item"),
    Rule("/files/{p:path}", LIMIT, name="files"),
    Rule("/admin/*", LIMIT, name="admin"),
    Rule("/users/{name}", LIMIT, methods=["GET", "DELETE"], name="user"),
    Rule("/café", LIMIT, name="cafe"),
]

#: The policy each handler's requests must be counted under.
POLICY = {h.name: h.policy for h in HANDLERS}


def by_client_header(request: RequestInfo) -> str:
    """Each test request names its client, so budgets never mix between examples."""
    return request.header("x-client") or "anonymous"


OPTIONS: dict[str, Any] = {
    "default_limits": "1000/minute",
    "rules": RULES,
    "key_func": by_client_header,
}


# --- the apps ---------------------------------------------------------------------


def asgi_handler(name: str) -> Callable[[Request], Response]:
    def run(request: Request) -> Response:
        return Response(name, headers={"x-handler": name})

    return run


def starlette_app() -> Starlette:
    routes = [Route(h.starlette, asgi_handler(h.name), methods=list(h.methods)) for h in HANDLERS]
    return Starlette(routes=routes, middleware=[Middleware(AsgiRateLimit, **OPTIONS)])


def fastapi_app() -> FastAPI:
    app = FastAPI()
    for h in HANDLERS:
        app.add_api_route(h.starlette, asgi_handler(h.name), methods=list(h.methods))
    app.add_middleware(AsgiRateLimit, **OPTIONS)
    return app


def mounted(app: Any, parent: Any) -> Any:
    """``parent`` serving ``app`` (which holds the middleware) below ``/v1``."""
    parent.mount("/v1", app)
    return parent


def flask_app() -> Flask:
    def handler(name: str) -> Callable[..., tuple[str, dict[str, str]]]:
        def run(**_: Any) -> tuple[str, dict[str, str]]:
            return name, {"x-handler": name}

        return run

    app = Flask(__name__)
    for h in HANDLERS:
        app.add_url_rule(h.flask, h.name, handler(h.name), methods=list(h.methods))
    app.wsgi_app = WsgiRateLimit(app.wsgi_app, **OPTIONS)  # type: ignore[method-assign]
    return app


def django_urls() -> Any:
    def view(name: str, methods: tuple[str, ...]) -> Callable[..., HttpResponse]:
        def run(request: HttpRequest, **_: Any) -> HttpResponse:
            return HttpResponse(name, headers={"x-handler": name})

        allowed = {*methods, "HEAD"} if "GET" in methods else set(methods)
        guarded: Callable[..., HttpResponse] = require_http_methods(sorted(allowed))(run)
        return guarded

    patterns = [django_path(h.django, view(h.name, h.methods)) for h in HANDLERS]
    return django_project.urlconf_module("tests.web.route_agreement_urls", patterns)


# --- the servers ------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    #: What goes before a handler's path in a request: the mount point, or nothing.
    prefixes: tuple[str, ...] = ("",)


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


MOUNT_PREFIXES = ("/v1", "/v1", "/v1/", "", "/V1", "//v1", "/v1%2F", "/v1/.")
ROOT_PREFIXES = ("", "", "/api")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    """Every deployment, served for the whole module."""
    # The Django apps build their middleware from these settings when created, and
    # resolve ROOT_URLCONF on every request: the override stays on for the module.
    django_settings = override_settings(
        MIDDLEWARE=[RATE_LIMIT], ROOT_URLCONF=django_urls(), SERGAS_GUARD_RATELIMIT=OPTIONS
    )
    django_settings.enable()
    found: dict[str, Server] = {}
    try:
        with contextlib.ExitStack() as stack:

            def uvicorn(
                name: str, app: Any, prefixes: tuple[str, ...] = ("",), **config: Any
            ) -> None:
                config.setdefault("http", "h11")  # h11 passes lower-case methods on
                base = stack.enter_context(serving(app, **config))
                found[name] = Server(name, port_of(base), prefixes)

            def wsgi(name: str, app: Any, prefixes: tuple[str, ...] = ("",)) -> None:
                base = stack.enter_context(wsgi_serving(app))
                found[name] = Server(name, port_of(base), prefixes)

            uvicorn("starlette", starlette_app())
            uvicorn("starlette --root-path", starlette_app(), ROOT_PREFIXES, root_path="/api")
            uvicorn("starlette mounted", mounted(starlette_app(), Starlette()), MOUNT_PREFIXES)
            uvicorn("fastapi", fastapi_app(), http="auto")  # httptools when installed
            uvicorn("fastapi --root-path", fastapi_app(), ROOT_PREFIXES, root_path="/api")
            uvicorn("fastapi mounted", mounted(fastapi_app(), FastAPI()), MOUNT_PREFIXES)
            uvicorn("django asgi", get_asgi_application())
            uvicorn("django asgi --root-path", get_asgi_application(), ROOT_PREFIXES,
                    root_path="/api")  # fmt: skip
            wsgi("flask", flask_app())
            wsgi("flask mounted", DispatcherMiddleware(Flask("root"), {"/v1": flask_app()}),
                 MOUNT_PREFIXES)  # fmt: skip
            wsgi("django wsgi", get_wsgi_application())
            yield found
    finally:
        django_settings.disable()


SERVERS = (
    "starlette",
    "starlette --root-path",
    "starlette mounted",
    "fastapi",
    "fastapi --root-path",
    "fastapi mounted",
    "django asgi",
    "django asgi --root-path",
    "flask",
    "flask mounted",
    "django wsgi",
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]

    @property
    def handler(self) -> str | None:
        """The handler that ran, or None (a 404, 405, redirect, 400 or 429)."""
        return self.headers.get("x-handler")

    @property
    def policy(self) -> str | None:
        """The first policy of the RateLimit-Policy header: the rule that counted it."""
        value = self.headers.get("ratelimit-policy")
        return value.split('"')[1] if value else None


def send(server: Server, method: str, target: str, client: str) -> Answer:
    """One request, bytes as given: nothing on the way normalises the target."""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Client: {client}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode("ascii"))
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers)


def burst(server: Server, method: str, target: str, count: int = 12) -> list[Answer]:
    """``count`` identical requests from one new client."""
    client = uuid.uuid4().hex
    return [send(server, method, target, client) for _ in range(count)]


def assert_counted(answer: Answer, where: str) -> None:
    assert answer.status < 500, f"{where}: {answer.status}"
    if answer.handler is not None:
        assert answer.policy == POLICY[answer.handler], (
            f"{where} ran {answer.handler!r} counted under {answer.policy!r}"
        )


# --- one regression test per finding ----------------------------------------------


@pytest.mark.parametrize("server", ["starlette", "fastapi"])
@pytest.mark.parametrize(
    ("target", "handler"),
    [
        ("/login%0A", "login"),
        ("/items/12%0A", "item"),
        ("/files/a%0A", "files"),
        ("/admin%0A", "admin"),
    ],
)
def test_finding_1_a_final_newline_is_counted(
    servers: dict[str, Server], server: str, target: str, handler: str
) -> None:
    """Starlette's route regexes end in ``$``, which matches before a final newline."""
    method = "POST" if handler == "login" else "GET"
    answers = burst(servers[server], method, target)
    assert [a.handler for a in answers] == [handler] * 5 + [None] * 7
    assert [a.status for a in answers[5:]] == [429] * 7
    assert {a.policy for a in answers} == {POLICY[handler]}


@pytest.mark.parametrize("server", ["flask", "django wsgi", "django asgi"])
@pytest.mark.parametrize("method", ["post", "Post", "pOST"])
def test_finding_2_a_lower_case_method_is_counted(
    servers: dict[str, Server], server: str, method: str
) -> None:
    """werkzeug and Django upper-case the method: ``post /login`` runs the POST view."""
    answers = burst(servers[server], method, "/login")
    assert [a.handler for a in answers] == ["login"] * 5 + [None] * 7
    assert [a.status for a in answers[5:]] == [429] * 7


@pytest.mark.parametrize(
    ("server", "target"),
    [
        ("starlette --root-path", "/login"),
        ("fastapi --root-path", "/login"),
        ("django asgi --root-path", "/login"),
        ("starlette mounted", "/v1/login"),
        ("fastapi mounted", "/v1/login"),
        ("flask mounted", "/v1/login"),
    ],
)
def test_finding_3_the_path_below_the_root_is_matched(
    servers: dict[str, Server], server: str, target: str
) -> None:
    """Under ``--root-path`` or a mount, the app routes on the path below the root; the
    ASGI edge matches that path, as the WSGI edge matches ``PATH_INFO``."""
    answers = burst(servers[server], "POST", target)
    assert [a.handler for a in answers] == ["login"] * 5 + [None] * 7
    assert {a.policy for a in answers} == {"login"}


# --- the property -----------------------------------------------------------------

SEGMENT = st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=5)
DIGITS = st.sampled_from(["0", "12", "007", "%D9%A1%D9%A2", "%EF%BC%93", "1x", "-1", ""])
ANY_METHOD = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")

#: Paths built from the rules' patterns, each with the methods its handler answers.
HANDLER_PATHS = st.one_of(
    st.just(("/login", ("POST",))),
    DIGITS.map(lambda digits: (f"/items/{digits}", ("GET", "HEAD"))),
    st.lists(SEGMENT, max_size=3).map(lambda parts: ("/files/" + "/".join(parts), ("PUT",))),
    st.lists(SEGMENT, max_size=2).map(
        lambda parts: ("/admin" + "".join(f"/{p}" for p in parts), ("GET",))
    ),
    SEGMENT.map(lambda name: (f"/users/{name}", ("DELETE", "GET"))),
    st.sampled_from(["/caf%C3%A9", "/CAF%C3%89", "/caf%C3"]).map(lambda p: (p, ("GET",))),
    st.just(("/free", ("POST",))),
    SEGMENT.map(lambda name: (f"/{name}", ANY_METHOD)),
)
ODD_ENDINGS = ("%0A", "%0D", "%00", "%09", "%20", "/", "%0A%0A", "%0D%0A", "%2F", "/.", "/..")
ODD_STARTS = ("//", "///", "////", "/a/..", "/.", "/%2E", "http://127.0.0.1")


def _letter_at(path: str, at: int) -> int | None:
    letters = [i for i, c in enumerate(path) if c.isalpha()]
    return letters[at % len(letters)] if letters else None


def _change_case(path: str, at: int) -> str:
    i = _letter_at(path, at)
    return path if i is None else path[:i] + path[i].swapcase() + path[i + 1 :]


def _percent_encode(path: str, at: int) -> str:
    i = _letter_at(path, at)
    return path if i is None else f"{path[:i]}%{ord(path[i]):02X}{path[i + 1 :]}"


def _nth_slash(path: str, at: int, replacement: str) -> str:
    slashes = [i for i, c in enumerate(path) if c == "/"][1:] or [0]
    i = slashes[at % len(slashes)]
    return path[:i] + replacement + path[i + 1 :]


MUTATIONS: dict[str, Callable[[str, int], str]] = {
    "start": lambda p, n: ODD_STARTS[n % len(ODD_STARTS)] + p,
    "case": _change_case,
    "encoded letter": _percent_encode,
    "encoded slash": lambda p, n: _nth_slash(p, n, "%2F"),
    "double slash": lambda p, n: _nth_slash(p, n, "//"),
    "inner newline": lambda p, n: _nth_slash(p, n, "%0A/"),
}


@st.composite
def requests(draw: st.DrawFn, prefixes: tuple[str, ...]) -> tuple[str, str]:
    """A method and a request target: often one a handler answers, made odd."""
    path, answered = draw(HANDLER_PATHS)
    for mutation in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=2)):
        path = MUTATIONS[mutation](path, draw(st.integers(0, 50)))
    path += draw(st.one_of(st.just(""), st.sampled_from(ODD_ENDINGS)))
    prefix: str = draw(st.sampled_from(prefixes))
    method: str = draw(st.sampled_from(answered + ANY_METHOD))
    if draw(st.booleans()):
        flips = draw(st.lists(st.booleans(), min_size=len(method), max_size=len(method)))
        method = "".join(c.lower() if flip else c for c, flip in zip(method, flips, strict=True))
    return method, prefix + path


@pytest.mark.parametrize("server", SERVERS)
def test_a_request_reaching_a_handler_is_counted_against_its_rule(
    servers: dict[str, Server], server: str
) -> None:
    served = servers[server]

    @settings(max_examples=60, deadline=None, database=None)
    @given(request=requests(served.prefixes))
    def check(request: tuple[str, str]) -> None:
        method, target = request
        answer = send(served, method, target, uuid.uuid4().hex)
        assert_counted(answer, f"{server}: {method} {target}")

    check()


# --- the pieces, in process ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root_path", "routed"),
    [
        ("/api/login", "/api", "/login"),
        ("/api", "/api", ""),
        ("/apix/login", "/api", "/apix/login"),  # not below the root: kept whole
        ("/login", "/api", "/login"),
        ("/v1/login", "", "/v1/login"),
    ],
)
def test_asgi_path_is_below_root_path(path: str, root_path: str, routed: str) -> None:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path}
    assert AsgiRequestInfo(scope).path == routed


@pytest.mark.parametrize(
    ("path_info", "routed"),
    [
        ("/caf\xc3\xa9", "/café"),  # PEP 3333: UTF-8 bytes as latin-1 characters
        ("/caf\xc3", "/caf\ufffd"),
        ("//login", "/login"),  # werkzeug routes it as /login
        ("", "/"),
        ("login", "/login"),
        ("/a//b", "/a//b"),
    ],
)
def test_wsgi_path_is_the_path_werkzeug_routes_on(path_info: str, routed: str) -> None:
    info = WsgiRequestInfo({"REQUEST_METHOD": "post", "PATH_INFO": path_info})
    assert (info.path, info.method) == (routed, "POST")


def test_rules_compare_methods_case_insensitively() -> None:
    ruleset = RuleSet(
        [Rule("/login", LIMIT, methods="POST", name="login")],
        "1000/minute",
        storage=MemoryStorage(),
        key=by_client_header,
        strategy=None,
        shadow=False,
        on_storage_error=None,
        clock=None,
    )
    assert {ruleset.match(m, "/login").name for m in ("POST", "post", "pOsT")} == {"login"}
    assert ruleset.match("GET", "/login").name == "default"


def test_the_match_cache_holds_no_long_paths() -> None:
    """Clients choose the paths: a flood of long distinct ones must not stay in memory."""
    ruleset = RuleSet(
        [Rule("/items/{id}", LIMIT), Rule("/files/{p:path}", LIMIT)],
        "1000/minute",
        storage=MemoryStorage(),
        key=by_client_header,
        strategy=None,
        shadow=False,
        on_storage_error=None,
        clock=None,
    )
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(3000):
            path = f"/files/{n}/" + "x" * 4000
            assert ruleset.match("GET", path).name == "/files/{p:path}"
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, f"{held} bytes held after 3000 paths of 4 KB"
    assert compile_path("/files/{p:path}")("/files/" + "x" * 4000)
