"""The judge of a storage's health (pure): time without a reply, or a rate over time.

Invariants, as properties: the failures of one burst (every call started and ended
within less than ``failure_window``) never open the circuit, however many; a storage
that gives no successful reply for ``failure_window`` while calls fail always does.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.ratelimit.stores.outage import OutageDetector

WINDOW = 2.0


def detector(**options: int) -> OutageDetector:
    return OutageDetector(WINDOW, options.get("rate_window", 10), 50.0, options.get("minimum", 20))


# A call: (start offset, duration, failed), all within one burst shorter than WINDOW.
burst_calls = st.lists(
    st.tuples(st.floats(0, WINDOW * 0.49), st.floats(0, WINDOW * 0.49), st.booleans()),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(idle_before=st.floats(0, 1000), replied_before=st.booleans(), calls=burst_calls)
def test_the_failures_of_one_burst_never_open(
    idle_before: float, replied_before: bool, calls: list[tuple[float, float, bool]]
) -> None:
    judge = detector()
    t0 = 5000.0
    if replied_before:
        judge.success(t0 - idle_before)  # a healthy call long (or just) before
    # Outcomes are recorded in the order the calls end.
    for start, duration, failed in sorted(calls, key=lambda c: c[0] + c[1]):
        end = t0 + start + duration
        if failed:
            assert judge.failure(t0 + start, end) is None
        else:
            judge.success(end)


@settings(max_examples=150, deadline=None)
@given(
    starts=st.lists(st.floats(0, 30), min_size=1, max_size=50),
    duration=st.floats(0, 5),
)
def test_no_reply_for_the_failure_window_while_calls_fail_opens(
    starts: list[float], duration: float
) -> None:
    judge = detector()
    judge.success(100.0)
    reasons = []
    for start in sorted(starts):
        began = 100.0 + start
        reasons.append(judge.failure(began, began + duration))
    first = 100.0 + min(starts)
    last_end = 100.0 + max(starts) + duration
    if last_end - first >= WINDOW:
        # Failed calls spanning the window with no reply: open, saying why.
        assert any(r is not None and r.startswith("no reply for") for r in reasons)
    else:
        assert reasons == [None] * len(reasons)


def test_a_reply_in_between_restarts_the_silence() -> None:
    judge = detector()
    assert judge.failure(0.0, 1.5) is None
    judge.success(1.6)
    assert judge.failure(1.0, 3.0) is None  # silence counts from the reply (1.4 s)
    assert judge.failure(2.0, 3.7) == "no reply for 2.1s"


def test_a_storage_failing_half_its_calls_over_time_opens_on_the_rate() -> None:
    judge = detector(minimum=20)
    reasons = []
    for tick in range(40):
        now = 10.0 + tick * 0.1
        if tick % 2:
            reasons.append(judge.failure(now - 0.01, now))
        else:
            judge.success(now)
    opened = [r for r in reasons if r is not None]
    assert opened
    assert "calls failed in" in opened[0]
    # Not before the failures spanned the window, nor before the minimum of calls.
    first = reasons.index(opened[0])
    assert 10.0 + (2 * first + 1) * 0.1 - 10.1 >= WINDOW - 1e-9


def test_a_low_failure_rate_never_opens() -> None:
    judge = detector(minimum=5)
    for tick in range(600):
        now = tick * 0.05
        if tick % 3 == 0:
            assert judge.failure(now - 0.01, now) is None
        else:
            judge.success(now)


def test_failures_of_an_old_spell_do_not_count_towards_a_new_one() -> None:
    judge = detector(rate_window=5, minimum=3)
    judge.success(0.0)
    assert judge.failure(1.0, 1.0) is None
    judge.success(1.1)
    # 20 s later, one burst of failures among replies: the old failure aged out, so
    # the spell starts now and has not lasted the failure window.
    for k in range(10):
        assert judge.failure(21.0, 21.0 + k * 0.01) is None
        judge.success(21.0 + k * 0.01)


def test_failures_in_a_row_only_when_asked() -> None:
    judge = OutageDetector(WINDOW, 10, 50.0, 20, in_a_row=3)
    assert judge.failure(0.0, 0.0) is None
    assert judge.failure(0.0, 0.0) is None
    assert judge.failure(0.0, 0.0) == "3 failures in a row"
    judge.reset()
    assert not judge.watching
