"""A run folder written before the settings became pydantic models still resumes and serves: its
config.yaml, exactly as the dataclass version dumped it (tests/fixtures), reads back as the same
settings, so --resume finds nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import tiny_config

FIXTURE = Path(__file__).parents[1] / "fixtures" / "main-3e26d63-config.yaml"


def test_a_run_folder_of_the_earlier_settings_resumes_and_serves(tmp_path: Path, tiny_model_dir: Path,
                                                                  chat_file: Path):
    import tunesmith
    from tunesmith.config import load_config
    from tunesmith.serve.models import ServedModels

    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "eval.general_text=null", name="old-run")
    result = tunesmith.train(config, show_progress=False)
    old_text = FIXTURE.read_text().replace("MODEL_DIR", str(tiny_model_dir)).replace(
        "DATA_FILE", str(chat_file)).replace("OUTPUT_DIR", str(tmp_path / "runs"))
    (result.run_dir / "config.yaml").write_text(old_text)
    assert load_config(result.run_dir / "config.yaml") == config  # the same settings, read back
    resumed = tunesmith.train(config, resume=True, show_progress=False)
    assert resumed.steps == 6
    pytest.importorskip("fastapi")
    models = ServedModels(precision="fp32")
    served = models.add_run(result.run_dir)
    assert served.kind == "adapter" and served.name == "old-run"
