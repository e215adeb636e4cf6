"""Scrubbing secrets out of text before it reaches a log, an error or a health report."""

from __future__ import annotations

import re

__all__ = ["scrub"]

# user:password@ in any URL-like DSN (postgresql://, redis://, rediss://, amqp://, http://...).
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@"
)
# key=value secrets in libpq-style DSNs, query strings and log lines.
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|auth)\b\s*[=:]\s*)"
    r"(?P<q>['\"]?)(?P<val>[^\s'\"&;,]+)(?P=q)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<key>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)

REDACTED = "***"


def scrub(text: str, *extra_secrets: str) -> str:
    """Return ``text`` with passwords, tokens and the given literal secrets replaced by ``***``.

    Covers ``scheme://user:password@host`` URLs, ``password=...``-style pairs and
    ``Bearer``/``Basic`` credentials; ``extra_secrets`` are replaced wherever they occur
    (e.g. the password of a DSN that a driver echoed back in its own words).
    """
    for secret in extra_secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['q']}{REDACTED}{m['q']}", text)
    return _BEARER.sub(lambda m: f"{m['key']}{REDACTED}", text)
