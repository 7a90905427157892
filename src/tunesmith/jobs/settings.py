"""An OpenAI fine-tuning job as a tunesmith run: `method` and its `hyperparameters` (each a number or
"auto"), the seed, and tunesmith's own settings from the `tunesmith` body field, layered into one
RunConfig. The server builds it when a job is created (so a bad setting is a 400 at once) and the
worker builds the same one again, with the job's files, to train.

    hyperparameters.n_epochs                 -> train.epochs            (auto: tunesmith's default, 1)
    hyperparameters.batch_size               -> train.batch_size, with gradient_accumulation 1
                                                (auto: tunesmith's 4 x 2 = 8 examples per step)
    hyperparameters.learning_rate_multiplier -> x tunesmith's default learning rate (2e-4 LoRA, 2e-5 full)
    hyperparameters.beta (dpo)               -> preference.beta         (auto: 0.1)

A `reinforcement` job trains grpo (training/grpo.py) with method.reinforcement.grader, OpenAI's grader
object, as grpo.grader: its reward for each sampled completion ({{ item.x }} reads the training row's
own field x). The grader is checked when the job is created (a 400 naming its field). Its
hyperparameters, each meaning what OpenAI's does:

    n_epochs                 -> train.epochs (passes over the prompts)
    batch_size               -> grpo.prompts_per_step (prompts per rollout; auto: 4)
    learning_rate_multiplier -> x tunesmith's default learning rate, as above
    compute_multiplier       -> x grpo.group_size (completions sampled per prompt: the exploration OpenAI's
                                multiplier buys), rounded, at least 2; reported as group_size / 8, the default
    eval_interval            -> train.eval_every (steps between validations: the mean reward of greedy
                                answers to the validation file's prompts)
    eval_samples             -> 1 only (auto): validation answers greedily, so a second sample of a prompt
                                would be a copy of the first; more is a 400
    reasoning_effort         -> "default" only: the models trained here have no reasoning-effort setting;
                                low, medium or high is a 400 rather than silently ignored

A python grader runs only where the server and the worker were started with --allow-python-graders
(JobsConfig.allow_python_graders; the worker then sets grpo.trust_python_grader). score_model and
label_model graders are refused in jobs: their grader model would run inside the training, outside
the server's per-project wall (POST /v1/fine_tuning/alpha/graders/run runs them on served models).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from tunesmith.config import RunConfig, build_config, job_settings, job_settings_schema
from tunesmith.errors import ConfigError

METHOD_TYPES = {"supervised": "sft", "dpo": "dpo", "reinforcement": "grpo"}
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
                   "train.method": "tunesmith.method", "grpo.grader": "method.reinforcement.grader"}
HYPERPARAMETERS = {"supervised": ("n_epochs", "batch_size", "learning_rate_multiplier"),
                   "dpo": ("n_epochs", "batch_size", "learning_rate_multiplier", "beta"),
                   "reinforcement": ("n_epochs", "batch_size", "learning_rate_multiplier", "eval_interval",
                                     "eval_samples", "compute_multiplier", "reasoning_effort")}
WHOLE_NUMBERS = ("n_epochs", "batch_size", "eval_interval", "eval_samples")
REASONING_EFFORTS = ("default", "auto")  # what a local model's generation means; OpenAI's low/medium/high do not


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
        raise JobSettingsError(f"method.type={kind!r} is not supported here; use supervised, dpo or reinforcement",
                               "method.type")
    chosen = settings.get("method")
    if kind in ("dpo", "reinforcement"):
        trained = METHOD_TYPES[kind]
        if chosen not in (None, trained):
            raise JobSettingsError(f"tunesmith.method={chosen!r} with method.type={kind}: a {kind} job trains "
                                   f"{trained}; leave tunesmith.method out", "tunesmith.method")
        return trained
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
    if not isinstance(given, dict):
        raise JobSettingsError(f"method.{kind}.hyperparameters: expected an object such as {{\"n_epochs\": 2}}, got "
                               f"{type(given).__name__}", f"method.{kind}.hyperparameters")
    merged = {**(legacy or {}), **given}
    allowed = HYPERPARAMETERS.get(kind, ())
    for name, value in merged.items():
        if name not in allowed:
            raise JobSettingsError(f"hyperparameters.{name} is not a {kind} hyperparameter; give "
                                   f"{', '.join(allowed)}", f"method.{kind}.hyperparameters.{name}")
        param = f"method.{kind}.hyperparameters.{name}"
        if name == "reasoning_effort":
            _check_reasoning_effort(value, param)
            continue
        if value == "auto" or value is None:
            continue
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if not number_ok or (name in WHOLE_NUMBERS and int(value) != value):
            kind_text = "a positive whole number" if name in WHOLE_NUMBERS else "a positive number"
            raise JobSettingsError(f"hyperparameters.{name}={value!r}: give {kind_text} or \"auto\"", param)
        if name == "eval_samples" and value != 1:
            raise JobSettingsError(f"hyperparameters.eval_samples={value!r}: this server validates with one greedy "
                                   "answer per validation prompt (a second would be the same text); give 1 or "
                                   "\"auto\"", param)
    return merged


def _check_reasoning_effort(value: Any, param: str) -> None:
    if value is None or value in REASONING_EFFORTS:
        return
    raise JobSettingsError(f"hyperparameters.reasoning_effort={value!r}: the models this server trains have no "
                           "reasoning-effort setting, so low, medium and high would change nothing; give \"default\" "
                           "or leave it out", param)


def reinforcement_grader(method: dict[str, Any], *, allow_python: bool) -> dict[str, Any]:
    """method.reinforcement.grader, checked against OpenAI's grader schema (JobSettingsError naming the
    field: method.reinforcement.grader.reference, ...graders.x.type)."""
    from tunesmith.graders import GraderError, validate_grader
    from tunesmith.graders.run import python_paths

    section = method.get("reinforcement") or {}
    extra = sorted(set(section) - {"grader", "hyperparameters"})
    if extra:
        raise JobSettingsError(f"method.reinforcement.{extra[0]} is not a field of OpenAI's reinforcement method; give "
                               "grader and hyperparameters", f"method.reinforcement.{extra[0]}")
    if "grader" not in section:
        raise JobSettingsError("method.reinforcement.grader: required; the grader that scores each sampled answer, "
                               "such as {\"type\": \"string_check\", ...}", "method.reinforcement.grader")
    raw = section["grader"]
    try:
        grader = validate_grader(raw)
    except GraderError as exc:
        raise _grader_problem(exc.problems) from exc
    model_graders = _model_grader_paths(grader)
    if grader.type == "label_model" or model_graders:
        where = model_graders[0] if model_graders else "grader"
        raise _grader_problem([f"{where}: {grader_kind(grader, where)} graders are not run in reinforcement jobs here "
                               "(their grader model would run inside the training, outside the server's models); "
                               "use string_check, text_similarity, python or a multi of them"])
    if python_paths(grader) and not allow_python:
        raise _grader_problem([f"{python_paths(grader)[0]}: python graders run code on the server, and this server "
                               "was not started with --allow-python-graders; use string_check, text_similarity or a "
                               "multi of them, or ask the operator to allow python graders"])
    return raw


def _grader_problem(problems: list[str]) -> JobSettingsError:
    """GraderError's lines (`grader.reference: required`) under the job's field, the first as `param`."""
    lines = [f"method.reinforcement.{problem}" for problem in problems]
    return JobSettingsError("; ".join(lines), lines[0].split(":", 1)[0].split(" ", 1)[0])


def _model_grader_paths(grader: Any) -> list[str]:
    if grader.type in ("score_model", "label_model"):
        return ["grader"]
    subs = grader.graders.items() if grader.type == "multi" else ()
    return [f"grader.graders.{name}" for name, sub in subs if sub.type in ("score_model", "label_model")]


def grader_kind(grader: Any, where: str) -> str:
    return grader.graders[where.rsplit(".", 1)[-1]].type if where.startswith("grader.graders.") else grader.type


def run_config(base_spec: str, method: dict[str, Any], hyperparameters: dict[str, Any], settings: dict[str, Any],
               seed: int, files: JobFiles, output_dir: str, *, allow_python_graders: bool = False) -> RunConfig:
    """The RunConfig of a job (ConfigError, naming the setting, when one is wrong). A python grader
    passes only with `allow_python_graders` (the server's and the worker's --allow-python-graders)."""
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
    if method.get("type") == "reinforcement":
        _reinforcement_settings(raw, method, hyperparameters, allow_python_graders)
    elif hyperparameters.get("batch_size") not in (None, "auto"):
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


def _reinforcement_settings(raw: dict[str, Any], method: dict[str, Any], hyperparameters: dict[str, Any],
                            allow_python_graders: bool) -> None:
    """grpo.grader and the settings OpenAI's reinforcement hyperparameters stand for (the module's table)."""
    from tunesmith.graders import validate_grader
    from tunesmith.graders.run import python_paths

    grader = reinforcement_grader(method, allow_python=allow_python_graders)
    grpo = raw.setdefault("grpo", {})
    grpo["grader"] = copy.deepcopy(grader)
    if python_paths(validate_grader(grader)):  # allowed, or reinforcement_grader refused it
        grpo["trust_python_grader"] = True
    if hyperparameters.get("batch_size") not in (None, "auto"):
        grpo["prompts_per_step"] = int(hyperparameters["batch_size"])
    if hyperparameters.get("compute_multiplier") not in (None, "auto"):
        base = grpo.get("group_size", default_group_size())
        grpo["group_size"] = max(2, round(base * float(hyperparameters["compute_multiplier"])))
    if hyperparameters.get("eval_interval") not in (None, "auto"):
        raw["train"]["eval_every"] = int(hyperparameters["eval_interval"])


def default_group_size() -> int:
    from tunesmith.config.grpo import GrpoConfig

    return GrpoConfig.model_fields["group_size"].default


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
    if method_type == "reinforcement":
        reported.update(batch_size=config.grpo.prompts_per_step, eval_interval=config.train.eval_every, eval_samples=1,
                        compute_multiplier=round(config.grpo.group_size / default_group_size(), 10),
                        reasoning_effort="default")
    return reported
