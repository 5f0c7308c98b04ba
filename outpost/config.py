"""Loading a service's TOML config: defaults, file, then environment overrides.

Every key has a default that works on one machine; a file overrides defaults,
and ``OUTPOST_<SECTION>_<KEY>`` overrides the file. Unknown keys are refused.
A bad config raises :class:`ConfigError` whose message is one line naming the
key and the problem, for the CLI to print before it exits.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from outpost.files import read_error

ENV_PREFIX = "OUTPOST_"


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is one line for a person."""


class Section(BaseModel):
    """Base for one ``[section]`` of a config file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def _env_value(raw: str) -> Any:
    """Environment values are strings; lists and tables may be given as JSON."""
    stripped = raw.strip()
    if stripped.startswith(("[", "{")):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def _apply_env(model: type[BaseModel], data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for section_name, field in model.model_fields.items():
        section_type = field.annotation
        if not (isinstance(section_type, type) and issubclass(section_type, BaseModel)):
            continue
        for key in section_type.model_fields:
            var = f"{ENV_PREFIX}{section_name}_{key}".upper()
            if var in environ:
                section = data.setdefault(section_name, {})
                if not isinstance(section, dict):
                    raise ConfigError(f"{section_name}: must be a table, got {section!r}")
                section[key] = _env_value(environ[var])


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] != "missing":
        msg = f"{msg} (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {loc}: {msg}{tail}"


def load_config(
    model: type[M],
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Build ``model`` from defaults, the TOML file at ``path`` and the environment."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(read_error(source, "config file", exc)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    _apply_env(model, data, environ)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
