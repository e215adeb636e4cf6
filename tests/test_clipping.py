"""clip(): outside values in log lines and messages are one bounded line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sergas_guard.clipping import LOG_VALUE_LIMIT, clip

LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


@given(value=st.text(), limit=st.integers(1, 300))
def test_clipped_text_is_one_bounded_line(value: str, limit: int) -> None:
    shown = clip(value, limit)
    assert not any(mark in shown for mark in LINE_BREAKS)
    assert shown.splitlines() == [shown] or shown == ""
    note = f"… ({len(value)} characters)"
    assert len(shown) <= limit + len(note)
    if len(shown) <= limit:
        assert not shown.endswith(note)


@given(value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_short_printable_text_is_unchanged(value: str) -> None:
    if len(value) <= LOG_VALUE_LIMIT:
        assert clip(value) == value
    else:
        assert clip(value) == value[:LOG_VALUE_LIMIT] + f"… ({len(value)} characters)"


def test_values_that_are_not_text_are_shown_as_str() -> None:
    assert clip({"enabled": False}) == "{'enabled': False}"
    assert clip("a\nb") == "a\\x0ab"
