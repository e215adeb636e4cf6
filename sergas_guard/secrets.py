"""Scrubbing secrets out of text before it leaves the process: errors, logs, reprs, health, CLI.

One scrubber for the whole package. :func:`scrub` finds the sensitive spans of a text
and replaces each with ``***``:

* the password of a URL's userinfo, in any form users write: ``redis://:pw@h``,
  ``mysql://app:Pg@Top Secret@h/db`` (``@``, ``:``, spaces, ``/``...),
  ``redis+cluster://u:pw@h1:1,h2:2``, ``postgresql://u:pw@h1,h2/db``, percent-encoded or
  not. The user name is kept (it helps to read an error and is not a secret);
* values of parameters named like secrets (``password``, ``sslpassword``, ``passwd``,
  ``pwd``, ``secret``, ``client_secret``, ``token``, ``api_key``, ``x-api-key``,
  ``access_key``, ``auth``, ``Authorization``, ``sig``, ``signature``, ``credential``,
  ``cookie``...), in URL queries (``?sentinel_password=...``), libpq DSNs
  (``password='a b\\' c'``), headers (``Authorization: Bearer ...``) and log lines;
* ``Bearer``/``Basic`` credentials wherever they appear;
* every literal given as ``extra_secrets`` (what a component knows it holds: the
  password of its URL as written and percent-decoded, a header's value).

No parser can tell where a secret written raw into a URL ends (a password may hold
``@``, ``/`` or a space), so each rule reaches as far as the secret could: a URL's
userinfo runs to the last ``@`` of its line, a URL query value to the next
``&name=``. When in doubt the scrubber hides more, never less. Spans found by
different rules may overlap; they are merged before replacing, so one rule's guess
cannot leave part of a secret that another rule saw.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from urllib.parse import unquote, unquote_plus, urlsplit

__all__ = [
    "REDACTED",
    "ScrubbingFilter",
    "credentials_problem",
    "is_secret_name",
    "scrub",
    "scrub_url",
    "secrets_of",
    "url_secrets",
    "userinfo",
]

REDACTED = "***"

Span = tuple[int, int]

# The start of any URL: its scheme and "://" (postgresql://, redis+cluster://, https://...).
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
# A name followed by "=" or ":" (optionally after a closing quote, as in {'token': ...},
# escaped when that text was itself quoted by repr()).
_PAIR = re.compile(r"(?<![\w.\-])(?P<key>[A-Za-z0-9_.\-]+)(?:\\?['\"])?[ \t]*(?P<sep>[=:])[ \t]*")
# Parameter names that hold secrets, wherever they sit in the name (sslpassword,
# sentinel_password, x-api-key, client_secret, access_token, X-Amz-Signature...).
_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|auth|credential"
    r"|signature|cookie|session[-_]?id",
    re.IGNORECASE,
)
# Short words only as a whole segment of a name: "sig", "x-sig", "X-Key", not "design"
# or "max_keys".
_SECRET_SEGMENT = re.compile(r"(?:^|[-_.])(?:sig|key)(?:$|[-_.])", re.IGNORECASE)
_EXCEPTION_NAME = re.compile(r"(?:Error|Exception|Warning)$")
# Header names whose whole value is a credential, spaces included ("Basic dXNl...").
_WHOLE_LINE_NAME = re.compile(r"authorization|cookie", re.IGNORECASE)
# The next parameter of a URL query: what ends a value there.
_NEXT_PARAM = re.compile(r"&[A-Za-z_][A-Za-z0-9_.\-]*=")
_WHITESPACE = re.compile(r"\s")
_LINE_END = re.compile(r"[\r\n]")
# HTTP credentials outside a header. Only the capitalised scheme names: "token bucket"
# or "basic limits" in a sentence are not credentials.
_AUTH_SCHEME = re.compile(r"\b(?:Bearer|Basic)[ \t]+(?=[A-Za-z0-9._~+/=\-])")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/=\-]+")
# A value already scrubbed (so scrubbing twice does not swallow the text after it).
_MASKED = re.compile(re.escape(REDACTED) + r"(?=[&'\"\s)\]>,;]|$)")
_AFTER_QUOTE = frozenset(" \t,;)]}>&'\"")
_ESCAPED = re.compile(r"\\(.)")


def scrub(text: str, *extra_secrets: str) -> str:
    """Return ``text`` with every secret it holds replaced by ``***``.

    Covers URL passwords (userinfo in any form, multi-host and Sentinel URLs), values of
    parameters named like secrets (URL queries, libpq DSNs, headers, log lines), HTTP
    auth credentials, and each literal in ``extra_secrets`` wherever it occurs (e.g.
    the password of a DSN that a driver echoed back in its own words). Never raises.
    """
    spans = _merge(sensitive_spans(text, extra_secrets))
    if not spans:
        return text
    parts: list[str] = []
    position = 0
    for start, end in spans:
        parts.append(text[position:start])
        parts.append(REDACTED)
        position = end
    parts.append(text[position:])
    return "".join(parts)


def scrub_url(url: str) -> str:
    """A URL or DSN fit to show: :func:`scrub` with the URL's own :func:`url_secrets`
    (so a password that also appears elsewhere in it, e.g. as the user, is hidden too)."""
    return scrub(url, *url_secrets(url))


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets a URL or DSN carries, as written and decoded, for ``extra_secrets``.

    The userinfo password and the values of secret-named parameters (URL query or libpq
    ``key=value``), each raw, percent-decoded (``%40`` → ``@``, and ``+`` → space in a
    query) and, for a quoted libpq value, unescaped; so a driver echoing any spelling
    of them is scrubbed too. Never raises.
    """
    found: dict[str, None] = {}
    for start, end in sensitive_spans(url, ()):
        raw = url[start:end]
        for spelling in (raw, unquote(raw), unquote_plus(raw), _ESCAPED.sub(r"\1", raw)):
            if spelling and spelling != REDACTED:
                found[spelling] = None
    return tuple(found)


