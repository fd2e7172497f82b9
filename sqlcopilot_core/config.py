"""Stage configs: frozen dataclasses built from plain dicts, unknown keys rejected; profiles are YAML files of them.

    python -c "from sqlcopilot_core.config import load_profile; print(load_profile('smoke'))"
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value, key or profile is wrong; the message names which."""


def config_from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build the frozen dataclass `cls` from `values`, rejecting unknown keys and coercing scalars to field types."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    hints = get_type_hints(cls)
    for key, value in list(values.items()):
        values[key] = _coerce(value, hints[key], f"{where or cls.__name__}.{key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn strings from --set overrides into the field's type; leave everything else to __post_init__."""
    if not isinstance(value, str):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if (hint is tuple or getattr(hint, "__origin__", None) is tuple) and isinstance(value, list):
            return tuple(value)
        return value
    try:
        if hint is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if hint is tuple or getattr(hint, "__origin__", None) is tuple:
            return tuple(yaml.safe_load(value)) if value.startswith("[") else tuple(v for v in value.split(",") if v)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {getattr(hint, '__name__', hint)}") from exc
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as plain JSON-able values (tuples become lists)."""
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def load_profile(name_or_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a profile YAML (a name from sqlcopilot_core/profiles or a path): a mapping stage -> settings."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ConfigError(f"profile {str(name_or_path)!r} not found (looked at {path}); known profiles: {known}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"{path}: a profile must map stage names to mappings of settings")
    return data


def apply_overrides(profile: dict[str, dict[str, Any]], overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Apply `stage.key=value` overrides (values parsed as YAML scalars) to a copy of the profile."""
    out = {stage: dict(settings) for stage, settings in profile.items()}
    for item in overrides:
        name, sep, raw = item.partition("=")
        stage, dot, key = name.partition(".")
        if not sep or not dot or not stage or not key:
            raise ConfigError(f"override {item!r}: expected stage.key=value")
        out.setdefault(stage, {})[key] = yaml.safe_load(raw) if raw else raw
    return out


def parse_key_values(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` command-line overrides of one config, values read as YAML scalars."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out
