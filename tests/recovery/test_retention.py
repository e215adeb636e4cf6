"""Retention decisions on hand-built histories: restic's keep rules, the seed's
retention_days, chains, the newest verified backup, and policy validation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sergas_guard.errors import ConfigurationError
from sergas_guard.recovery import retention
from sergas_guard.recovery.retention import Candidate, Decision, RetentionPolicy, select

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def backup(
    backup_id: str,
    created_at: datetime,
    backup_type: str = "full",
    parent_id: str | None = None,
    *,
    verified: bool = False,
    retention_days: int | None = None,
) -> Candidate:
    return Candidate(backup_id, created_at, backup_type, parent_id, verified, retention_days)


def decide(candidates: list[Candidate], now: datetime = NOW, **policy: Any) -> dict[str, Decision]:
    policy.setdefault("use_retention_days", False)
    return {d.backup_id: d for d in select(candidates, RetentionPolicy(**policy), now)}


def kept(decisions: dict[str, Decision]) -> set[str]:
    return {backup_id for backup_id, d in decisions.items() if d.keep}


def daily(days: int, *, start: datetime = NOW) -> list[Candidate]:
    """One backup a day at noon, ``d0`` the newest."""
    return [backup(f"d{i}", start - timedelta(days=i)) for i in range(days)]


# --- policy and candidate validation ------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"],
)
@pytest.mark.parametrize("bad", [-1, True, False, 1.5, "3"])
def test_a_count_must_be_a_non_negative_int(field: str, bad: object) -> None:
    values: dict[str, Any] = {field: bad}
    with pytest.raises(ConfigurationError) as raised:
        RetentionPolicy(**values)
    assert raised.value.field == field


@pytest.mark.parametrize("bad", [timedelta(seconds=-1), 7, "7d"])
def test_keep_within_must_be_a_non_negative_timedelta(bad: object) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RetentionPolicy(keep_within=bad)  # type: ignore[arg-type]
    assert raised.value.field == "keep_within"


def test_use_retention_days_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError) as raised:
        RetentionPolicy(use_retention_days=1)  # type: ignore[arg-type]
    assert raised.value.field == "use_retention_days"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"backup_id": ""}, "backup_id"),
        ({"created_at": datetime(2026, 1, 1)}, "created_at"),
        ({"backup_type": "weekly"}, "backup_type"),
        ({"retention_days": -1}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"group": None}, "group"),
    ],
)
def test_a_malformed_candidate_is_refused(changes: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {
        "backup_id": "b",
        "created_at": NOW,
        "backup_type": "full",
        "parent_id": None,
        "verified": False,
        "retention_days": None,
    }
    with pytest.raises(ConfigurationError) as raised:
        Candidate(**(values | changes))
    assert raised.value.field == field


def test_select_refuses_a_naive_now_and_duplicate_ids() -> None:
    with pytest.raises(ConfigurationError) as naive:
        select([], RetentionPolicy(), datetime(2026, 1, 1))
    assert naive.value.field == "now"
    with pytest.raises(ConfigurationError) as duplicate:
        select([backup("a", NOW), backup("a", NOW - timedelta(1))], RetentionPolicy(), NOW)
    assert duplicate.value.field == "candidates"


def test_zero_counts_switch_rules_off_as_in_restic() -> None:
    assert not RetentionPolicy(keep_last=0, keep_within=timedelta(0)).has_keep_rules
    assert kept(decide(daily(3), keep_last=0)) == {"d0", "d1", "d2"}


# --- restic's keep rules ----------------------------------------------------------------


def test_keep_last_keeps_the_newest_n() -> None:
    decisions = decide(daily(5), keep_last=2)
    assert kept(decisions) == {"d0", "d1"}
    assert decisions["d0"].reasons == ("keep_last=2: newest #1",)
    assert decisions["d4"].reasons == ("no keep rule selects it",)


def test_keep_daily_keeps_the_newest_of_each_day_with_backups() -> None:
    # Three a day for four days, then a gap of a week, then one more day.
    history = [
        backup(f"day{day}-{hour}", NOW - timedelta(days=day, hours=hour))
        for day in (0, 1, 2, 3, 10)
        for hour in (0, 2, 4)
    ]
    decisions = decide(history, keep_daily=5)
    # The gap costs nothing: the 5 most recent days that HAVE backups are kept.
    assert kept(decisions) == {"day0-0", "day1-0", "day2-0", "day3-0", "day10-0"}
    assert decisions["day1-0"].reasons == ("keep_daily=5: newest of day 2026-12-06 (UTC)",)


def test_a_rule_with_too_few_periods_keeps_the_oldest_backup_too() -> None:
    # Two months of history, keep_monthly=12: restic keeps each month's newest, and the
    # oldest backup as well, since the rule found fewer months than it asks for.
    history = daily(40, start=datetime(2026, 12, 20, 12, tzinfo=UTC))
    decisions = decide(history, keep_monthly=12)
    assert kept(decisions) == {"d0", "d20", "d39"}
    assert decisions["d39"].reasons == (
        "keep_monthly=12: the oldest backup (only 2 month(s) have backups)",
    )
    # Enough periods: no extra.
    assert kept(decide(history, keep_monthly=2)) == {"d0", "d20"}


@pytest.mark.parametrize(
    ("field", "a", "b", "same"),
    [
        # ISO weeks cross the year: Thu 2026-12-31 and Fri 2027-01-01 are both 2026-W53.
        ("keep_weekly", datetime(2027, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC), True),
        # Sunday and the following Monday are different weeks.
        (
            "keep_weekly",
            datetime(2026, 12, 7, tzinfo=UTC),
            datetime(2026, 12, 6, tzinfo=UTC),
            False,
        ),
        (
            "keep_hourly",
            datetime(2026, 12, 7, 9, 59, tzinfo=UTC),
            datetime(2026, 12, 7, 9, tzinfo=UTC),
            True,
        ),
        (
            "keep_hourly",
            datetime(2026, 12, 7, 10, tzinfo=UTC),
            datetime(2026, 12, 7, 9, 59, tzinfo=UTC),
            False,
        ),
        (
            "keep_monthly",
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2026, 11, 30, 23, tzinfo=UTC),
            False,
        ),
        ("keep_yearly", datetime(2026, 12, 31, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), True),
    ],
)
def test_period_boundaries(field: str, a: datetime, b: datetime, same: bool) -> None:
    # With a count of 2, the older backup is kept exactly when it is in another period
    # (a rule with a free slot left also keeps the oldest; a third, older backup in yet
    # another period takes that place).
    history = [backup("a", a), backup("b", b), backup("old", datetime(2000, 1, 1, tzinfo=UTC))]
    rule: dict[str, Any] = {field: 2}
    assert ("b" in kept(decide(history, **rule))) is not same


def test_periods_are_utc_whatever_the_offset_of_created_at() -> None:
    plus_two = timezone(timedelta(hours=2))
    # 01:00 on the 8th at +02:00 is 23:00 on the 7th in UTC: the same day as 22:00 UTC.
    history = [
        backup("late", datetime(2026, 12, 8, 1, tzinfo=plus_two)),
        backup("earlier", datetime(2026, 12, 7, 22, tzinfo=UTC)),
        backup("old", datetime(2026, 12, 1, tzinfo=UTC)),
    ]
    assert kept(decide(history, keep_daily=2)) == {"late", "old"}


def test_keep_within_counts_from_the_newest_backup_not_from_now() -> None:
    # Backups stopped a year ago; cleanup today must not eat what is left.
    history = daily(10, start=NOW - timedelta(days=365))
    decisions = decide(history, keep_within=timedelta(days=3))
    assert kept(decisions) == {"d0", "d1", "d2", "d3"}
    assert decisions["d3"].reasons[0].startswith("keep_within=3 days")


# --- the seed's retention_days -------------------------------------------------------


def test_retention_days_keeps_a_backup_up_to_its_age_limit() -> None:
    history = [
        backup("young", NOW - timedelta(days=29), retention_days=30),
        backup("boundary", NOW - timedelta(days=30), retention_days=30),
        backup("expired", NOW - timedelta(days=30, microseconds=1), retention_days=30),
        backup("short", NOW - timedelta(days=2), retention_days=1),
        backup("forever", NOW - timedelta(days=999), retention_days=None),
    ]
    decisions = decide(history, use_retention_days=True)
    assert kept(decisions) == {"young", "boundary", "forever"}
    assert re.fullmatch(
        r"retention_days=30: expired at 2026-12-07T11:59:59.999999\+00:00",
        decisions["expired"].reasons[0],
    )
    assert decisions["forever"].reasons == ("no rule of the policy applies to it",)
    assert decisions["young"].reasons == (
        "retention_days=30: kept until 2026-12-08T12:00:00+00:00",
    )


def test_retention_days_and_keep_rules_add_up() -> None:
    history = [
        backup("new", NOW - timedelta(days=1), retention_days=7),
        backup("mid", NOW - timedelta(days=5), retention_days=7),
        backup("old", NOW - timedelta(days=50), retention_days=7),
    ]
    assert kept(decide(history, use_retention_days=True, keep_last=1)) == {"new", "mid"}
    assert kept(decide(history, use_retention_days=False, keep_last=1)) == {"new"}


def test_an_empty_policy_keeps_everything() -> None:
    history = [*daily(4), backup("x", NOW - timedelta(days=90), retention_days=None)]
    for policy in (RetentionPolicy(), RetentionPolicy(use_retention_days=False)):
        decisions = select(history, policy, NOW)
        assert all(d.keep for d in decisions)
        assert all(d.reasons == ("no rule of the policy applies to it",) for d in decisions)


# --- chains and the newest verified backup -------------------------------------------


def test_a_kept_incremental_keeps_its_whole_chain() -> None:
    history = [
        backup("full", NOW - timedelta(days=9)),
        backup("inc1", NOW - timedelta(days=8), "incremental", "full"),
        backup("inc2", NOW - timedelta(days=7), "incremental", "inc1"),
        backup("other", NOW - timedelta(days=6)),
    ]
    decisions = decide(history, keep_within=timedelta(hours=12), keep_last=0)
    assert kept(decisions) == {"other"}
    history.append(backup("inc3", NOW - timedelta(days=5), "incremental", "inc2"))
    decisions = decide(history, keep_last=1)
    assert kept(decisions) == {"inc3", "inc2", "inc1", "full"}
    assert decisions["full"].reasons == ("parent of inc1 (incremental), which is kept",)
    assert decisions["other"].keep is False


def test_a_kept_differential_keeps_its_full_but_a_snapshot_stands_alone() -> None:
    history = [
        backup("full", NOW - timedelta(days=3)),
        backup("diff", NOW - timedelta(days=2), "differential", "full"),
        backup("snap", NOW - timedelta(days=1), "snapshot", "diff"),
    ]
    assert kept(decide(history, keep_last=1)) == {"snap"}
    assert kept(decide(history[:2], keep_last=1)) == {"diff", "full"}


def test_a_missing_or_cyclic_parent_does_not_break_selection() -> None:
    history = [
        backup("orphan", NOW - timedelta(days=2), "incremental", "gone"),
        backup("a", NOW - timedelta(days=1), "incremental", "b"),
        backup("b", NOW, "incremental", "a"),
    ]
    assert kept(decide(history, keep_last=1)) == {"a", "b"}
    assert kept(decide(history, keep_last=3)) == {"a", "b", "orphan"}


def test_the_newest_verified_backup_is_kept_whatever_the_policy() -> None:
    history = [
        backup("checked-old", NOW - timedelta(days=20), verified=True),
        backup("checked", NOW - timedelta(days=10), "incremental", "checked-old", verified=True),
        backup("unchecked", NOW - timedelta(days=1)),
    ]
    decisions = decide(history, keep_last=1)
    assert kept(decisions) == {"unchecked", "checked", "checked-old"}
    assert decisions["checked"].reasons == ("the newest verified backup",)
    assert decisions["checked-old"].reasons == ("parent of checked (incremental), which is kept",)


def test_decisions_come_oldest_first_and_removed_ones_say_why() -> None:
    history = [backup("x", NOW - timedelta(days=40), retention_days=30), *daily(2)]
    decisions = select(history, RetentionPolicy(keep_last=1), NOW)
    assert [d.backup_id for d in decisions] == ["x", "d1", "d0"]
    assert decisions[0].reasons[0].startswith("retention_days=30: expired at")
    assert decisions[1].reasons == ("no keep rule selects it",)


def test_each_group_keeps_its_own_backups() -> None:
    # Hourly application backups must not push the one nightly database backup out.
    app = [
        Candidate(f"app{i}", NOW - timedelta(hours=i), "full", None, False, None, "/data/app")
        for i in range(5)
    ]
    database = Candidate("db", NOW - timedelta(days=1), "full", None, True, None, "/var/db")
    decisions = decide([*app, database], keep_last=2)
    assert kept(decisions) == {"app0", "app1", "db"}
    assert decisions["db"].reasons == ("keep_last=2: newest #1", "the newest verified backup")


# --- the docs section ----------------------------------------------------------------


def test_the_docs_example_runs() -> None:
    doc = retention.__doc__ or ""
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert blocks
    for source in blocks:
        exec(compile(source, "retention docs", "exec"), {"__name__": "docs_example"})