def userinfo(url: str) -> str | None:
    """The ``user:password`` part of a URL as :func:`scrub` reads it (up to the last
    ``@`` of its first line), or None when it has none.

    Drivers end the host part at the first ``/``, ``?`` or ``#``, so when this holds one
    of them a driver would read part of the password as a host, port or path (and might
    echo it in an error): callers refuse such URLs at construction.
    """
    match = _SCHEME.match(url.lstrip())
    if match is None:
        return None
    text = url.lstrip()
    end = _line_end(text, match.end())
    at = text.rfind("@", match.end(), end)
    return text[match.end() : at] if at >= 0 else None


def credentials_problem(url: str, forbidden: str = "/?#") -> str | None:
    """Why a driver would misread ``url`` (and perhaps echo part of its password), or None.

    A URL is misread when its user or password holds one of ``forbidden`` raw (drivers
    end the host part at ``/``, ``?`` or ``#``; asyncpg ends the userinfo at the first
    ``@``), or when the standard parser refuses it (a ``[`` outside an IPv6 address, a
    port that is not a number). The reason names the URL scrubbed; callers raise it as
    their own configuration error at construction.
    """
    shown = scrub_url(url)
    credentials = userinfo(url)
    if credentials is not None and any(char in credentials for char in forbidden):
        listed = " ".join(repr(char) for char in forbidden)
        return (
            f"the user or password in {shown!r} holds one of {listed} (or one follows the "
            "host): percent-encode them in credentials"
        )
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # several hosts: each driver reads the list itself
            _ = parts.port
    except ValueError:
        # Not the parser's words: they quote the bad port, which may be half a password.
        return (
            f"{shown!r} is not a valid URL: a port that is not a number, or a '[' or ']' "
            "outside an IPv6 address (percent-encode them in credentials)"
        )
    return None


def secrets_of(component: object) -> tuple[str, ...]:
    """The literal secrets a component says it holds (its ``secrets()``), or none."""
    method = getattr(component, "secrets", None)
    return tuple(method()) if callable(method) else ()


class ScrubbingFilter(logging.Filter):
    """A logging filter that scrubs each record's message and traceback.

    Our own log lines are scrubbed where they are made; install this on a handler to
    give the same treatment to every other library's lines too::

        handler.addFilter(ScrubbingFilter())

    ``extra_secrets`` are literals to hide as well (a password the application knows).
    """

    def __init__(self, *extra_secrets: str) -> None:
        super().__init__()
        self.extra_secrets = extra_secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage(), *self.extra_secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, *self.extra_secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, *self.extra_secrets)
        return True


