"""Generated secrets, the URL/DSN forms they are written in, and the check that none leaks.

A leak is the whole secret, or any head or tail of it of four characters or more,
appearing in a text where the same text with a harmless stand-in for the secret does
not already have it. Heads and tails matter: a scrubber that stops at the first
``@`` of ``app:Pg@TopSecret@h`` hides ``Pg`` and shows ``TopSecret``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote

from hypothesis import strategies as st

from sergas_guard.secrets import REDACTED

MIN_FRAGMENT = 4

# Any printable text, with the characters that end URL parts drawn often.
secrets = st.text(
    st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.sampled_from("@:/?#%&=; '\"\\"),
        st.characters(categories=("L", "N")),
    ),
    min_size=4,
    max_size=24,
).filter(lambda s: REDACTED not in s)  # a secret holding the mask cannot be told from it

# What an HTTP header value can carry: printable ASCII.
header_values = st.text(
    st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E), st.sampled_from("@:/?#%&=; '\"\\")
    ),
    min_size=4,
    max_size=24,
).filter(lambda s: REDACTED not in s)

# A raw "&name=" ends a URL query value for every parser: it cannot be inside one.
NEXT_PARAMETER = re.compile(r"&[A-Za-z_][A-Za-z0-9_.\-]*=")


def raw(secret: str) -> str:
    return secret


def percent_encoded(secret: str) -> str:
    return quote(secret, safe="")


def libpq_quoted(secret: str) -> str:
    escaped = secret.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


@dataclass(frozen=True)
class Form:
    """A URL or DSN with a ``{}`` where the secret goes, written by ``encode``."""

    template: str
    encode: Callable[[str], str] = raw
    in_query: bool = False

    def fits(self, secret: str) -> bool:
        return not (self.in_query and self.encode is raw and NEXT_PARAMETER.search(secret))

    def fill(self, secret: str) -> str:
        return self.template.replace("{}", self.encode(secret))

    def __str__(self) -> str:
        return f"{self.template} ({self.encode.__name__})"


def query(template: str, encode: Callable[[str], str] = raw) -> Form:
    return Form(template, encode, in_query=True)


def stand_in(secret: str) -> str:
    """A harmless secret of the same shape: letters and digits replaced, the rest kept,
    so a URL built with it takes the same path through parsers and validation."""
    return "".join(("7" if ch.isdigit() else "Q") if ch.isalnum() else ch for ch in secret)


_DIGITS = re.compile(r"[0-9]+")


def blur_digits(text: str) -> str:
    """``text`` with each run of digits as ``#``: times, durations and ports change from
    run to run, so outputs are compared (and secrets looked for) without them."""
    return _DIGITS.sub("#", text)


def fragments(secret: str) -> set[str]:
    """The secret, and its heads and tails of at least MIN_FRAGMENT characters."""
    pieces = {secret}
    for cut in range(1, len(secret)):
        pieces.update(piece for piece in (secret[:cut], secret[cut:]) if len(piece) >= MIN_FRAGMENT)
    return pieces


def leaks(
    secret: str,
    texts: Iterable[str],
    known: Iterable[str],
    normalise: Callable[[str], str] = raw,
) -> list[str]:
    """The fragments of ``secret`` found in ``texts`` but in none of ``known``.

    ``known`` holds what the texts say anyway (the same output for :func:`stand_in`,
    the fixed words of a template). Fragments next to the mask are skipped: ``***``
    stands beside what it hides, so ``x*`` could be read into it. ``normalise`` is
    applied to the secret, the texts and ``known`` alike (e.g. :func:`blur_digits`).
    """
    known_text = normalise("\n".join(known))
    texts = [normalise(text) for text in texts]
    spellings = {normalise(secret), normalise(percent_encoded(secret))}
    secret = normalise(secret)
    found = []
    for text in texts:
        for piece in spellings | fragments(secret):
            telling = piece in spellings or ("*" not in piece and piece not in known_text)
            if telling and piece in text:
                found.append(piece)
    return sorted(set(found), key=len, reverse=True)
