"""The run folder: tunesmith deletes only folders it created, and replaces a run only late."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.config import build_config
from tunesmith.errors import ConfigError, RunError
from tunesmith.training.run_folder import (
    MARKER,
    check_run_folder,
    make_run_folder,
    remove_run_folder,
    start_run_folder,
)


def _config(tmp_path: Path, *overrides: str):
    return build_config({"output": {"dir": str(tmp_path / "runs"), "name": "mine"}}, list(overrides))


def test_a_folder_tunesmith_did_not_create_is_never_deleted(tmp_path: Path):
    users = tmp_path / "runs" / "mine"
    users.mkdir(parents=True)
    (users / "thesis.tex").write_text("years of work")
    config = _config(tmp_path, "output.overwrite=true")
    with pytest.raises(RunError, match="not created by tunesmith"):
        check_run_folder(config, resume=False)
    with pytest.raises(RunError, match="not created by tunesmith"):
        remove_run_folder(users)
    assert (users / "thesis.tex").read_text() == "years of work"


def test_a_tunesmith_run_is_replaced_only_with_overwrite(tmp_path: Path):
    folder = tmp_path / "runs" / "mine"
    make_run_folder(folder)
    (folder / "config.yaml").write_text("old")
    with pytest.raises(RunError, match="already holds a run"):
        check_run_folder(_config(tmp_path), resume=False)
    run, _ = check_run_folder(_config(tmp_path, "output.overwrite=true"), resume=False)
    start_run_folder(run, _config(tmp_path, "output.overwrite=true"), resume=False)
    assert (folder / MARKER).is_file() and (folder / "config.yaml").read_text() != "old"
    assert [p.name for p in folder.parent.iterdir()] == ["mine"]  # nothing left over from the removal


def test_an_empty_folder_is_used_as_it_is(tmp_path: Path):
    folder = tmp_path / "runs" / "mine"
    folder.mkdir(parents=True)
    run, _ = check_run_folder(_config(tmp_path), resume=False)
    start_run_folder(run, _config(tmp_path), resume=False)
    assert (folder / MARKER).is_file()


@pytest.mark.parametrize("name", ["../escaped", "/home/me/Documents", "a/b", "..", ".", ""])
def test_output_name_is_one_folder_name(tmp_path: Path, name: str):
    with pytest.raises(ConfigError, match="output.name=.* must be one folder name"):
        _config(tmp_path, f"output.name={name!r}" if name else "output.name=''")


def test_a_resume_may_change_the_batch_size_only_when_its_checkpoint_records_one(tmp_path: Path):
    """(the product with the number of processes is checked against it: resume.check_resume_shape)"""
    import json

    from tunesmith.config import dump_config

    folder = tmp_path / "runs" / "mine"
    make_run_folder(folder)
    (folder / "config.yaml").write_text(dump_config(_config(tmp_path, "train.batch_size=4")))
    step = folder / "checkpoints" / "step-0000002"
    step.mkdir(parents=True)
    (step / "state.json").write_text(json.dumps({"step": 2, "processes": 1}))  # from before batch sizes were recorded
    with pytest.raises(RunError, match="cannot resume with different settings .train.batch_size: 4 -> 2"):
        check_run_folder(_config(tmp_path, "train.batch_size=2"), resume=True)
    (step / "state.json").write_text(json.dumps({"step": 2, "processes": 1, "batch_size": 4}))
    assert check_run_folder(_config(tmp_path, "train.batch_size=2"), resume=True)[1] == step
    with pytest.raises(RunError, match="train.learning_rate"):  # every other setting still as before
        check_run_folder(_config(tmp_path, "train.batch_size=2", "train.learning_rate=1e-3"), resume=True)


def test_a_run_started_before_a_setting_existed_resumes_with_its_default(tmp_path: Path):
    import json

    import yaml

    from tunesmith.config import config_to_dict

    folder = tmp_path / "runs" / "mine"
    make_run_folder(folder)
    saved = config_to_dict(_config(tmp_path))
    del saved["distributed"]  # a config.yaml written before the section was added
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    step = folder / "checkpoints" / "step-0000002"
    step.mkdir(parents=True)
    (step / "state.json").write_text(json.dumps({"step": 2}))
    assert check_run_folder(_config(tmp_path), resume=True)[1] == step
    with pytest.raises(RunError, match="distributed.strategy: 'ddp' -> 'fsdp'"):
        check_run_folder(_config(tmp_path, "distributed.strategy=fsdp", "lora.enabled=false"), resume=True)
