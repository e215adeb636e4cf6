"""@feature_flag on sync and async functions."""

from __future__ import annotations

import inspect

import pytest

from sergas_guard.degradation import (
    FeatureFlags,
    StaticFallback,
    default_flags,
    feature_flag,
    set_default_flags,
)
from sergas_guard.errors import ConfigurationError, FeatureDisabledError


def test_runs_when_on_and_raises_with_the_reason_when_off() -> None:
    flags = FeatureFlags()
    flags.register("export", enabled=True)

    @feature_flag("export", flags=flags)
    def export(fmt: str) -> str:
        return f"exported {fmt}"

    assert export("csv") == "exported csv"
    flags.disable("export")
    with pytest.raises(FeatureDisabledError) as info:
        export("csv")
    assert (info.value.flag, info.value.reason) == ("export", "disabled")


def test_unknown_flags_are_off() -> None:
    @feature_flag("never-registered", flags=FeatureFlags())
    def hidden() -> str:
        return "ran"

    with pytest.raises(FeatureDisabledError, match="unknown"):
        hidden()


def test_user_id_from_a_parameter_drives_the_rollout() -> None:
    flags = FeatureFlags()
    flags.register("beta", rollout_percentage=50.0, deny_users=["blocked"])

    @feature_flag("beta", flags=flags, user_id="user", fallback=lambda user, page: "classic")
    def page_for(user: str, page: str) -> str:
        return "beta"

    answers = {u: page_for(f"user-{u}", page="home") for u in range(200)}
    assert set(answers.values()) == {"beta", "classic"}
    # Sticky: the same users get the same answer again, and match the flags' own verdict.
    for u, answer in answers.items():
        assert page_for(user=f"user-{u}", page="home") == answer
        assert (answer == "beta") == flags.is_enabled("beta", user_id=f"user-{u}")
    assert page_for("blocked", "home") == "classic"


def test_user_id_from_a_callable_and_a_strategy_fallback() -> None:
    flags = FeatureFlags()
    flags.register("beta", allow_users=["vip"], rollout_percentage=0.0)

    @feature_flag(
        "beta",
        flags=flags,
        user_id=lambda request: request["user"],
        fallback=StaticFallback("off", "not for you"),
    )
    def handler(request: dict[str, str]) -> str:
        return "beta"

    assert handler({"user": "vip"}) == "beta"
    assert handler({"user": "someone"}) == "not for you"


def test_the_process_wide_flags_are_used_and_looked_up_at_call_time() -> None:
    @feature_flag("search")
    def search() -> str:
        return "results"

    with pytest.raises(FeatureDisabledError):
        search()
    default_flags().register("search")
    assert search() == "results"
    replacement = FeatureFlags()
    set_default_flags(replacement)
    with pytest.raises(FeatureDisabledError):
        search()  # the replacement has no "search" flag


async def test_async_functions() -> None:
    flags = FeatureFlags()
    flags.register("chat")

    async def apology(user_id: str) -> str:
        return f"sorry {user_id}"

    @feature_flag("chat", flags=flags, user_id="user_id", fallback=apology)
    async def chat(user_id: str) -> str:
        return f"hello {user_id}"

    assert inspect.iscoroutinefunction(chat)
    assert chat.__name__ == "chat"
    assert await chat("ann") == "hello ann"
    flags.disable("chat")
    assert await chat("ann") == "sorry ann"

    @feature_flag("chat", flags=flags)
    async def strict() -> str:
        return "ran"

    with pytest.raises(FeatureDisabledError):
        await strict()


def test_context_reaches_the_evaluation() -> None:
    flags = FeatureFlags()
    flags.register("beta", allow_users=["vip"], rollout_percentage=0.0)

    @feature_flag("beta", flags=flags, context=lambda headers: {"user_id": headers["x-user"]})
    def handler(headers: dict[str, str]) -> str:
        return "beta"

    assert handler({"x-user": "vip"}) == "beta"
    with pytest.raises(FeatureDisabledError, match=r"no_user_id|not_in_rollout"):
        handler({"x-user": "other"})


def test_misuse_is_caught_at_decoration_time() -> None:
    with pytest.raises(ConfigurationError, match="no parameter"):

        @feature_flag("x", user_id="uid")
        def f(user: str) -> None: ...

    with pytest.raises(ConfigurationError):
        feature_flag("")
    with pytest.raises(ConfigurationError):
        feature_flag("x", fallback=3)  # type: ignore[arg-type]
