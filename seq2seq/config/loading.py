"""Reading a config: YAML files and ``section.key=value`` overrides, every value checked against its annotation.

An unknown section or key, or a value of the wrong type, raises :class:`~seq2seq.config.sections.ConfigError`
naming the file (or override) and the key and listing what is valid; :func:`load_config` then runs the range
checks (seq2seq/config/checks.py).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from seq2seq.config.sections import SECTIONS, Config, ConfigError


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against the annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' = {value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or value is None:
            raise ConfigError(
                f"config key '{key}' must be a string, got {value!r} (YAML reads no/yes/on/off/~ specially: quote it)"
            )
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")  # pragma: no cover


@functools.lru_cache(maxsize=None)
def _section_fields(section_cls: type) -> dict[str, Any]:
    """Field name -> resolved type of a section dataclass (resolved once per class: a config file's keys used to
    re-evaluate every section's annotations per key, about 0.2 s of loading a model)."""
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def _apply(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown config section '{section}'; valid sections: {', '.join(SECTIONS)}")
    section_obj = getattr(cfg, section)
    fields = _section_fields(type(section_obj))
    if key not in fields:
        raise ConfigError(
            f"{source}: unknown config key '{section}.{key}'; valid keys in '{section}': {', '.join(fields)}"
        )
    setattr(section_obj, key, _coerce(value, fields[key], f"{section}.{key}"))


def config_from_dict(raw: dict[str, Any] | None, source: str = "config") -> Config:
    """Build a Config from nested dicts (missing keys keep their defaults)."""
    cfg = Config()
    if raw is None:
        return cfg
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown config section '{section}'; valid sections: {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of keys to values")
        for key, value in values.items():
            _apply(cfg, section, str(key), value, source)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (value in YAML syntax) into ``(section, key, value)``."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.lr=0.0005")
    dotted, raw_value = text.split("=", 1)
    if dotted.count(".") != 1:
        raise ConfigError(
            f"override '{text}': the key must be section.key with a section from {', '.join(SECTIONS)}"
        )
    section, key = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': cannot parse the value: {err}") from None
    return section, key, value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings; values of string keys are taken verbatim (``tgt_lang=no``)."""
    for text in overrides:
        section, key, value = parse_override(text)
        section_obj = getattr(cfg, section, None)
        if section in SECTIONS and _section_fields(type(section_obj)).get(key) is str:
            value = text.split("=", 1)[1].strip()
        _apply(cfg, section, key, value, f"override '{text}'")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    raw: Any = None
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    cfg = config_from_dict(raw, source)
    apply_overrides(cfg, overrides or [])
    apply_budget_rule(cfg, raw, overrides or [])
    return cfg.validate()


#: the keys of the training budget: a config that sets a step or epoch limit and does not name the time limit
#: means no time limit, not the default 20 minutes on top of it
STEP_LIMITS, TIME_LIMIT = ("max_steps", "max_epochs"), "max_minutes"


def apply_budget_rule(cfg: Config, raw: Any, overrides: list[str]) -> None:
    """``train.max_minutes`` (default 20) is the budget of a config that names no budget; one that sets
    ``train.max_steps`` or ``train.max_epochs`` (file or override) without naming ``train.max_minutes`` gets no
    time limit (``--max-steps 500`` means 500 steps, not 500 steps or 20 minutes)."""
    train = raw.get("train") if isinstance(raw, dict) else None
    named = set(train) if isinstance(train, dict) else set()
    named.update(key for section, key, _ in map(parse_override, overrides) if section == "train")
    if TIME_LIMIT not in named and any(getattr(cfg.train, key) > 0 for key in STEP_LIMITS if key in named):
        cfg.train.max_minutes = 0.0
