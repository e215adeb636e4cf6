"""Which backups a retention policy keeps, and why: a pure function, no I/O, no clock.

The section below is written for ``docs/recovery.md``.

## Retention

`cleanup` decides which backups to keep with `retention.select(candidates, policy, now)`.
A backup is **kept when any rule keeps it**; every decision, kept or removed, lists its
reasons, and `cleanup` prints them on its dry run.

| rule | keeps |
| --- | --- |
| `keep_last=n` | the `n` newest backups |
| `keep_hourly=n` | the newest backup of each of the `n` most recent hours that have one |
| `keep_daily=n` | the same per calendar day |
| `keep_weekly=n` | the same per ISO week (Monday to Sunday, ISO week-numbering year) |
| `keep_monthly=n` | the same per calendar month |
| `keep_yearly=n` | the same per calendar year |
| `keep_within=d` | every backup created at most `d` before the **newest backup** (not before now) |
| `retention_days` | each backup while it is younger than its own `retention_days` |

`retention_days` is the one given to `create_backup` and stored in each backup's manifest
(the seed's rule: a backup created at or after `now - retention_days` stays);
`use_retention_days=False` ignores it.

The rules apply to each **group** of backups on its own, as restic's `forget --group-by`
does: `Candidate.group` names it (e.g. the backup's source), so frequent
backups of one source never push the only backups of another out of `keep_last`.

These are restic's `forget --keep-*` semantics. Periods ("hours that have one") count only
periods in which a backup exists, so a week without backups does not use up a `keep_daily`
slot. When a period rule finds fewer periods than it asks for, the **oldest** backup is kept
as well, as restic does: a young repository keeps its first backup. `keep_within` counts from
the newest backup rather than from now so that, when backups stop (a broken cron job), running
cleanup never eats the history that remains. Periods are computed in UTC. A count of `0` (or
`None`) switches a rule off, again as in restic.

Three guarantees hold whatever the policy says:

- **Chains stay whole.** A kept incremental or differential backup keeps the backup it was
  taken against (`parent_id`), and that one its own parent, up to the chain's full backup.
- **The newest verified backup is kept** (in every group), so cleanup can never leave you
  with only backups that nobody has checked.
- **No rule, no removal.** A policy without any `keep_*` rule, applied to backups without
  `retention_days` (or with `use_retention_days=False`), keeps everything, as restic's
  `forget` does without a policy.

The policy is checked when it is built: a negative count, a `bool` or a float where a count
belongs, or a negative `keep_within` raises `ConfigurationError` naming the field.

```python
from datetime import UTC, datetime, timedelta
from sergas_guard.recovery.retention import Candidate, RetentionPolicy, select

now = datetime(2026, 12, 7, 12, tzinfo=UTC)
ago = lambda days: now - timedelta(days=days)
full = Candidate("f1", ago(40), "full", None, verified=True, retention_days=30)
incr = Candidate("i1", ago(39), "incremental", "f1", verified=False, retention_days=30)
last = Candidate("f2", ago(1), "full", None, verified=False, retention_days=30)
policy = RetentionPolicy(keep_last=2)
decisions = {d.backup_id: d for d in select([full, incr, last], policy, now)}
assert decisions["f2"].keep and decisions["i1"].keep
assert decisions["f1"].keep  # parent of a kept incremental, and the newest verified backup
assert any("parent of i1" in reason for reason in decisions["f1"].reasons)
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sergas_guard.errors import ConfigurationError

__all__ = ["BACKUP_TYPES", "Candidate", "Decision", "RetentionPolicy", "select"]

#: The backup types a candidate may have (``BackupType`` values).
BACKUP_TYPES = frozenset({"full", "incremental", "differential", "snapshot"})
# The types whose restore-time meaning depends on their parent (pgBackRest's chains).
_DEPENDENT_TYPES = frozenset({"incremental", "differential"})


def _is_count(value: object) -> bool:
    # bool is an int subclass: keep_last=True is a typo, not "keep 1".
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Candidate:
    """One backup as retention sees it.

    Raises ConfigurationError (naming the field) for an empty ``backup_id``, a naive
    ``created_at``, an unknown ``backup_type``, a negative ``retention_days`` or a
    ``group`` that is not a string.
    """

    backup_id: str
    created_at: datetime
    backup_type: str
    parent_id: str | None
    verified: bool
    retention_days: int | None
    #: Backups of one thing (e.g. one source), to which the keep rules apply together.
    group: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.backup_id, str) or not self.backup_id:
            raise ConfigurationError("backup_id must be a non-empty string", field="backup_id")
        if not isinstance(self.created_at, datetime) or self.created_at.utcoffset() is None:
            raise ConfigurationError(
                "created_at must be a timezone-aware datetime", field="created_at"
            )
        if self.backup_type not in BACKUP_TYPES:
            raise ConfigurationError(
                f"backup_type must be one of {sorted(BACKUP_TYPES)}, not {self.backup_type!r}",
                field="backup_type",
            )
        if self.retention_days is not None and (
            not _is_count(self.retention_days) or self.retention_days < 0
        ):
            raise ConfigurationError(
                "retention_days must be a non-negative integer or None", field="retention_days"
            )
        if not isinstance(self.group, str):
            raise ConfigurationError("group must be a string", field="group")


_COUNT_FIELDS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)


@dataclass(frozen=True)
class RetentionPolicy:
    """restic-style ``keep_*`` rules plus the per-backup ``retention_days``.

    Raises ConfigurationError naming the field for a count that is negative or not an
    ``int`` (``bool`` included), a ``keep_within`` that is not a non-negative
    ``timedelta``, or a ``use_retention_days`` that is not a ``bool``.
    """

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: timedelta | None = None
    use_retention_days: bool = True

    def __post_init__(self) -> None:
        for name in _COUNT_FIELDS:
            value = getattr(self, name)
            if value is not None and (not _is_count(value) or value < 0):
                raise ConfigurationError(
                    f"{name} must be a non-negative integer or None, not {value!r}", field=name
                )
        within = self.keep_within
        if within is not None and (not isinstance(within, timedelta) or within < timedelta(0)):
            raise ConfigurationError(
                f"keep_within must be a non-negative timedelta or None, not {within!r}",
                field="keep_within",
            )
        if not isinstance(self.use_retention_days, bool):
            raise ConfigurationError(
                "use_retention_days must be a bool", field="use_retention_days"
            )

    @property
    def has_keep_rules(self) -> bool:
        """True when some ``keep_*`` rule is switched on (a count or duration above zero)."""
        counts = any(getattr(self, name) for name in _COUNT_FIELDS)
        return counts or bool(self.keep_within)


@dataclass(frozen=True)
class Decision:
    """Whether ``select`` keeps one backup, and every reason for it (never empty)."""

    backup_id: str
    keep: bool
    reasons: tuple[str, ...]


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _hour(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H")


def _day(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d")


def _week(moment: datetime) -> str:
    year, week, _ = _utc(moment).isocalendar()
    return f"{year}-W{week:02d}"


def _month(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m")


def _year(moment: datetime) -> str:
    return _utc(moment).strftime("%Y")


# (field, the period's name in reasons, the period a backup falls into), newest rule first.
_PERIOD_RULES: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_hourly", "hour", _hour),
    ("keep_daily", "day", _day),
    ("keep_weekly", "week", _week),
    ("keep_monthly", "month", _month),
    ("keep_yearly", "year", _year),
)


def _order(candidate: Candidate) -> tuple[datetime, str]:
    # The id breaks ties between backups of the same instant, so the result never depends
    # on the order the candidates came in.
    return (candidate.created_at, candidate.backup_id)


def select(
    candidates: Sequence[Candidate], policy: RetentionPolicy, now: datetime
) -> list[Decision]:
    """Decide, for every candidate, whether ``policy`` keeps it; oldest first.

    The keep rules and the newest-verified guarantee apply to each ``group`` on its own.
    ``now`` only matters for ``retention_days``. Raises ConfigurationError when ``now`` is
    naive or two candidates share a ``backup_id``.
    """
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ConfigurationError("now must be a timezone-aware datetime", field="now")
    by_id = {candidate.backup_id: candidate for candidate in candidates}
    if len(by_id) != len(candidates):
        raise ConfigurationError("two candidates share a backup_id", field="candidates")
    newest_first = sorted(candidates, key=_order, reverse=True)
    keep: dict[str, list[str]] = {c.backup_id: [] for c in newest_first}
    against: dict[str, list[str]] = {c.backup_id: [] for c in newest_first}

    groups: dict[str, list[Candidate]] = {}
    for candidate in newest_first:
        groups.setdefault(candidate.group, []).append(candidate)
    for members in groups.values():
        _apply_keep_rules(members, policy, keep)
        verified = [c for c in members if c.verified]
        if verified:
            keep[verified[0].backup_id].append("the newest verified backup")
    for candidate in newest_first:
        _apply_retention_days(candidate, policy, now, keep, against)
        if (
            not policy.has_keep_rules
            and not keep[candidate.backup_id]
            and not against[candidate.backup_id]
        ):
            keep[candidate.backup_id].append("no rule of the policy applies to it")
    _keep_chain_parents(newest_first, by_id, keep)

    decisions = []
    for candidate in reversed(newest_first):
        reasons = keep[candidate.backup_id]
        if reasons:
            decisions.append(Decision(candidate.backup_id, True, tuple(reasons)))
        else:
            why = against[candidate.backup_id] or ["no keep rule selects it"]
            decisions.append(Decision(candidate.backup_id, False, tuple(why)))
    return decisions


def _apply_keep_rules(
    newest_first: Sequence[Candidate], policy: RetentionPolicy, keep: dict[str, list[str]]
) -> None:
    if not newest_first:
        return
    for rank, candidate in enumerate(newest_first[: policy.keep_last or 0], start=1):
        keep[candidate.backup_id].append(f"keep_last={policy.keep_last}: newest #{rank}")
    for field, period_name, period_of in _PERIOD_RULES:
        wanted: int | None = getattr(policy, field)
        if not wanted:
            continue
        periods: list[str] = []
        chosen: set[str] = set()
        for candidate in newest_first:
            period = period_of(candidate.created_at)
            if periods and periods[-1] == period:
                continue  # an older backup of a period whose newest one is already kept
            if len(periods) == wanted:
                break
            periods.append(period)
            chosen.add(candidate.backup_id)
            keep[candidate.backup_id].append(
                f"{field}={wanted}: newest of {period_name} {period} (UTC)"
            )
        oldest = newest_first[-1]
        if len(periods) < wanted and oldest.backup_id not in chosen:
            # restic keeps the oldest backup as well when a rule finds too few periods, so
            # a young repository does not lose its first backup.
            keep[oldest.backup_id].append(
                f"{field}={wanted}: the oldest backup (only {len(periods)} {period_name}(s)"
                " have backups)"
            )
    if policy.keep_within:
        cutoff = newest_first[0].created_at - policy.keep_within
        for candidate in newest_first:
            if candidate.created_at < cutoff:
                break
            keep[candidate.backup_id].append(
                f"keep_within={policy.keep_within}: created at most that long before the"
                " newest backup"
            )


def _apply_retention_days(
    candidate: Candidate,
    policy: RetentionPolicy,
    now: datetime,
    keep: dict[str, list[str]],
    against: dict[str, list[str]],
) -> None:
    days = candidate.retention_days
    if not policy.use_retention_days or days is None:
        return
    expires = candidate.created_at + timedelta(days=days)
    # The seed's rule: a backup created at or after now - retention_days stays.
    if expires >= now:
        keep[candidate.backup_id].append(
            f"retention_days={days}: kept until {_utc(expires).isoformat()}"
        )
    else:
        against[candidate.backup_id].append(
            f"retention_days={days}: expired at {_utc(expires).isoformat()}"
        )


def _keep_chain_parents(
    newest_first: Sequence[Candidate], by_id: dict[str, Candidate], keep: dict[str, list[str]]
) -> None:
    # Newest first: a child is always settled before its (older) parent is visited, and the
    # explicit walk below also covers a parent recorded as newer than its child.
    for candidate in newest_first:
        if not keep[candidate.backup_id]:
            continue
        child = candidate
        seen = {child.backup_id}
        while child.backup_type in _DEPENDENT_TYPES and child.parent_id in by_id:
            parent = by_id[child.parent_id]
            if parent.backup_id in seen:
                break  # a corrupt, cyclic chain: everything on it is already kept
            seen.add(parent.backup_id)
            reason = f"parent of {child.backup_id} ({child.backup_type}), which is kept"
            if reason not in keep[parent.backup_id]:
                keep[parent.backup_id].append(reason)
            child = parent
