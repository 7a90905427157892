"""From what a user writes (a YAML file, `--set a.b=c`, a job's JSON) to a validated RunConfig, and
back to YAML; every problem reported at once, each naming its key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunesmith.config.base import replace
from tunesmith.config.errors import problems_of
from tunesmith.config.run import RunConfig
from tunesmith.errors import ConfigError

# Strings allowed in place of a section, for the one setting everyone writes.
_SHORTHANDS = {"model": "name", "data": "train"}


def build_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig from nested dicts (as read from YAML) plus `a.b=c` overrides; every stage of a
    chain is checked too."""
    raw = dict(raw or {})
    for key, inner in _SHORTHANDS.items():
        if isinstance(raw.get(key), str):
            raw[key] = {inner: raw[key]}
    for override in overrides or []:
        _apply_override(raw, override)
    config = validated(raw)
    for number, _ in enumerate(config.stages):
        stage_config(config, number)
    return config


def validated(raw: Any, prefix: str = "") -> RunConfig:
    """RunConfig.model_validate with the problems as one ConfigError in tunesmith's words."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of settings, got {raw!r}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = problems_of(exc, RunConfig, prefix)
        raise ConfigError("; ".join(problems) if len(problems) == 1 else
                          f"{len(problems)} problems in the settings: " + "; ".join(problems)) from None


def stage_config(config: RunConfig, number: int, *, model: str | None = None) -> RunConfig:
    """The settings of stage `number`: the top-level ones with the stage's own layered over them."""
    stage = dict(config.stages[number])
    name = stage.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"stages[{number}].name must be text")
    if "stages" in stage or "output" in stage:
        raise ConfigError(f"stages[{number}]: a stage cannot set 'stages' or 'output'; set them at the top level")
    base = config_to_dict(replace(config, stages=[]))
    merged = _merge(base, stage, f"stages[{number}]")
    if model is not None:
        merged["model"]["name"] = model
    try:
        return validated(merged)
    except ConfigError as exc:
        raise ConfigError(f"stages[{number}] (its settings layered over the top-level ones): {exc}") from None


def stage_name(config: RunConfig, number: int) -> str:
    stage = config.stages[number]
    method = stage.get("train", {}).get("method", config.train.method) if isinstance(stage.get("train"), dict) else config.train.method
    return f"{number + 1:02d}-{stage.get('name') or method}"


def _merge(base: dict[str, Any], layer: Any, where: str) -> dict[str, Any]:
    if not isinstance(layer, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {layer!r}")
    merged = dict(base)
    for key, value in layer.items():
        if key in _SHORTHANDS and isinstance(value, str):
            value = {_SHORTHANDS[key]: value}
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "columns":
            merged[key] = _merge(merged[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path, missing: str) -> Any:
    """A YAML file's content; a ConfigError saying `missing` when it does not exist, or naming the
    line of a syntax error."""
    if not path.is_file():
        raise ConfigError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """`config` with `a.b=c` overrides applied (and validated again)."""
    return build_config(config_to_dict(config), overrides) if overrides else config


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (or none) and apply `a.b=c` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path, "no such config file; check the path")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, train: ...), got {type(loaded).__name__}")
        raw = loaded
        _reward_files_next_to(raw, path.parent)
    try:
        return build_config(raw, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


def _reward_files_next_to(raw: dict[str, Any], folder: Path) -> None:
    """A relative `file.py:name` reward written in a config file that exists next to that file
    becomes its absolute path, so the run does not depend on the working folder (`--set` values and
    paths found only from the working folder stay as written)."""
    stages = raw.get("stages") if isinstance(raw.get("stages"), list) else []
    for section in [raw.get("preference"), *[stage.get("preference") for stage in stages if isinstance(stage, dict)]]:
        reward = section.get("reward") if isinstance(section, dict) else None
        target, _, name = reward.rpartition(":") if isinstance(reward, str) else ("", "", "")
        if target.endswith(".py") and not Path(target).expanduser().is_absolute() and (folder / target).is_file():
            section["reward"] = f"{(folder / target).resolve()}:{name}"


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts, ready for YAML or JSON."""
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="python")
    import dataclasses

    return dataclasses.asdict(config)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def describe_config(config: RunConfig) -> str:
    """The resolved settings, one line per section, for the start of a run's log."""
    lines = []
    for section, values in config_to_dict(config).items():
        if not isinstance(values, dict):
            if values:
                lines.append(f"  {section}: {values}")
            continue
        shown = ", ".join(f"{key}={value}" for key, value in values.items())
        lines.append(f"  {section}: {shown}")
    return "\n" + "\n".join(lines)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE such as train.learning_rate=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part in _SHORTHANDS:
            child = {_SHORTHANDS[part]: child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node[parts[-1]] = value
