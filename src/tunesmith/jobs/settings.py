"""An OpenAI fine-tuning job as a tunesmith run: `method` and its `hyperparameters` (each a number or
"auto"), the seed, and tunesmith's own settings from the `tunesmith` body field, layered into one
RunConfig. The server builds it when a job is created (so a bad setting is a 400 at once) and the
worker builds the same one again, with the job's files, to train.

    hyperparameters.n_epochs                 -> train.epochs            (auto: tunesmith's default, 1)
    hyperparameters.batch_size               -> train.batch_size, with gradient_accumulation 1
                                                (auto: tunesmith's 4 x 2 = 8 examples per step)
    hyperparameters.learning_rate_multiplier -> x tunesmith's default learning rate (2e-4 LoRA, 2e-5 full)
    hyperparameters.beta (dpo)               -> preference.beta         (auto: 0.1)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from tunesmith.config import RunConfig, build_config, job_settings, job_settings_schema
from tunesmith.errors import ConfigError

METHOD_TYPES = {"supervised": "sft", "dpo": "dpo"}
# tunesmith methods a `supervised` job may name in tunesmith.method; dpo jobs are dpo
SUPERVISED_METHODS = ("sft", "pretrain", "classify", "token-classify", "extractive-qa")
# What a job's `tunesmith` field may set: each setting defined with job=True in config/ (an
# allow-list kept where the setting is defined; a setting added later is refused until someone marks
# it). Never on it: whatever names a model, a path, a dataset on the server or code to run
# (model.*, data.rag, eval.prompt_model, eval.rag, eval.groups, preference.reward ...), and what the
# service itself decides (train.device, train.memory_limit_gb, train.compile, output.*).
SECTIONS = tuple(job_settings())
# settings a job gives through OpenAI's own fields instead
GIVEN_ELSEWHERE = {"data.train": "training_file", "data.validation": "validation_file", "eval.test": "tunesmith.test_file",
                   "train.method": "tunesmith.method"}
HYPERPARAMETERS = {"supervised": ("n_epochs", "batch_size", "learning_rate_multiplier"),
                   "dpo": ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")}


class JobSettingsError(ConfigError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class JobFiles:
    """Where the job's files are, as the training run reads them."""

    train: str
    validation: str | None = None
    test: str | None = None

    @classmethod
    def in_folder(cls, folder: Path, names: list[str]) -> JobFiles:
        """From the names the files have in a job's folder (`training_file.jsonl`, ...)."""
        found = {PurePath(name).stem: str(folder / name) for name in names}
        return cls(found["training_file"], found.get("validation_file"), found.get("test_file"))


