"""Values from outside, made safe to put in a log line or a message: one line, bounded.

A value an operator or a client chose (a principal, a flag name, a JSON change) may be
megabytes long or carry a newline that would forge a second log record. :func:`clip`
escapes control characters and cuts the text at a bound, saying how long it was.
"""

from __future__ import annotations

__all__ = ["LOG_VALUE_LIMIT", "clip"]

#: The most characters of one outside value :func:`clip` keeps by default.
LOG_VALUE_LIMIT = 200

# C0 and C1 control characters, DEL and the Unicode line separators: anything a log
# reader might take for the end of a line, written as an escape instead.
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


def clip(value: object, limit: int = LOG_VALUE_LIMIT) -> str:
    """``str(value)`` on one line (control characters escaped), at most ``limit``
    characters followed by a note of the full length when it was longer. Never raises
    for a value whose ``str`` works."""
    text = value if isinstance(value, str) else str(value)
    shown = text[:limit].translate(_ESCAPES)
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}… ({len(text)} characters)"
