"""Configuration models: pydantic, validated at construction, loadable from TOML and env.

Every model derives from :class:`GuardModel`. A bad value raises
:class:`~sergas_guard.errors.ConfigurationError` naming the field, instead of
pydantic's own ``ValidationError``, so callers catch one tree.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sergas_guard.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "GuardModel", "env_overrides", "load_toml"]

ENV_PREFIX = "SERGAS_GUARD_"


def _raise_configuration_error(model: type[BaseModel], exc: ValidationError) -> ConfigurationError:
    """Translate pydantic's error into ours, naming the first offending field.

    A validator may raise ConfigurationError itself to name the field a model-level
    rule is about (pydantic wraps it; we unwrap it here).
    """
    errors = exc.errors()
    first = errors[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, ConfigurationError):
        return ConfigurationError(f"invalid {model.__name__}: {original}", field=original.field)
    field = ".".join(str(part) for part in first["loc"]) or None
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<model>'}: {err['msg']}{_given(err)}"
        for err in errors
    )
    return ConfigurationError(f"invalid {model.__name__}: {problems}", field=field)


def _given(error: Any) -> str:
    """`` (got <value>)``, so the message names the value as well as the field."""
    if "input" not in error or isinstance(error["input"], dict):
        return ""
    shown = repr(error["input"])
    return f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"


def _numeric_only(annotation: Any) -> bool:
    """Whether a field holds numbers and not bools (``int``, ``float | None``, ...)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(members) and all(_numeric_only(member) for member in members)
    return False


class GuardModel(BaseModel):
    """Base of our configuration models: strict fields, ConfigurationError on bad input.

    Numbers must be finite (no NaN, no infinity), and a bool is not a number: pydantic
    would read ``True`` as 1, which in a configuration is nearly always a mistake.
    Strings of digits stay accepted, as TOML files and environment variables give them.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )

    _numeric_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._numeric_fields = frozenset(
            name for name, info in cls.model_fields.items() if _numeric_only(info.annotation)
        )

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in cls._numeric_fields:
                value = data.get(field)
                if isinstance(value, bool):
                    raise ConfigurationError(
                        f"{field} must be a number, not {value!r}", field=field
                    )
        return data

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _raise_configuration_error(type(self), exc) from None

    @classmethod
    def validate_mapping(cls, data: Any) -> Self:
        """Build the model from a mapping (e.g. a TOML table), raising ConfigurationError."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _raise_configuration_error(cls, exc) from None


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file; ConfigurationError (not a parser traceback) when malformed."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"configuration file {file} is not valid TOML: {exc}") from None


def env_overrides(section: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Collect ``SERGAS_GUARD_<SECTION>__<FIELD>`` variables as ``{field: value}`` (lower-cased)."""
    env = os.environ if environ is None else environ
    prefix = f"{ENV_PREFIX}{section.upper()}__"
    return {
        name[len(prefix) :].lower(): value for name, value in env.items() if name.startswith(prefix)
    }
