"""Choosing a concurrency limit policy by name, sized for a pool of workers."""

from __future__ import annotations

from sergas_guard.errors import ConfigurationError
from sergas_guard.queueing.gradient2 import Gradient2Limit
from sergas_guard.queueing.policy import AIMDLimit, FixedLimit, LimitPolicy
from sergas_guard.queueing.vegas import VegasLimit

__all__ = ["POLICY_NAMES", "limit_policy"]

POLICY_NAMES = ("fixed", "aimd", "gradient2", "vegas")


def limit_policy(spec: str | LimitPolicy, max_workers: int) -> LimitPolicy:
    """The policy ``spec`` names, for a pool of ``max_workers``, or ``spec`` itself.

    A named policy starts at ``max_workers`` (the pool runs at full width until latency or
    drops say otherwise), may fall to 1 and never rises above ``max_workers``; the other
    parameters keep Netflix's defaults. For other bounds, pass a configured policy object.

    Raises ConfigurationError(field="limit") for an unknown name, an object that is not a
    :class:`LimitPolicy`, or one whose ``max_limit`` exceeds ``max_workers``.
    """
    if isinstance(spec, str):
        if spec == "fixed":
            return FixedLimit(max_workers)
        if spec == "aimd":
            return AIMDLimit(initial_limit=max_workers, min_limit=1, max_limit=max_workers)
        if spec == "gradient2":
            return Gradient2Limit(initial_limit=max_workers, min_limit=1, max_limit=max_workers)
        if spec == "vegas":
            return VegasLimit(initial_limit=max_workers, min_limit=1, max_limit=max_workers)
        raise ConfigurationError(
            f"limit must be one of {', '.join(POLICY_NAMES)} or a LimitPolicy, not {spec!r}",
            field="limit",
        )
    if not isinstance(spec, LimitPolicy):
        raise ConfigurationError(
            f"limit must be a policy name or a LimitPolicy, not {type(spec).__name__}",
            field="limit",
        )
    if spec.max_limit > max_workers:
        raise ConfigurationError(
            f"the limit policy's max_limit ({spec.max_limit}) exceeds max_workers ({max_workers})",
            field="limit",
        )
    return spec