def sensitive_spans(text: str, extra_secrets: tuple[str, ...] = ()) -> Iterator[Span]:
    """Every ``(start, end)`` span of ``text`` that holds a secret (they may overlap)."""
    for secret in extra_secrets:
        if secret:
            yield from _occurrences(text, secret)
    yield from _userinfo_spans(text)
    yield from _pair_spans(text)
    yield from _auth_scheme_spans(text)


def _occurrences(text: str, secret: str) -> Iterator[Span]:
    at = text.find(secret)
    while at >= 0:
        yield at, at + len(secret)
        at = text.find(secret, at + 1)


def _line_end(text: str, position: int) -> int:
    found = _LINE_END.search(text, position)
    return found.start() if found else len(text)


def _userinfo_spans(text: str) -> Iterator[Span]:
    # The password runs from the first ':' after "scheme://" to the last '@' of the line:
    # a password may hold '@', '/', ':' or spaces, and only the last '@' is sure to end it.
    line_end = last_at = -1
    for match in _SCHEME.finditer(text):
        start = match.end()
        if line_end < start:  # once per line, however many URLs it holds
            line_end = _line_end(text, start)
            last_at = text.rfind("@", start, line_end)
        if last_at < start:
            continue
        colon = text.find(":", start, last_at)
        if colon >= 0 and colon + 1 < last_at:  # user:password@ or :password@; user@ is kept
            yield colon + 1, last_at


def is_secret_name(name: str) -> bool:
    """Whether a parameter or header named ``name`` holds a secret (``sslpassword``,
    ``X-Api-Key``, ``Authorization``, ``client_secret``, ``sig``...).

    Exception names are not (``InvalidPasswordError: password authentication failed``).
    """
    if _EXCEPTION_NAME.search(name):
        return False
    return bool(_SECRET_NAME.search(name) or _SECRET_SEGMENT.search(name))


def _pair_spans(text: str) -> Iterator[Span]:
    # Values of a run without whitespace, or of a line, end at the same place whichever
    # pair they start at: remembered, so many pairs in one run cost one scan, not one each.
    # A name inside a value already hidden is part of that value ("Top Secret: 1"); skipping
    # it also keeps the work linear when values overlap.
    run_end = line_end = covered = -1
    for match in _PAIR.finditer(text):
        key = match["key"]
        start = match.end()
        if match.start() < covered or not is_secret_name(key):
            continue
        if match["sep"] == ":" and ("." in key or text.startswith("//", start)):
            continue  # "auth.example.com:8080", "token://": a host's port, a scheme
        if line_end < start:
            line_end = _line_end(text, start)
        if start >= line_end:
            continue  # nothing after the separator on this line
        if _MASKED.match(text, start):
            continue  # scrubbed before: leave the text after it alone
        if match.start() > 0 and text[match.start() - 1] in "?&":
            # A URL query: quotes mean nothing there, the next "&name=" ends the value.
            following = _NEXT_PARAM.search(text, start, line_end)
            end = following.start() if following else line_end
        elif text[start] in "'\"":
            end = _quoted_end(text, start, line_end)
            start += 1
        elif _WHOLE_LINE_NAME.search(key) or text.startswith(("\\'", '\\"'), start):
            # "Authorization: Basic dXNl..." is one credential; a value quoted inside
            # quoted text (repr of a repr) has escapes we do not try to pair.
            end = line_end
        else:
            if run_end < start:
                space = _WHITESPACE.search(text, start)
                run_end = space.start() if space else len(text)
            end = run_end  # libpq and log style: an unquoted value ends at whitespace
        if end > start:
            covered = end
            yield start, end


def _quoted_end(text: str, start: int, line_end: int) -> int:
    """Where the value quoted at ``start`` ends: the first same quote followed by a
    delimiter, or the line's end. Escapes may be doubled (a DSN inside a repr()), so a
    value holding a backslash runs to the line's end."""
    quote = text[start]
    for position in range(start + 1, line_end):
        char = text[position]
        if char == "\\":
            return line_end
        if char == quote and (position + 1 == line_end or text[position + 1] in _AFTER_QUOTE):
            return position
    return line_end


def _auth_scheme_spans(text: str) -> Iterator[Span]:
    for match in _AUTH_SCHEME.finditer(text):
        credential = _TOKEN68.match(text, match.end())
        if credential:
            yield credential.span()


def _merge(spans: Iterator[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
