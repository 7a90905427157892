"""An OpenAI job's method, hyperparameters and tunesmith settings as one tunesmith RunConfig."""

from __future__ import annotations

import pytest

pytest.importorskip("sqlalchemy", reason="the worker needs the serve extra (pip install -e .[serve])")

from tunesmith.data.examples import Problem  # noqa: E402
from tunesmith.errors import DataError  # noqa: E402
from tunesmith.jobs.settings import (  # noqa: E402
    JobFiles,
    JobSettingsError,
    fine_tuned_name,
    hyperparameters_of,
    reported_hyperparameters,
    run_config,
)
from tunesmith.jobs.worker import bad_lines_message  # noqa: E402

FILES = JobFiles("/jobs/ftjob-1/files/training_file.jsonl")


def config_of(method: dict, settings: dict | None = None, legacy: dict | None = None):
    return run_config("smollm2-135m-instruct", method, hyperparameters_of(method, legacy), settings or {}, 7, FILES,
                      "/jobs/ftjob-1")


def test_hyperparameters_map_onto_tunesmith_settings():
    config = config_of({"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 3, "batch_size": 16, "learning_rate_multiplier": 0.5}}})
    assert config.train.method == "sft" and config.train.epochs == 3.0 and config.train.seed == 7
    assert config.train.batch_size == 16 and config.train.gradient_accumulation == 1
    assert config.learning_rate == pytest.approx(1e-4)  # half of LoRA's default 2e-4
    assert config.data.train == FILES.train and config.data.validation_split == 0.0
    assert config.output.dir == "/jobs/ftjob-1" and config.output.name == "run"
    assert reported_hyperparameters(config, "supervised") == {"n_epochs": 3, "batch_size": 16,
                                                              "learning_rate_multiplier": 0.5}


def test_auto_means_tunesmiths_defaults_and_the_job_reports_them():
    config = config_of({"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": "auto", "beta": "auto"}}})
    assert config.train.method == "dpo" and config.preference.beta == 0.1
    assert reported_hyperparameters(config, "dpo") == {"n_epochs": 1, "batch_size": 8,
                                                       "learning_rate_multiplier": 1.0, "beta": 0.1}
    assert config_of({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}}).preference.beta == 0.3
    legacy = config_of({"type": "supervised"}, legacy={"n_epochs": 2})  # the older top-level field
    assert legacy.train.epochs == 2.0


def test_tunesmith_settings_layer_over_and_the_method_may_change_within_supervised():
    config = config_of({"type": "supervised"}, {"lora": {"rank": 4}, "method": "classify",
                                                "train": {"save_every": 7}})
    assert config.lora.rank == 4 and config.train.method == "classify" and config.train.save_every == 7


@pytest.mark.parametrize(("method", "settings", "legacy", "param"), [
    ({"type": "reinforcement"}, {}, None, "method.reinforcement.grader"),  # a reinforcement job needs its grader
    ({"type": "reinforcement"}, {"grpo": {"trust_python_grader": True}}, None, "tunesmith.grpo.trust_python_grader"),
    ({"type": "dpo"}, {"method": "sft"}, None, "tunesmith.method"),
    ({"type": "supervised"}, {"method": "online-dpo"}, None, "tunesmith.method"),
    ({"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}, {}, None,
     "method.supervised.hyperparameters.beta"),
    ({"type": "supervised"}, {}, {"n_epochs": 1.5}, "method.supervised.hyperparameters.n_epochs"),
    ({"type": "supervised"}, {}, {"learning_rate_multiplier": 0}, "method.supervised.hyperparameters.learning_rate_multiplier"),
    ({"type": "supervised"}, {"data": {"train": "/etc/passwd"}}, None, "tunesmith.data.train"),
    ({"type": "supervised"}, {"preference": {"reward": "evil.py:f"}}, None, "tunesmith.preference.reward"),
    ({"type": "supervised"}, {"eval": {"general_text": "/etc/passwd"}}, None, "tunesmith.eval.general_text"),
    ({"type": "supervised"}, {"output": {"dir": "/"}}, None, "tunesmith.output"),
    ({"type": "supervised"}, {"lora": 4}, None, "tunesmith.lora"),
    # the deny-list let these through: another project's run folder, any server path, a hub download
    ({"type": "supervised"}, {"eval": {"prompt_model": "/srv/jobs/ftjob-other/run"}}, None,
     "tunesmith.eval.prompt_model"),
    ({"type": "supervised"}, {"eval": {"rag": {"corpus": "/etc"}}}, None, "tunesmith.eval.rag"),
    ({"type": "supervised"}, {"data": {"rag": {"corpus": "/etc"}}}, None, "tunesmith.data.rag"),
    ({"type": "supervised"}, {"eval": {"groups": "/etc/hosts"}}, None, "tunesmith.eval.groups"),
    ({"type": "supervised"}, {"train": {"device": "cuda:7"}}, None, "tunesmith.train.device"),
    ({"type": "supervised"}, {"train": {"memory_limit_gb": 1000}}, None, "tunesmith.train.memory_limit_gb"),
    ({"type": "supervised"}, {"preference": {"trust_reward_code": True}}, None, "tunesmith.preference.trust_reward_code"),
    ({"type": "supervised"}, {"train": {"method": "dpo"}}, None, "tunesmith.train.method"),
])
def test_what_a_job_may_not_set_is_refused_naming_the_parameter(method, settings, legacy, param):
    with pytest.raises(JobSettingsError) as refused:
        config_of(method, settings, legacy)
    assert refused.value.param == param


def test_every_setting_a_job_may_set_names_no_model_path_or_code():
    """The allow-list against the settings' own help: none of them takes a model, a file, a folder
    or code (a setting whose help says so is never on it)."""
    from tunesmith.config import describe_settings, job_settings

    helps = {key: text for key, _, text in describe_settings()}
    allowed = [f"{section}.{key}" for section, keys in job_settings().items() for key in keys]
    assert set(allowed) <= set(helps)  # every allowed name is a real setting
    naming = [key for key in allowed if key != "eval.general_text" and any(
        word in helps[key].lower() for word in ("a file", "folder", "hub id", "python", ".py", "path"))]
    assert naming == []


def test_names_and_bad_line_messages():
    assert fine_tuned_name("tiny", "support", "ftjob-abc") == "ft:tiny:support:abc"
    assert fine_tuned_name("tiny", None, "ftjob-abc") == "ft:tiny::abc"
    problems = [Problem(f"/x/training_file.jsonl:{line}", "no assistant reply", "add one") for line in (2, 9)]
    problems += [Problem(f"/x/training_file.jsonl:{line}", "not JSON") for line in range(10, 16)]
    message = bad_lines_message(DataError("bad", problems), "file-1", "training_file")
    assert message.startswith("training_file file-1 has 8 invalid rows: line 2: no assistant reply (add one); "
                              "line 9: no assistant reply (add one); line 10: not JSON")
    assert message.endswith("and 3 more") and "/x/" not in message
