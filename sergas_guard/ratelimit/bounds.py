"""The limits every rate-limit storage can represent: one home for each bound.

The Redis storage runs each strategy as a Lua twin, and Lua's numbers are doubles:
integers are exact only up to 2**53. Strategy time is whole microseconds since the
epoch (about 1.8e15 today), and a script computes instants up to ``now + horizon``,
where the horizon is how long a limit's state matters (see :func:`horizon_us`); counts
are added two at a time (``used + cost``). So:

* a count (``max_requests``, ``burst``, a cost) is at most :data:`MAX_COUNT` = 2**52,
  so the sum of two stays exact;
* for the sliding window and the buckets, the limit (and the burst) times the window
  in microseconds stays below :data:`MAX_EXACT` = 2**53: those strategies multiply the
  two (a sliding window's estimate of its wait, a leaky bucket's tolerance), and the
  Python twin, in exact
  integers, and the Lua one, in doubles, must agree (beyond it they were measured to
  differ, and a sliding window's wait to take seconds to compute). A day's window
  holds at most 104,249 requests, an hour's 2,501,999; a fixed window (which only adds
  counts) and a sliding log (which stores instants) have no such bound;
* a window is at least one microsecond and at most :data:`MAX_WINDOW_SECONDS`, and a
  horizon at most :data:`~sergas_guard.validation.MAX_SECONDS` (100 years), so that
  ``now + horizon`` stays below 2**53 until the 2150s;
* a sliding log keeps one entry per admitted unit, so its limit is at most
  :data:`MAX_SLIDING_LOG_LIMIT` (a larger one would let one request of that cost push
  that many entries in one call).

:class:`~sergas_guard.ratelimit.config.RateLimitConfig` checks every limit with
:func:`check_limit` at construction, and the Redis call encoder checks each limit it
encodes with the same function, so no limit that passes construction can fail on a
storage. The memory storage could hold more; the bounds apply to it too, so that a
configuration never works on one storage and fails on the other.
"""

from __future__ import annotations

from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.result import US_PER_SECOND, RateLimitStrategy
from sergas_guard.validation import MAX_SECONDS

__all__ = [
    "MAX_COUNT",
    "MAX_EXACT",
    "MAX_HORIZON_US",
    "MAX_SLIDING_LOG_LIMIT",
    "MAX_WINDOW_SECONDS",
    "MAX_WINDOW_US",
    "check_limit",
    "horizon_us",
]

#: Doubles (Lua's numbers) hold every integer below this exactly.
MAX_EXACT = 2**53
#: The largest limit, burst or cost: the sum of two stays an exact double.
MAX_COUNT = 2**52
#: The longest window, half the longest horizon (a sliding window's state lasts two).
MAX_WINDOW_SECONDS = MAX_SECONDS // 2
MAX_WINDOW_US = MAX_WINDOW_SECONDS * US_PER_SECOND
#: The longest a limit's state may matter, in microseconds (100 years).
MAX_HORIZON_US = MAX_SECONDS * US_PER_SECOND
#: The largest limit of a sliding log, which stores one entry per admitted unit.
MAX_SLIDING_LOG_LIMIT = 100_000

_BUCKETS = (RateLimitStrategy.TOKEN_BUCKET, RateLimitStrategy.LEAKY_BUCKET)
#: The strategies whose arithmetic multiplies the limit (or burst) by the window. A
#: fixed window only adds counts and a sliding log only stores instants, so their
#: limits are bounded by MAX_COUNT and MAX_SLIDING_LOG_LIMIT alone.
_PRODUCT_BOUND = (*_BUCKETS, RateLimitStrategy.SLIDING_WINDOW)


def horizon_us(strategy: RateLimitStrategy, limit: int, window_us: int, burst: int) -> int:
    """How long (µs) a limit's state can matter: the latest instant a decision computes.

    A window's count lasts its window (a sliding window's, two: it weighs the previous
    one); a token bucket needs ``burst / rate`` to refill from empty; a leaky bucket's
    backlog reaches ``burst`` emission intervals.
    """
    if strategy is RateLimitStrategy.TOKEN_BUCKET:
        return -(-burst * window_us // limit)
    if strategy is RateLimitStrategy.LEAKY_BUCKET:
        return burst * -(-window_us // limit)
    if strategy is RateLimitStrategy.SLIDING_WINDOW:
        return 2 * window_us
    return window_us


def check_limit(
    strategy: RateLimitStrategy,
    limit: int,
    window_us: int,
    burst: int,
    *,
    fields: tuple[str, str, str] = ("max_requests", "window_seconds", "burst"),
) -> None:
    """Raise ConfigurationError unless every storage can hold this limit exactly.

    ``fields`` name the settings the limit, the window and the burst came from (a rate
    string names all three ``rate``).
    """
    limit_field, window_field, burst_field = fields
    described = f"{limit} per {window_us / US_PER_SECOND:g}s ({strategy.value})"
    if type(limit) is not int or not 1 <= limit <= MAX_COUNT:
        raise ConfigurationError(
            f"{limit_field} of {described} must be a whole number from 1 to 2**52 "
            f"({MAX_COUNT}), not {limit!r}",
            field=limit_field,
        )
    if type(burst) is not int or not 1 <= burst <= MAX_COUNT:
        raise ConfigurationError(
            f"burst of {described} must be a whole number from 1 to 2**52 ({MAX_COUNT}), "
            f"not {burst!r}",
            field=burst_field,
        )
    if type(window_us) is not int or not 1 <= window_us <= MAX_WINDOW_US:
        raise ConfigurationError(
            f"the window of {described} must be from one microsecond to "
            f"{MAX_WINDOW_SECONDS} seconds (50 years)",
            field=window_field,
        )
    if strategy in _PRODUCT_BOUND and window_us * max(limit, burst) >= MAX_EXACT:
        largest = (MAX_EXACT - 1) // window_us
        raise ConfigurationError(
            f"{described} is too large for exact arithmetic in Redis: the limit (and burst) "
            f"times the window in microseconds must stay below 2**53, so a window of "
            f"{window_us / US_PER_SECOND:g}s holds at most {largest} requests with "
            f"{strategy.value}; fixed_window has no such bound",
            field=burst_field if burst > limit else limit_field,
        )
    if strategy is RateLimitStrategy.SLIDING_LOG and limit > MAX_SLIDING_LOG_LIMIT:
        raise ConfigurationError(
            f"a sliding log keeps one entry per request, so its limit is at most "
            f"{MAX_SLIDING_LOG_LIMIT}, not {limit}; use sliding_window for larger limits",
            field=limit_field,
        )
    if strategy in _BUCKETS and horizon_us(strategy, limit, window_us, burst) > MAX_HORIZON_US:
        raise ConfigurationError(
            f"{described} with burst {burst} takes longer than {MAX_SECONDS} seconds "
            "(100 years) to drain; lower the burst or the window",
            field=burst_field,
        )