def fine_tuned_name(model: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's naming, without an organization: ft:<base>:<suffix>:<id> (the suffix may be empty)."""
    return f"ft:{model}:{suffix or ''}:{job_id.removeprefix('ftjob-')}"


def tunesmith_method(method: dict[str, Any], settings: dict[str, Any]) -> str:
    kind = method.get("type", "supervised")
    if kind not in METHOD_TYPES:
        raise JobSettingsError(f"method.type={kind!r} is not supported here; use supervised or dpo", "method.type")
    chosen = settings.get("method")
    if kind == "dpo":
        if chosen not in (None, "dpo"):
            raise JobSettingsError(f"tunesmith.method={chosen!r} with method.type=dpo: a dpo job trains dpo; leave "
                                   "tunesmith.method out", "tunesmith.method")
        return "dpo"
    if chosen is None:
        return "sft"
    if chosen not in SUPERVISED_METHODS:
        raise JobSettingsError(f"tunesmith.method={chosen!r}: a supervised job trains one of "
                               f"{', '.join(SUPERVISED_METHODS)}", "tunesmith.method")
    return chosen


def hyperparameters_of(method: dict[str, Any], legacy: dict[str, Any] | None) -> dict[str, Any]:
    """The job's hyperparameters as given (method.<type>.hyperparameters, or the older top-level field)."""
    kind = method.get("type", "supervised")
    given = ((method.get(kind) or {}).get("hyperparameters") or {}) if kind in METHOD_TYPES else {}
    merged = {**(legacy or {}), **given}
    allowed = HYPERPARAMETERS.get(kind, ())
    for name, value in merged.items():
        if name not in allowed:
            raise JobSettingsError(f"hyperparameters.{name} is not a {kind} hyperparameter; give "
                                   f"{', '.join(allowed)}", f"method.{kind}.hyperparameters.{name}")
        if value == "auto" or value is None:
            continue
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if not number_ok or (name in ("n_epochs", "batch_size") and int(value) != value):
            kind_text = "a positive whole number" if name in ("n_epochs", "batch_size") else "a positive number"
            raise JobSettingsError(f"hyperparameters.{name}={value!r}: give {kind_text} or \"auto\"",
                                   f"method.{kind}.hyperparameters.{name}")
    return merged


def run_config(base_spec: str, method: dict[str, Any], hyperparameters: dict[str, Any], settings: dict[str, Any],
               seed: int, files: JobFiles, output_dir: str) -> RunConfig:
    """The RunConfig of a job (ConfigError, naming the setting, when one is wrong)."""
    check_job_settings({key: value for key, value in settings.items() if not key.startswith("_")})
    raw: dict[str, Any] = {section: copy.deepcopy(value) for section, value in settings.items() if section in SECTIONS}
    general = (raw.get("eval") or {}).get("general_text")
    if general is not None and not _named_dataset(str(general)):
        raise JobSettingsError(f"tunesmith.eval.general_text={general!r}: give a named dataset (tunesmith data list) or "
                               "null; files on the server cannot be named", "tunesmith.eval.general_text")
    train, data, preference = raw.setdefault("train", {}), raw.setdefault("data", {}), raw.setdefault("preference", {})
    train["method"] = tunesmith_method(method, settings)
    train.setdefault("seed", seed)
    if hyperparameters.get("n_epochs") not in (None, "auto"):
        train["epochs"] = float(hyperparameters["n_epochs"])
    if hyperparameters.get("batch_size") not in (None, "auto"):
        train["batch_size"], train["gradient_accumulation"] = int(hyperparameters["batch_size"]), 1
    if hyperparameters.get("beta") not in (None, "auto"):
        preference["beta"] = float(hyperparameters["beta"])
    data["train"], data["validation"] = files.train, files.validation
    if files.validation is None:
        data.setdefault("validation_split", 0.0)  # as OpenAI: no validation file, no validation metrics
    if files.test is not None:
        raw.setdefault("eval", {})["test"] = files.test
    raw["model"] = {"name": base_spec}
    raw["output"] = {"dir": output_dir, "name": "run", "overwrite": True, "save_merged": False}
    config = build_config(raw)
    multiplier = hyperparameters.get("learning_rate_multiplier")
    if multiplier not in (None, "auto"):
        lr = (config.train.learning_rate or config.learning_rate) * float(multiplier)
        train["learning_rate"] = lr
        config = build_config(raw)
    return config


def check_job_settings(settings: dict[str, Any]) -> None:
    """A job's `tunesmith` field against the JSON Schema of what a job may set (config.job_settings_schema,
    what GET /v1/tunesmith/job_settings_schema serves): JobSettingsError naming the first problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(job_settings_schema())  # made anew: milliseconds, never stale
    errors = sorted(validator.iter_errors(settings), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    error = errors[0]
    where = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))[0]
        if not where:
            raise JobSettingsError(f"tunesmith.{extra} is not a tunesmith setting here; give "
                                   f"{', '.join(SECTIONS)}, method or test_file", f"tunesmith.{extra}")
        raise JobSettingsError(_refusal(where, extra), f"tunesmith.{where}.{extra}")
    if error.validator == "type" and where in SECTIONS:
        raise JobSettingsError(f"tunesmith.{where} must be an object of settings", f"tunesmith.{where}")
    raise JobSettingsError(f"tunesmith.{where}: {error.message}", f"tunesmith.{where}")


def _refusal(section: str, key: str) -> str:
    import difflib

    from tunesmith.config import describe_settings

    instead = GIVEN_ELSEWHERE.get(f"{section}.{key}")
    if f"{section}.{key}" not in {name for name, _, _ in describe_settings()}:  # a typo: say which one was meant
        close = difflib.get_close_matches(key, sorted(job_settings()[section]), n=1)
        hint = f"did you mean {section}.{close[0]}?" if close else f"give one of {', '.join(sorted(job_settings()[section]))}"
        return f"tunesmith.{section}.{key} is not a tunesmith setting; {hint}"
    if instead:
        return f"tunesmith.{section}.{key} cannot be set on a fine-tuning job; give {instead} instead"
    return (f"tunesmith.{section}.{key} cannot be set on a fine-tuning job (a job may not name models, files or code "
            f"on the server, nor what the service decides); {section} settings a job may set: "
            f"{', '.join(sorted(job_settings()[section]))}")


def _named_dataset(spec: str) -> bool:
    from tunesmith.data.catalog import DATASETS

    return spec.split(":", 1)[0] in DATASETS


def reported_hyperparameters(config: RunConfig, method_type: str) -> dict[str, Any]:
    """The hyperparameters in force, as OpenAI reports them on the job."""
    default_lr = 2e-4 if config.lora.enabled else 2e-5
    epochs = config.train.epochs
    reported: dict[str, Any] = {
        "n_epochs": int(epochs) if float(epochs).is_integer() else epochs,
        "batch_size": config.train.batch_size * config.train.gradient_accumulation,
        "learning_rate_multiplier": round(config.learning_rate / default_lr, 10),
    }
    if method_type == "dpo":
        reported["beta"] = config.preference.beta
    return reported
