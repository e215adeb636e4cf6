"""Configuration models: pydantic, validated at construction, loadable from TOML and env.

Every model derives from :class:`GuardModel`. A bad value raises
:class:`~sergas_guard.errors.ConfigurationError` naming the field, instead of
pydantic's own ``ValidationError``, so callers catch one tree.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from sergas_guard.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "GuardModel", "env_overrides", "load_toml"]

ENV_PREFIX = "SERGAS_GUARD_"


def _raise_configuration_error(model: type[BaseModel], exc: ValidationError) -> ConfigurationError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<model>'}: {err['msg']}" for err in exc.errors()
    )
    return ConfigurationError(f"invalid {model.__name__}: {problems}", field=field)


class GuardModel(BaseModel):
    """Base of sergas_guard's configuration models: strict fields, ConfigurationError on bad input."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

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
    """Read a TOML file, raising ConfigurationError (not a parser traceback) when it is malformed."""
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
