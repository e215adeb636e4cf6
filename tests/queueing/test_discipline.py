"""The queue discipline: priorities, CoDel drops, adaptive LIFO, bounds, one fate per item."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import ConfigurationError
from sergas_guard.queueing.discipline import Drop, Entry, QueueDiscipline

TARGET = 0.005
INTERVAL = 0.1

operations = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(0, 3), st.sampled_from([math.inf, 0.05, 0.5])),
        st.tuples(st.just("take"), st.just(0), st.just(0.0)),
        st.tuples(st.just("purge"), st.just(0), st.just(0.0)),
        st.tuples(st.just("remove"), st.integers(0, 50), st.just(0.0)),
        st.tuples(st.just("advance"), st.just(0), st.sampled_from([0.001, 0.004, 0.02, 0.15])),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=operations, max_size=st.integers(1, 8), lifo=st.booleans())
def test_every_accepted_item_meets_exactly_one_fate(
    ops: list[tuple[str, int, float]], max_size: int, lifo: bool
) -> None:
    queue: QueueDiscipline[int] = QueueDiscipline(
        max_size, target=TARGET, interval=INTERVAL, adaptive_lifo=lifo
    )
    now = 0.0
    accepted: list[Entry[int]] = []
    fates: dict[int, str] = {}
    last_drop = -math.inf

    def record(entry: Entry[int], fate: str) -> None:
        assert entry.payload not in fates, "an item met two fates"
        fates[entry.payload] = fate

    for op, number, value in ops:
        if op == "offer":
            entry = Entry(len(accepted), number, now, now + value)
            if queue.offer(entry, now):
                accepted.append(entry)
            else:
                assert len(queue) == max_size  # refused only when full
        elif op == "take":
            drained_recently = now - queue.last_empty(now) <= INTERVAL
            dropping = now - last_drop <= INTERVAL
            taken, dropped = queue.take(now)
            for gone, why in dropped:
                record(gone, why.value)
                if why is Drop.QUEUE_DELAY:
                    # CoDel never starts dropping while the queue keeps emptying within
                    # the interval, and never drops a fresh item.
                    assert dropping or not drained_recently
                    assert now - gone.enqueued_at > TARGET
                    last_drop = now
                else:
                    assert gone.deadline <= now
            if taken is not None:
                record(taken, "run")
                assert taken.deadline > now
        elif op == "purge":
            for gone, why in queue.purge(now):
                record(gone, why.value)
                if why is Drop.QUEUE_DELAY:
                    last_drop = now
        elif op == "remove" and number < len(accepted):
            if queue.remove(accepted[number], now):
                record(accepted[number], "removed")
        elif op == "advance":
            now += value
        assert 0 <= len(queue) <= max_size
        assert len(queue) + len(fates) == len(accepted)
    for entry in queue.drain(now):
        record(entry, "drained")
    assert len(fates) == len(accepted)
    assert len(queue) == 0


@settings(max_examples=100, deadline=None)
@given(priorities=st.lists(st.integers(-3, 3), min_size=1, max_size=30))
def test_lower_numbers_run_first_and_fifo_within_a_priority_when_draining(
    priorities: list[int],
) -> None:
    queue: QueueDiscipline[int] = QueueDiscipline(100)
    for number, priority in enumerate(priorities):
        assert queue.offer(Entry(number, priority, 0.0), 0.0)
    order = []
    while True:
        taken, dropped = queue.take(0.0)  # the queue was empty "now": no standing queue
        assert dropped == []
        if taken is None:
            break
        order.append((taken.priority, taken.payload))
    assert order == sorted(order)


def test_a_standing_queue_serves_the_newest_first_and_drops_stale_items() -> None:
    queue: QueueDiscipline[str] = QueueDiscipline(100, target=TARGET, interval=INTERVAL)
    queue.offer(Entry("old", 0, 0.0), 0.0)
    for step in range(1, 40):  # the queue never empties: a standing queue forms
        queue.offer(Entry(f"item{step}", 0, step * 0.004), step * 0.004)
        assert not queue.standing(step * 0.004) or step * 0.004 > INTERVAL
    now = 39 * 0.004 + 0.001
    assert queue.standing(now)
    taken, dropped = queue.take(now)
    assert taken is not None
    assert taken.payload == "item39"
    assert [entry.payload for entry, _ in dropped][:2] == ["old", "item1"]
    assert all(why is Drop.QUEUE_DELAY for _, why in dropped)
    # what survived is fresh: it waited at most the target
    for entry in queue.drain(now):
        assert now - entry.enqueued_at <= TARGET


def test_a_queue_that_never_stood_never_drops_for_delay() -> None:
    queue: QueueDiscipline[int] = QueueDiscipline(1000, target=TARGET, interval=INTERVAL)
    number = 0
    now = 0.0
    for cycle in range(30):  # bursts of 30 items, served 3 ms apart, the queue empties each
        for _ in range(30):
            queue.offer(Entry(number, 0, now), now)
            number += 1
        while len(queue):
            now += 0.003
            taken, dropped = queue.take(now)
            assert dropped == [], cycle
            assert taken is not None
        now += 0.01


def test_a_burst_that_drains_within_the_interval_waits_rather_than_drops() -> None:
    queue: QueueDiscipline[int] = QueueDiscipline(100, target=TARGET, interval=INTERVAL)
    for number in range(20):
        queue.offer(Entry(number, 0, 0.0), 0.0)
    served = []
    for number in range(20):  # served 4 ms apart: each waits far beyond the target
        taken, dropped = queue.take(number * 0.004)
        assert dropped == []
        assert taken is not None
        served.append(taken.payload)
    assert served == list(range(20))  # FIFO, nothing dropped: the queue drained in 80 ms


def test_without_codel_nothing_is_dropped_for_delay() -> None:
    queue: QueueDiscipline[int] = QueueDiscipline(10, codel=False, adaptive_lifo=False)
    for number in range(10):
        queue.offer(Entry(number, 0, 0.0), 0.0)
    taken, dropped = queue.take(5.0)
    assert taken is not None
    assert taken.payload == 0
    assert dropped == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_size": 10, "target": 0}, "target_delay"),
        ({"max_size": 10, "target": 0.2, "interval": 0.1}, "target_delay"),
        ({"max_size": 10, "interval": -1}, "interval"),
        ({"max_size": 10, "codel": 1}, "codel"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        QueueDiscipline(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
