"""Load management in process: a bounded priority queue with a worker pool, the queue
discipline of "Fail at Scale" (CoDel deadlines, adaptive LIFO) and adaptive concurrency
limits (fixed, AIMD, Gradient2, Vegas) as pure policies.

:class:`QueueManager` is the asyncio face, :class:`ThreadedQueueManager` the face for
threaded code; both drive one :class:`~sergas_guard.queueing.core.QueueCore`.
"""

from __future__ import annotations

from sergas_guard.queueing.core import Outcome, QueueCore
from sergas_guard.queueing.discipline import QueueDiscipline
from sergas_guard.queueing.gradient2 import Gradient2Limit
from sergas_guard.queueing.job import ReturnedItem
from sergas_guard.queueing.limits import POLICY_NAMES, limit_policy
from sergas_guard.queueing.manager import QueueHandle, QueueManager
from sergas_guard.queueing.policy import AIMDLimit, FixedLimit, LimitPolicy
from sergas_guard.queueing.threaded import ThreadedQueueManager
from sergas_guard.queueing.vegas import VegasLimit

__all__ = [
    "POLICY_NAMES",
    "AIMDLimit",
    "FixedLimit",
    "Gradient2Limit",
    "LimitPolicy",
    "Outcome",
    "QueueCore",
    "QueueDiscipline",
    "QueueHandle",
    "QueueManager",
    "ReturnedItem",
    "ThreadedQueueManager",
    "VegasLimit",
    "limit_policy",
]
