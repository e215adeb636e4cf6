"""Our flags evaluated through the real OpenFeature SDK client."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from sergas_guard.degradation import (
    DegradationLevel,
    DegradationManager,
    FeatureFlags,
    OpenFeatureProvider,
)


@pytest.fixture
def flags() -> Iterator[FeatureFlags]:
    flags = FeatureFlags()
    api.set_provider(OpenFeatureProvider(flags))
    yield flags
    api.clear_providers()


def ctx(user: str, **attributes: str) -> EvaluationContext:
    return EvaluationContext(targeting_key=user, attributes=attributes)


def test_boolean_flags_resolve_with_the_targeting_key(flags: FeatureFlags) -> None:
    flags.register("beta", rollout_percentage=50.0, allow_users=["vip"])
    client = api.get_client()
    for user in (f"user-{i}" for i in range(50)):
        details = client.get_boolean_details("beta", False, ctx(user))
        assert details.value == flags.is_enabled("beta", user_id=user)
        assert details.reason == Reason.SPLIT
        assert details.variant == ("on" if details.value else "off")
    vip = client.get_boolean_details("beta", False, ctx("vip"))
    assert (vip.value, vip.reason) == (True, Reason.TARGETING_MATCH)


def test_disabled_and_unknown_flags(flags: FeatureFlags) -> None:
    flags.register("old", enabled=False)
    client = api.get_client()
    old = client.get_boolean_details("old", True, ctx("u"))
    assert (old.value, old.reason) == (False, Reason.DISABLED)
    missing = client.get_boolean_details("missing", True, ctx("u"))
    assert missing.value is True  # the caller's default
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND


def test_other_types_are_a_type_mismatch(flags: FeatureFlags) -> None:
    flags.register("beta")
    details = api.get_client().get_string_details("beta", "dflt", ctx("u"))
    assert details.value == "dflt"
    assert details.error_code == ErrorCode.TYPE_MISMATCH


def test_the_degradation_level_applies(flags: FeatureFlags) -> None:
    manager = DegradationManager(feature_flags=flags)
    flags.register("extras")
    flags.register("checkout", essential=True)
    manager.set_degradation_level(DegradationLevel.DEGRADED)
    client = api.get_client()
    assert client.get_boolean_value("extras", True, ctx("u")) is False
    assert client.get_boolean_value("checkout", False, ctx("u")) is True


async def test_async_evaluation(flags: FeatureFlags) -> None:
    flags.register("beta", allow_users=["vip"], rollout_percentage=0.0)
    client = api.get_client()
    assert await client.get_boolean_value_async("beta", False, ctx("vip")) is True
    assert await client.get_boolean_value_async("beta", True, ctx("other")) is False


def test_flag_changes_are_announced(flags: FeatureFlags) -> None:
    # The SDK runs event handlers on its own thread pool: collect them through a queue.
    seen: queue.Queue[list[str] | None] = queue.Queue()

    def handler(details: EventDetails) -> None:
        seen.put(details.flags_changed)

    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, handler)
    try:
        flags.register("beta")
        assert seen.get(timeout=5) == ["beta"]
        flags.disable("beta")
        assert seen.get(timeout=5) == ["beta"]
        flags.disable("beta")  # no change, no event
        flags.register("chat")
        assert seen.get(timeout=5) == ["chat"]
    finally:
        api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, handler)
