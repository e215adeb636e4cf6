"""Retention invariants as hypothesis properties: whole chains, the newest verified backup,
restic's keep rules, and decisions that depend on the backups, never on their order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.recovery.retention import (
    BACKUP_TYPES,
    Candidate,
    Decision,
    RetentionPolicy,
    select,
)

EPOCH = datetime(2024, 12, 28, tzinfo=UTC)  # near an ISO week-year boundary on purpose
# Offsets that move a backup into another local hour, day, week, month or year than UTC.
ZONES = [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=9, minutes=30))]
# From "all at once" (ties) to years, so every kind of period gets several backups.
SPANS = [0, 60, 6 * 3600, 10 * 86400, 120 * 86400, 4 * 365 * 86400]
# Most histories have one group; some mix two sources in one repository.
GROUPS = ["", "", "", "/var/lib/db"]

counts = st.none() | st.integers(0, 6)
policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.none() | st.integers(0, 2000).map(lambda hours: timedelta(hours=hours)),
    use_retention_days=st.booleans(),
)


@st.composite
def histories(draw: st.DrawFn) -> list[Candidate]:
    span = draw(st.sampled_from(SPANS))
    numbers = draw(st.lists(st.integers(0, 999), max_size=18, unique=True))
    ids = [f"b{number:03d}" for number in numbers]
    history = []
    for backup_id in ids:
        seconds = draw(st.integers(0, span))
        zone = draw(st.sampled_from(ZONES))
        # Parents are drawn from every id (and a missing one), so cycles, self-parents and
        # parents newer than their child are all exercised, as a corrupt repository may hold.
        parent = draw(st.none() | st.sampled_from([*ids, "gone"]))
        history.append(
            Candidate(
                backup_id=backup_id,
                created_at=(EPOCH + timedelta(seconds=seconds)).astimezone(zone),
                backup_type=draw(st.sampled_from(sorted(BACKUP_TYPES))),
                parent_id=parent,
                verified=draw(st.booleans()),
                retention_days=draw(st.none() | st.integers(0, 400)),
                group=draw(st.sampled_from(GROUPS)),
            )
        )
    return history


nows = st.integers(0, 5 * 365 * 86400).map(lambda seconds: EPOCH + timedelta(seconds=seconds))


def newest_first(history: list[Candidate]) -> list[Candidate]:
    return sorted(history, key=lambda c: (c.created_at, c.backup_id), reverse=True)


def by_group(history: list[Candidate]) -> list[list[Candidate]]:
    groups: dict[str, list[Candidate]] = {}
    for c in newest_first(history):
        groups.setdefault(c.group, []).append(c)
    return list(groups.values())


def newest_verified(history: list[Candidate]) -> set[str]:
    """The newest verified backup of each group."""
    found = set()
    for members in by_group(history):
        verified = [c for c in members if c.verified]
        found |= {verified[0].backup_id} if verified else set()
    return found


def kept_ids(decisions: list[Decision]) -> set[str]:
    return {d.backup_id for d in decisions if d.keep}


def with_parents(history: list[Candidate], seeds: set[str]) -> set[str]:
    """``seeds`` and, until nothing changes, the parent of every kept dependent backup."""
    by_id = {c.backup_id: c for c in history}
    kept = set(seeds)
    while True:
        more = {
            by_id[i].parent_id
            for i in kept
            if by_id[i].backup_type in ("incremental", "differential")
            and by_id[i].parent_id in by_id
        }
        if more <= kept:
            return kept
        kept |= {p for p in more if p is not None}


def _utc(c: Candidate) -> datetime:
    return c.created_at.astimezone(UTC)


# The oracle's periods, written independently of the module's string keys.
PERIODS: dict[str, Callable[[Candidate], object]] = {
    "keep_hourly": lambda c: _utc(c).replace(minute=0, second=0, microsecond=0),
    "keep_daily": lambda c: _utc(c).date(),
    "keep_weekly": lambda c: _utc(c).isocalendar()[:2],
    "keep_monthly": lambda c: (_utc(c).year, _utc(c).month),
    "keep_yearly": lambda c: _utc(c).year,
}


def newest_of_recent_periods(history: list[Candidate], field: str, wanted: int) -> set[str]:
    newest: dict[object, Candidate] = {}
    for c in newest_first(history):
        newest.setdefault(PERIODS[field](c), c)  # dicts keep insertion order: newest first
    return {c.backup_id for c in list(newest.values())[:wanted]}


@settings(max_examples=150, deadline=None)
@given(histories(), policies, nows)
def test_one_decision_each_with_reasons_and_chains_stay_whole(
    history: list[Candidate], policy: RetentionPolicy, now: datetime
) -> None:
    decisions = select(history, policy, now)
    assert sorted(d.backup_id for d in decisions) == sorted(c.backup_id for c in history)
    assert all(d.reasons for d in decisions)
    kept = kept_ids(decisions)
    assert with_parents(history, kept) == kept


@settings(max_examples=100, deadline=None)
@given(histories(), policies, nows)
def test_the_newest_verified_backup_is_kept(
    history: list[Candidate], policy: RetentionPolicy, now: datetime
) -> None:
    kept = kept_ids(select(history, policy, now))
    verified = [c for c in newest_first(history) if c.verified]
    if verified:
        assert verified[0].backup_id in kept  # the repository's newest verified
    assert newest_verified(history) <= kept  # and each group's


@settings(max_examples=100, deadline=None)
@given(histories(), policies, nows, st.randoms(use_true_random=False))
def test_decisions_are_deterministic_and_independent_of_input_order(
    history: list[Candidate], policy: RetentionPolicy, now: datetime, rng: Random
) -> None:
    shuffled = list(history)
    rng.shuffle(shuffled)
    assert select(shuffled, policy, now) == select(history, policy, now)


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(1, 8), nows)
def test_keep_last_keeps_exactly_the_newest_n_plus_what_they_need(
    history: list[Candidate], wanted: int, now: datetime
) -> None:
    policy = RetentionPolicy(keep_last=wanted, use_retention_days=False)
    seeds = newest_verified(history)
    for members in by_group(history):
        seeds |= {c.backup_id for c in members[:wanted]}
    assert kept_ids(select(history, policy, now)) == with_parents(history, seeds)


@settings(max_examples=150, deadline=None)
@given(histories(), st.sampled_from(sorted(PERIODS)), st.integers(1, 6), nows)
def test_a_period_rule_keeps_the_newest_of_each_of_its_n_most_recent_periods(
    history: list[Candidate], field: str, wanted: int, now: datetime
) -> None:
    rule: dict[str, int] = {field: wanted}
    kept = kept_ids(select(history, RetentionPolicy(**rule), now))  # type: ignore[arg-type]
    for members in by_group(history):
        assert newest_of_recent_periods(members, field, wanted) <= kept


@settings(max_examples=150, deadline=None)
@given(histories(), policies, nows)
def test_the_kept_set_is_exactly_what_some_rule_asks_for(
    history: list[Candidate], policy: RetentionPolicy, now: datetime
) -> None:
    """Both directions: nothing a rule keeps is removed, nothing else is kept."""
    seeds = newest_verified(history)
    for members in by_group(history):
        seeds |= asked_for(members, policy, now)
    assert kept_ids(select(history, policy, now)) == with_parents(history, seeds)


def asked_for(order: list[Candidate], policy: RetentionPolicy, now: datetime) -> set[str]:
    """What the rules of ``policy`` keep in one group, given newest first."""
    seeds = {c.backup_id for c in order[: policy.keep_last or 0]}
    for field in PERIODS:
        wanted = getattr(policy, field) or 0
        if not wanted:
            continue
        seeds |= newest_of_recent_periods(order, field, wanted)
        if len({PERIODS[field](c) for c in order}) < wanted:
            seeds.add(order[-1].backup_id)  # restic: too few periods keeps the oldest too
    if policy.keep_within:
        newest = order[0].created_at
        seeds |= {c.backup_id for c in order if c.created_at >= newest - policy.keep_within}
    for c in order:
        ages_out = policy.use_retention_days and c.retention_days is not None
        if ages_out and c.created_at + timedelta(days=c.retention_days or 0) >= now:
            seeds.add(c.backup_id)
        if not ages_out and not policy.has_keep_rules:
            seeds.add(c.backup_id)  # no rule applies to it: an empty policy keeps everything
    return seeds


@settings(max_examples=100, deadline=None)
@given(histories(), policies, nows)
def test_groups_are_decided_on_their_own(
    history: list[Candidate], policy: RetentionPolicy, now: datetime
) -> None:
    """Selecting a repository is selecting each group alone, then keeping the parents."""
    alone: set[str] = set()
    for members in by_group(history):
        alone |= kept_ids(select(members, policy, now))
    assert kept_ids(select(history, policy, now)) == with_parents(history, alone)
