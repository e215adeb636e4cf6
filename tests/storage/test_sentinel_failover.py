"""Rate limiting through a real Sentinel failover, under load.

A :class:`RateLimiter` on ``redis+sentinel://`` (a master, a replica, three Sentinels,
default settings) decides continuously from several asyncio tasks and, at the same
time, from a thread on the sync face, while the master is SIGKILLed. Asserted:

- nothing raises to a caller, on either face;
- during the gap every answer follows the default policy: a :class:`RateLimitResult`
  from Redis or a :class:`FallbackResult` from the local fallback, and some answers
  are fallbacks (the outage was seen);
- once the Sentinels have promoted the replica, every flow is answered by Redis again
  within :data:`BACK_WITHIN` seconds: the circuit's cool-down (5 s by default) plus one
  probe and the backend asking the Sentinels for the new master (measured: 4.6 s on a
  loaded 2-core host, every flow at once), and stay there;
- those answers really are counted on the new master: keys written only after the
  failover are on it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sergas_guard.ratelimit import RateLimiter, RateLimitResult
from sergas_guard.storage import storage_from_url
from sergas_guard.storage.failover import FailoverConfig, FallbackResult
from tests.servers import RedisSentinel, redis_sentinel

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKS = 8
# The default cool-down, one probe, a Sentinel lookup and a new connection, with room
# for two loaded cores: answers must come from Redis again this long after promotion.
BACK_WITHIN = FailoverConfig().cooldown_seconds + 5.0
# Large enough that admission never depends on the count: the answer's type is the test.
RATE = "1000000/hour"


@dataclass
class Flow:
    """What one caller (a task or the thread) saw, by phase."""

    kinds: dict[str, Counter[str]] = field(default_factory=dict)
    raised: list[str] = field(default_factory=list)
    #: Seconds after the failover completed when this flow first got an answer from
    #: Redis on a key hit only after the failover (None: never).
    back_after: float | None = None
    #: The type of the last answer (once back on Redis, it stays there).
    last: str = ""

    def saw(self, phase: str, result: object) -> None:
        self.last = type(result).__name__
        self.kinds.setdefault(phase, Counter())[self.last] += 1


class Phases:
    """The phase of the experiment, shared by the flows (set by the test)."""

    def __init__(self) -> None:
        self.name = "before"
        self.failed_over_at = 0.0
        self.stop = threading.Event()

    def key(self, flow_id: int) -> str:
        # Keys of the "after" phase exist only on the new master.
        return f"{self.name}:{flow_id}"


@pytest.fixture(scope="module")
def topology() -> Iterator[RedisSentinel]:
    with redis_sentinel(replicas=1, sentinels=3) as started:
        yield started


def record(flow: Flow, phases: Phases, result: RateLimitResult) -> None:
    phase = phases.name
    flow.saw(phase, result)
    if phase == "after" and flow.back_after is None and type(result) is RateLimitResult:
        flow.back_after = time.monotonic() - phases.failed_over_at


async def task_flow(limiter: RateLimiter, phases: Phases, flow: Flow, flow_id: int) -> None:
    while not phases.stop.is_set():
        try:
            record(flow, phases, await limiter.hit(phases.key(flow_id)))
        except Exception as exc:  # the assertion: nothing may reach a caller
            flow.raised.append(f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(0.001)


def thread_flow(limiter: RateLimiter, phases: Phases, flow: Flow, flow_id: int) -> None:
    while not phases.stop.is_set():
        try:
            record(flow, phases, limiter.hit_sync(phases.key(flow_id)))
        except Exception as exc:
            flow.raised.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.001)


async def test_decisions_continue_through_a_master_kill(topology: RedisSentinel) -> None:
    # Default settings: the URL alone, the default policy (fallback, share "auto").
    limiter = RateLimiter(RATE, storage_from_url(topology.url), name="failover")
    phases = Phases()
    flows = [Flow() for _ in range(TASKS + 1)]
    thread = threading.Thread(
        target=thread_flow, args=(limiter, phases, flows[TASKS], TASKS), daemon=True
    )
    tasks = [asyncio.create_task(task_flow(limiter, phases, flows[i], i)) for i in range(TASKS)]
    thread.start()
    try:
        await asyncio.sleep(1.0)  # decisions flowing through the first master
        phases.name = "gap"
        await asyncio.to_thread(topology.kill_master)
        new_master = await asyncio.to_thread(topology.wait_for_failover)
        phases.failed_over_at = time.monotonic()
        phases.name = "after"
        for _ in range(int((BACK_WITHIN + 5.0) / 0.1)):  # polled: the flows set it
            if all(f.back_after is not None for f in flows):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a few more answers from the new master
    finally:
        phases.stop.set()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(thread.join, 10)
        metrics = limiter.get_metrics(detailed=True).get("storage", {})
        await limiter.aclose()

    where = f"flows: {[f.kinds for f in flows]}, storage: {metrics}"
    assert not [f.raised for f in flows if f.raised], where
    for flow in flows:
        assert flow.kinds["before"].keys() == {"RateLimitResult"}, where
        # The gap: Redis (before the outage is noticed) or the policy, nothing else.
        assert set(flow.kinds.get("gap", {})) <= {"RateLimitResult", "FallbackResult"}, where
        assert set(flow.kinds["after"]) <= {"RateLimitResult", "FallbackResult"}, where
        assert flow.back_after is not None, where
        assert flow.back_after <= BACK_WITHIN, where
        assert flow.last == "RateLimitResult", where
    assert sum(f.kinds.get("gap", Counter())[FallbackResult.__name__] for f in flows), where
    # The answers after the failover were counted on the promoted replica.
    stored = topology.data_command(new_master.port, "KEYS", "*after:*")
    assert len(stored) >= TASKS + 1, (stored, where)
