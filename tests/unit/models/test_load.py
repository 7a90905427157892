from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.models.catalog import CATALOG
from tunesmith.models.load import load_causal_lm, load_tokenizer, resolve_model


def test_catalog_model_is_a_materialized_folder_that_loads_fast(smollm2_dir: Path):
    source = resolve_model("smollm2-135m-instruct")
    assert source.kind == "catalog" and Path(source.location).resolve() == smollm2_dir.resolve()
    written = {path.name: path.stat().st_mtime_ns for path in smollm2_dir.iterdir()}
    model = load_causal_lm(source)
    tokenizer = load_tokenizer(source)
    # read from the folder made once, not made again from the GGUF (~30 s) on each load; no timing
    # assertion: the same load took 8 s alone on a 2-core AVX2 CPU and under 5 in the suite
    assert {path.name: path.stat().st_mtime_ns for path in smollm2_dir.iterdir()} == written
    assert model.config.num_hidden_layers == 30 and tokenizer.eos_token == "<|im_end|>"
    assert (smollm2_dir / "model.safetensors").is_file() and "<|im_start|>" in tokenizer.chat_template


def test_local_folder_and_hub_id_are_told_apart(tiny_model_dir: Path, tmp_path: Path):
    assert resolve_model(str(tiny_model_dir)).kind == "folder"
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert hub.kind == "hub" and not hub.is_local
    assert "smollm2-135m-instruct" in CATALOG


def test_hub_id_offline_fails_with_one_clear_line():
    """(That it asks nothing of the hub once found unreachable, rather than retrying for half a
    minute, is test_load_errors.py's test_offline_the_hub_client_sends_no_request.)"""
    with pytest.raises(ModelError) as error:
        load_tokenizer(resolve_model("some-org/some-model"))
    message = str(error.value)
    assert "Hub is unreachable" in message and "--model PATH" in message and "\n" not in message


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "nothing-here.gguf", "no such .gguf file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "has no config.json"),
    (lambda p: Path("not_a_model_name"), "not a catalog name"),
])
def test_bad_model_names_say_what_is_accepted(tmp_path: Path, make, message):
    with pytest.raises(ModelError, match=message):
        resolve_model(str(make(tmp_path)))
