"""Loading a service's TOML config: defaults, file, then environment overrides.

Every key has a default that works on one machine; a file overrides defaults,
and ``OUTPOST_<SECTION>_<KEY>`` overrides the file. Unknown keys are refused,
in the file and in the environment alike; an error names its real source
(the file, or ``environment: OUTPOST_…``).
A bad config raises :class:`ConfigError` whose message is one line naming the
key and the problem, for the CLI to print before it exits.
"""

from __future__ import annotations

import difflib
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


def _apply_env(
    model: type[BaseModel], data: dict[str, Any], environ: Mapping[str, str]
) -> dict[tuple[str, str], str]:
    """Put ``OUTPOST_<SECTION>_<KEY>`` values into ``data``; returns which keys came from where.

    A variable naming one of this model's sections but no key of it (a typo,
    such as ``OUTPOST_MQTT_PROT``) is refused, as an unknown key in the file
    is. Variables naming no section of this model are left alone: they may be
    the other service's, or a tool's (``OUTPOST_LOG_LEVEL``).
    """
    sections: dict[str, type[BaseModel]] = {}
    for section_name, field in model.model_fields.items():
        section_type = field.annotation
        if isinstance(section_type, type) and issubclass(section_type, BaseModel):
            sections[section_name] = section_type
    from_env: dict[tuple[str, str], str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for section_name, section_type in sections.items():
            if not rest.startswith(section_name + "_"):
                continue
            key = rest[len(section_name) + 1 :]
            if key not in section_type.model_fields:
                known = [
                    f"{ENV_PREFIX}{section_name}_{k}".upper() for k in section_type.model_fields
                ]
                close = difflib.get_close_matches(var, known, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ConfigError(
                    f"environment: {var}: unknown key ([{section_name}] has no {key!r}){hint}"
                )
            section = data.setdefault(section_name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{section_name}: must be a table, got {section!r}")
            section[key] = _env_value(environ[var])
            from_env[(section_name, key)] = var
            break
    return from_env


def _describe(err: ValidationError, source: str, from_env: Mapping[tuple[str, str], str]) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    where = [str(p) for p in first["loc"][:2]]
    var = from_env.get((where[0], where[1])) if len(where) == 2 else None
    if var is not None:
        source, loc = "environment", f"{var} ({loc})"
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
    from_env = _apply_env(model, data, environ)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, from_env)) from None
