"""Every setting is defined once: the listing `tunesmith settings` prints, the JSON Schema, the docs'
reference and what a fine-tuning job may set are all read from that definition. Changing a default
or a job mark in one place changes all four."""

from __future__ import annotations

import contextlib
import io

import pytest

from tunesmith.config import (
    RunConfig,
    TrainConfig,
    build_config,
    describe_settings,
    job_settings,
    job_settings_schema,
    settings_reference,
    settings_schema,
)


@contextlib.contextmanager
def changed_field(section: type, name: str, **changes):
    """A setting's definition changed for the block (its default, its job mark), as an edit of its
    one line in config/ would change it."""
    field = section.model_fields[name]
    before = {key: getattr(field, key) for key in changes}
    for key, value in changes.items():
        setattr(field, key, value)
    section.model_rebuild(force=True)
    RunConfig.model_rebuild(force=True)
    try:
        yield
    finally:
        for key, value in before.items():
            setattr(field, key, value)
        section.model_rebuild(force=True)
        RunConfig.model_rebuild(force=True)


def settings_listing() -> str:
    from tunesmith.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["settings"])
    return printed.getvalue()


def test_a_default_changed_in_its_definition_changes_the_listing_the_schema_the_docs_and_the_jobs_schema():
    with changed_field(TrainConfig, "batch_size", default=7):
        assert build_config({}).train.batch_size == 7
        assert "train.batch_size  (default 7)" in settings_listing()
        assert settings_schema()["$defs"]["TrainConfig"]["properties"]["batch_size"]["default"] == 7
        assert "| `train.batch_size` | `7` | yes |" in settings_reference()
        assert job_settings_schema()["properties"]["train"]["properties"]["batch_size"]["default"] == 7
    assert build_config({}).train.batch_size == 4 and "train.batch_size  (default 4)" in settings_listing()


def test_a_job_mark_changed_in_its_definition_changes_what_a_job_may_set():
    from tunesmith.jobs.settings import JobSettingsError, check_job_settings

    check_job_settings({"train": {"batch_size": 2}})
    with changed_field(TrainConfig, "batch_size", json_schema_extra=None):
        assert "batch_size" not in job_settings()["train"]
        assert "batch_size" not in job_settings_schema()["properties"]["train"]["properties"]
        assert "| `train.batch_size` | `4` |  |" in settings_reference()
        with pytest.raises(JobSettingsError, match="train.batch_size cannot be set on a fine-tuning job"):
            check_job_settings({"train": {"batch_size": 2}})


def test_every_setting_is_in_the_listing_the_schema_and_the_reference_with_its_help():
    listing, reference, schema = settings_listing(), settings_reference(), settings_schema()
    rows = describe_settings()
    assert len(rows) > 80
    for key, default, help_text in rows:
        assert f"{key}  (default {default})" in listing
        assert f"| `{key}` | `{default}` |" in reference
        section, _, name = key.partition(".")
        if name and "." not in name:
            definition = schema["$defs"][type(getattr(RunConfig(), section)).__name__]
            assert definition["properties"][name]["description"] == help_text


@pytest.mark.parametrize(("settings", "param"), [
    ({"train": {"batch_size": 0}}, "tunesmith.train.batch_size"),
    ({"train": {"scheduler": "cosin"}}, "tunesmith.train.scheduler"),
    ({"lora": {"dropout": 1.5}}, "tunesmith.lora.dropout"),
    ({"eval": {"prompt_model": "/srv/x"}}, "tunesmith.eval.prompt_model"),
])
def test_the_jobs_schema_refuses_what_the_settings_refuse(settings, param):
    from tunesmith.jobs.settings import JobSettingsError, check_job_settings

    with pytest.raises(JobSettingsError) as refused:
        check_job_settings(settings)
    assert refused.value.param == param
