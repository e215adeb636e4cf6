"""Evaluation rules of one flag, and the JSON document form."""

from __future__ import annotations

import json

import pytest

from sergas_guard.degradation.definitions import (
    FlagDefinition,
    dump_document,
    evaluate,
    parse_document,
    user_id_from,
)
from sergas_guard.degradation.levels import DegradationLevel, parse_level
from sergas_guard.errors import ConfigurationError

NORMAL = DegradationLevel.NORMAL


def test_unknown_flag_gives_the_default() -> None:
    assert evaluate(None, "x", "u", NORMAL).enabled is False
    assert evaluate(None, "x", "u", NORMAL, default=True).reason == "unknown"
    assert evaluate(None, "x", "u", NORMAL, default=True).enabled is True


def test_disabled_flag_is_off_even_for_allowed_users() -> None:
    flag = FlagDefinition(name="x", enabled=False, allow_users=("vip",))
    assert evaluate(flag, "x", "vip").reason == "disabled"


def test_deny_wins_over_allow_and_rollout() -> None:
    flag = FlagDefinition(name="x", deny_users=("bad",), allow_users=("vip",))
    assert evaluate(flag, "x", "bad").enabled is False
    assert evaluate(flag, "x", "bad").reason == "denied"
    assert evaluate(flag, "x", "vip").reason == "allowed"


def test_allow_list_overrides_a_zero_rollout() -> None:
    flag = FlagDefinition(name="x", rollout_percentage=0.0, allow_users=("vip",))
    assert evaluate(flag, "x", "vip").enabled
    assert not evaluate(flag, "x", "someone").enabled


@pytest.mark.parametrize(
    ("essential", "level", "expected"),
    [
        (False, DegradationLevel.NORMAL, True),
        (False, DegradationLevel.DEGRADED, False),
        (False, DegradationLevel.CRITICAL, False),
        (False, DegradationLevel.MAINTENANCE, False),
        (True, DegradationLevel.DEGRADED, True),
        (True, DegradationLevel.CRITICAL, True),
        (True, DegradationLevel.MAINTENANCE, True),
    ],
)
def test_degradation_turns_off_only_non_essential_flags(
    essential: bool, level: DegradationLevel, expected: bool
) -> None:
    flag = FlagDefinition(name="x", essential=essential)
    assert evaluate(flag, "x", "u", level).enabled is expected


def test_calls_without_a_user_id_are_on_only_at_full_rollout() -> None:
    full = FlagDefinition(name="x")
    partial = FlagDefinition(name="x", rollout_percentage=99.99)
    assert evaluate(full, "x", None).enabled
    assert evaluate(partial, "x", None).reason == "no_user_id"
    assert not evaluate(partial, "x", None).enabled


def test_user_id_comes_from_argument_then_context() -> None:
    assert user_id_from("a", {"user_id": "b"}) == "a"
    assert user_id_from(None, {"user_id": "b", "targeting_key": "c"}) == "b"
    assert user_id_from(None, {"targeting_key": "c"}) == "c"
    assert user_id_from(42, None) == "42"
    assert user_id_from("", None) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rollout_percentage", 100.5),
        ("rollout_percentage", -1),
        ("name", ""),
        ("allow_users", "just-one-string"),
        ("enabled", "maybe"),
    ],
)
def test_invalid_definitions_are_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        FlagDefinition(**{"name": "x", field: value})
    assert info.value.field == field


def test_with_changes_validates_and_refuses_renames() -> None:
    flag = FlagDefinition(name="x")
    assert flag.with_changes(rollout_percentage=12.5).rollout_percentage == 12.5
    with pytest.raises(ConfigurationError):
        flag.with_changes(rollout_percentage=101)
    with pytest.raises(ConfigurationError):
        flag.with_changes(name="y")
    with pytest.raises(ConfigurationError):
        flag.with_changes(colour="red")


def test_document_round_trip() -> None:
    flags = {
        "a": FlagDefinition(name="a", rollout_percentage=12.34, allow_users=("u2", "u1")),
        "b": FlagDefinition(name="b", enabled=False, essential=True, description="core"),
    }
    data = dump_document(flags)
    assert json.loads(data)["version"] == 1
    assert parse_document(data, "test") == flags
    assert flags["a"].allow_users == ("u1", "u2")  # sorted, de-duplicated


def test_bare_mapping_documents_are_accepted() -> None:
    parsed = parse_document('{"search": {"enabled": false}}', "test")
    assert parsed["search"] == FlagDefinition(name="search", enabled=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object of flags"),
        ('{"flags": {"a": 3}}', "flag 'a' must be a JSON object"),
        ('{"flags": {"a": {"rollout_percentage": 150}}}', "flag 'a'"),
        ('{"flags": {"a": {"name": "b"}}}', "different name"),
    ],
)
def test_malformed_documents_get_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_document(text, "flags file /x.json")
    assert "/x.json" in str(info.value)


def test_levels_parse_and_order() -> None:
    assert parse_level("degraded") is DegradationLevel.DEGRADED
    assert parse_level("CRITICAL") is DegradationLevel.CRITICAL
    assert parse_level(3) is DegradationLevel.MAINTENANCE
    assert (
        DegradationLevel.NORMAL
        < DegradationLevel.DEGRADED
        < DegradationLevel.CRITICAL
        < DegradationLevel.MAINTENANCE
    )
    with pytest.raises(ValueError, match="unknown degradation level"):
        parse_level("panic")
    with pytest.raises(ValueError, match="unknown degradation level"):
        parse_level(True)
