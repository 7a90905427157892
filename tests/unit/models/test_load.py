import time
from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.models.catalog import CATALOG
from tunesmith.models.load import load_causal_lm, load_tokenizer, resolve_model


def test_catalog_model_is_a_materialized_folder_that_loads_fast(smollm2_dir: Path):
    source = resolve_model("smollm2-135m-instruct")
    assert source.kind == "catalog" and Path(source.location).resolve() == smollm2_dir.resolve()
    started = time.perf_counter()
    model = load_causal_lm(source)
    tokenizer = load_tokenizer(source)
    assert time.perf_counter() - started < 5  # seconds, not the ~30 s of reading the GGUF
    assert model.config.num_hidden_layers == 30 and tokenizer.eos_token == "<|im_end|>"
    assert (smollm2_dir / "model.safetensors").is_file() and "<|im_start|>" in tokenizer.chat_template


def test_local_folder_and_hub_id_are_told_apart(tiny_model_dir: Path, tmp_path: Path):
    assert resolve_model(str(tiny_model_dir)).kind == "folder"
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert hub.kind == "hub" and not hub.is_local
    assert "smollm2-135m-instruct" in CATALOG


def test_hub_id_offline_fails_at_once_with_one_clear_line():
    started = time.perf_counter()
    with pytest.raises(ModelError) as error:
        load_tokenizer(resolve_model("some-org/some-model"))
    assert time.perf_counter() - started < 10
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
