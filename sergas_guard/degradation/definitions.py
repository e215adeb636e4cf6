"""Flag definitions, their evaluation for one call, and their JSON document form.

Everything here is pure: no I/O, no clock. :class:`~.flags.FeatureFlags` adds
persistence and sharing around it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from sergas_guard.config import GuardModel
from sergas_guard.degradation.levels import DegradationLevel
from sergas_guard.degradation.rollout import in_rollout
from sergas_guard.errors import ConfigurationError
from sergas_guard.validation import MAX_TEXT_LENGTH

__all__ = [
    "DOCUMENT_VERSION",
    "FlagDefinition",
    "FlagEvaluation",
    "Reason",
    "dump_document",
    "evaluate",
    "parse_document",
    "user_id_from",
]

DOCUMENT_VERSION = 1

Reason = Literal[
    "unknown",
    "disabled",
    "degraded",
    "denied",
    "allowed",
    "on",
    "rollout",
    "not_in_rollout",
    "no_user_id",
]


class FlagDefinition(GuardModel):
    """One feature flag as stored: whether it is on, for whom, and whether it is essential.

    ``rollout_percentage`` (0-100, 0.01 resolution) limits an enabled flag to that share
    of user ids; ``allow_users`` are always in, ``deny_users`` always out (deny wins).
    ``essential`` flags stay on when the service is degraded. ``description`` is at most
    :data:`~sergas_guard.validation.MAX_TEXT_LENGTH` (4096) characters: it is stored
    with the flag and shown to operators.
    """

    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    description: str = Field(default="", max_length=MAX_TEXT_LENGTH)
    rollout_percentage: float = Field(default=100.0, ge=0.0, le=100.0)
    essential: bool = False
    allow_users: tuple[str, ...] = ()
    deny_users: tuple[str, ...] = ()

    @field_validator("allow_users", "deny_users", mode="before")
    @classmethod
    def _unique_sorted(cls, value: Any, info: ValidationInfo) -> Any:
        field = str(info.field_name)
        if isinstance(value, str | bytes):
            raise ConfigurationError(
                f"{field} must be a list of user ids, not one string ({value!r:.80})",
                field=field,
            )
        if isinstance(value, list | tuple | set | frozenset):
            return tuple(sorted({str(item) for item in value}))
        return value

    def with_changes(self, **changes: Any) -> FlagDefinition:
        """A validated copy with ``changes`` applied (raises ConfigurationError)."""
        unknown = (set(changes) - set(type(self).model_fields)) | ({"name"} & set(changes))
        if unknown:
            raise ConfigurationError(
                f"cannot change {', '.join(sorted(unknown))} of flag {self.name!r}",
                field=sorted(unknown)[0],
            )
        return FlagDefinition(**{**self.model_dump(), **changes})

    def with_user_listed(
        self, user_id: str, listed: Literal["allow", "deny"] | None
    ) -> FlagDefinition:
        """A copy with ``user_id`` on the allow list, the deny list, or neither."""
        allow = [u for u in self.allow_users if u != user_id]
        deny = [u for u in self.deny_users if u != user_id]
        if listed == "allow":
            allow.append(user_id)
        elif listed == "deny":
            deny.append(user_id)
        return self.with_changes(allow_users=allow, deny_users=deny)

    def as_json(self) -> dict[str, Any]:
        """The flag as a JSON-ready mapping (lists, not tuples)."""
        data = self.model_dump()
        data["allow_users"] = list(self.allow_users)
        data["deny_users"] = list(self.deny_users)
        return data


@dataclass(frozen=True)
class FlagEvaluation:
    """The answer for one call: on or off, and why (``reason``)."""

    flag: str
    enabled: bool
    reason: Reason


def user_id_from(user_id: object, context: Mapping[str, Any] | None) -> str | None:
    """The user id a call is bucketed by: the argument, else ``context["user_id"]``,
    else ``context["targeting_key"]`` (the OpenFeature name); ``None`` when absent."""
    if user_id is None and context:
        user_id = context.get("user_id", context.get("targeting_key"))
    if user_id is None or user_id == "":
        return None
    return str(user_id)


def evaluate(
    definition: FlagDefinition | None,
    name: str,
    user_id: str | None,
    level: DegradationLevel = DegradationLevel.NORMAL,
    default: bool = False,
) -> FlagEvaluation:
    """Decide whether flag ``name`` is on for ``user_id`` at degradation ``level``.

    Order: unknown flags give ``default``; a disabled flag is off for everyone; at
    DEGRADED and above a non-essential flag is off; a denied user is off, an allowed
    user on; then the rollout. A call without a user id is on only when the rollout
    is 100 % (there is nothing to bucket it by, and guessing would not be sticky).
    """
    if definition is None:
        return FlagEvaluation(name, default, "unknown")
    if not definition.enabled:
        return FlagEvaluation(name, False, "disabled")
    if level >= DegradationLevel.DEGRADED and not definition.essential:
        return FlagEvaluation(name, False, "degraded")
    if user_id is not None:
        if user_id in definition.deny_users:
            return FlagEvaluation(name, False, "denied")
        if user_id in definition.allow_users:
            return FlagEvaluation(name, True, "allowed")
    if definition.rollout_percentage >= 100.0:
        return FlagEvaluation(name, True, "on")
    if user_id is None:
        return FlagEvaluation(name, False, "no_user_id")
    if in_rollout(name, user_id, definition.rollout_percentage):
        return FlagEvaluation(name, True, "rollout")
    return FlagEvaluation(name, False, "not_in_rollout")


def parse_document(text: str | bytes, source: str) -> dict[str, FlagDefinition]:
    """Parse a flags JSON document; raises ConfigurationError naming ``source`` and the flag.

    Accepted forms: ``{"version": 1, "flags": {"name": {...}}}`` (what :func:`dump_document`
    writes) and a bare ``{"name": {...}}`` mapping. A flag's ``name`` defaults to its key.
    """
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{source} is not valid JSON: {exc}", field="flags") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"{source} must hold a JSON object of flags", field="flags")
    if isinstance(document.get("flags"), dict):
        flags = document["flags"]
    else:
        flags = {key: body for key, body in document.items() if key != "version"}
    parsed: dict[str, FlagDefinition] = {}
    for key, body in flags.items():
        if not isinstance(body, dict):
            raise ConfigurationError(f"{source}: flag {key!r} must be a JSON object", field=key)
        if body.get("name", key) != key:
            raise ConfigurationError(
                f"{source}: flag {key!r} has a different name {body['name']!r}", field=key
            )
        try:
            parsed[key] = FlagDefinition.validate_mapping({**body, "name": key})
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: flag {key!r}: {exc}", field=key) from None
    return parsed


def dump_document(flags: Mapping[str, FlagDefinition]) -> bytes:
    """Serialise flags as the versioned JSON document, sorted for stable diffs."""
    document = {
        "version": DOCUMENT_VERSION,
        "flags": {name: flags[name].as_json() for name in sorted(flags)},
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
