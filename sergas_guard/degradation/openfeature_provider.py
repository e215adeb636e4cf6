"""An OpenFeature provider over :class:`~.flags.FeatureFlags` (needs ``openfeature-sdk``).

Applications written against the OpenFeature API evaluate our flags through it::

    from openfeature import api
    api.set_provider(OpenFeatureProvider(flags))
    client = api.get_client()
    client.get_boolean_value("new_checkout", False, EvaluationContext(targeting_key="user-42"))

The evaluation context's targeting key is the user id (rollout, allow and deny lists);
its attributes are the flag context. Flags are boolean: asking for another type gives
the caller's default with ``TYPE_MISMATCH``. A flag change, here or seen from another
worker, is announced as ``PROVIDER_CONFIGURATION_CHANGED``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from sergas_guard.degradation.definitions import FlagEvaluation
from sergas_guard.degradation.flags import FeatureFlags

__all__ = ["OpenFeatureProvider"]

T = TypeVar("T")

_REASONS: dict[str, str] = {
    "on": Reason.STATIC,
    "rollout": Reason.SPLIT,
    "not_in_rollout": Reason.SPLIT,
    "allowed": Reason.TARGETING_MATCH,
    "denied": Reason.TARGETING_MATCH,
    "disabled": Reason.DISABLED,
    "degraded": Reason.DISABLED,
    "no_user_id": Reason.DEFAULT,
}


def _inputs(context: EvaluationContext | None) -> tuple[str | None, dict[str, Any]]:
    if context is None:
        return None, {}
    return context.targeting_key, dict(context.attributes)


def _details(evaluation: FlagEvaluation, default: bool) -> FlagResolutionDetails[bool]:
    if evaluation.reason == "unknown":
        return FlagResolutionDetails(
            value=default,
            reason=Reason.ERROR,
            error_code=ErrorCode.FLAG_NOT_FOUND,
            error_message=f"flag {evaluation.flag!r} is not defined",
        )
    return FlagResolutionDetails(
        value=evaluation.enabled,
        reason=_REASONS.get(evaluation.reason, Reason.UNKNOWN),
        variant="on" if evaluation.enabled else "off",
        flag_metadata={"sergas_guard_reason": evaluation.reason},
    )


def _mismatch(flag_key: str, default: T) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        value=default,
        reason=Reason.ERROR,
        error_code=ErrorCode.TYPE_MISMATCH,
        error_message=f"flag {flag_key!r} is boolean",
    )


class OpenFeatureProvider(AbstractProvider):
    """Serves boolean flags of a :class:`FeatureFlags` to the OpenFeature SDK."""

    def __init__(self, flags: FeatureFlags, *, name: str = "sergas-guard") -> None:
        super().__init__()
        self.flags = flags
        self.name = name

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        self.flags.add_listener(self._changed)

    def shutdown(self) -> None:
        self.flags.remove_listener(self._changed)

    def _changed(self, names: frozenset[str]) -> None:
        if hasattr(self, "_on_emit"):  # attached to the SDK
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=sorted(names))
            )

    def get_metadata(self) -> Metadata:
        return Metadata(name=self.name)

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        user_id, attributes = _inputs(evaluation_context)
        evaluation = self.flags.evaluate(flag_key, user_id, attributes, default=default_value)
        return _details(evaluation, default_value)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        user_id, attributes = _inputs(evaluation_context)
        evaluation = await self.flags.evaluate_async(
            flag_key, user_id, attributes, default=default_value
        )
        return _details(evaluation, default_value)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return _mismatch(flag_key, default_value)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return _mismatch(flag_key, default_value)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return _mismatch(flag_key, default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return _mismatch(flag_key, default_value)
