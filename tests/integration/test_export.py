"""Export: GGUF through llama.cpp's own converter, Ollama, a llama.cpp LoRA, vLLM's adapter rules, ONNX.

Every format is read back by a runtime other than the code that wrote it (gguf's reader,
transformers' GGUF loader or llama.cpp, Go's text/template where Go is installed, ONNX Runtime).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import tunesmith
from tests.conftest import SHARED_CACHE, chat_rows, write_jsonl
from tests.integration.helpers import tiny_config
from tunesmith.cli import main
from tunesmith.export import export_run
from tunesmith.export.converter import PACKAGE, VERSION, converter_dir
from tunesmith.export.gguf import ExportError

pytest.importorskip("sentencepiece", reason="GGUF export needs the export extra: pip install 'tunesmith[export]'")


@pytest.fixture(autouse=True)
def shared_converter(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's scripts are fetched once (a 76 MB source archive) into the tests' shared cache."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(SHARED_CACHE))
    converter_dir()
    monkeypatch.setenv("TUNESMITH_CACHE", str(private_cache))
    (private_cache / "packages").mkdir(exist_ok=True)
    link = private_cache / "packages" / f"{PACKAGE}-{VERSION}"
    if not link.exists():
        link.symlink_to(SHARED_CACHE / "packages" / f"{PACKAGE}-{VERSION}", target_is_directory=True)


def tiny_model_of(architecture: str, folder: Path, tokenizer_dir: Path) -> Path:
    """Other architectures than Llama, 2 layers, with SmolLM2's tokenizer: Qwen3 (q/k norms, untied head)
    and Gemma 3 (norms of 1 + w, scaled embeddings, norms around each block)."""
    from transformers import (
        AutoTokenizer,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GenerationConfig,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    # head_dim 128 as in the released models: transformers' GGUF loader does not read qwen3's key_length
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=128,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, bos_token_id=1,
                  eos_token_id=2, pad_token_id=2)
    torch.manual_seed(1)
    if architecture == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**common, tie_word_embeddings=False, initializer_range=0.2))
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, initializer_range=0.2))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


PROMPTS = ["Repeat the word red 2 times.", "Repeat the word blue 3 times.", "Repeat the word green 1 times."]


def train_chat_run(tmp_path: Path, model_dir: Path, name: str, *overrides: str) -> Path:
    """Trained until its answers are confident (and it stops): a random model's near-ties would make
    any rounding flip tokens, which says nothing about the export."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(96))
    config = tiny_config(tmp_path, model_dir, data, "train.max_steps=40", "data.audit=off", "train.eval_every=20",
                         "train.save_every=20", *overrides, name=name)
    return tunesmith.train(config, show_progress=False).run_dir


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return train_chat_run(tmp_path_factory.mktemp("export-lora"), tiny_model_dir, "chat-lora")


@pytest.fixture(scope="module")
def exported(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The LoRA run as f16 and q8_0 GGUF, each with its check (one conversion each for the module)."""
    folder = tmp_path_factory.mktemp("exported")
    return {quant: export_run(lora_run, "gguf", out_dir=folder, quant=quant, prompts=PROMPTS) for quant in ("f16", "q8_0")}


def test_gguf_of_a_lora_run_holds_its_template_and_stop_token_and_answers_like_it(lora_run: Path, exported: dict):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    result = exported["f16"]
    (path,) = result.files
    assert path.name == "chat-lora-f16.gguf" and path.is_file()
    assert not list(path.parent.glob(".*"))  # no staging file or merge folder left behind
    reader = GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.chat_template"].contents() == AutoTokenizer.from_pretrained(lora_run / "model").chat_template
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == 2  # <|im_end|>, the run's stop token
    assert {t.tensor_type.name for t in reader.tensors} <= {"F16", "F32"}  # norms stay f32, as llama.cpp writes them
    check = result.details["verification"]
    assert check["same_tokenization"] and check["agreement"] >= 0.97 and check["positions"] >= len(PROMPTS)
    assert check["identical_answers"] == len(PROMPTS)


def test_q8_0_is_smaller_still_agrees_and_loads_back_for_generate(lora_run: Path, exported: dict, capsys):
    f16, q8 = exported["f16"].files[0], exported["q8_0"].files[0]
    assert q8.stat().st_size < 0.7 * f16.stat().st_size
    assert "Q8_0" in exported["q8_0"].details["tensor_types"]
    assert exported["q8_0"].details["verification"]["agreement"] >= 0.93
    manifest = json.loads((q8.parent / "export.json").read_text())  # the last export's record
    assert manifest["quant"] == "q8_0" and manifest["files"] == [str(q8)]
    capsys.readouterr()
    assert main(["generate", str(f16), "--prompt", PROMPTS[0], "--max-new-tokens", "8"]) == 0
    from_file = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["generate", str(lora_run), "--prompt", PROMPTS[0], "--max-new-tokens", "8"]) == 0
    assert from_file == capsys.readouterr().out.strip().splitlines()[-1]  # the file answers as the run does


@pytest.mark.parametrize("architecture", ["qwen3", pytest.param("gemma3", marks=pytest.mark.slow)])
def test_other_architectures_full_fine_tunes_export_and_agree(tmp_path: Path, smollm2_dir: Path, architecture: str):
    run = train_chat_run(tmp_path, tiny_model_of(architecture, tmp_path / architecture, smollm2_dir), architecture,
                         "lora.enabled=false", "train.learning_rate=2e-3")
    result = export_run(run, "gguf", out_dir=tmp_path / "out", quant="bf16", prompts=PROMPTS)
    assert result.details["architecture"] == architecture and "BF16" in result.details["tensor_types"]
    assert result.details["verification"]["agreement"] >= 0.95


def test_the_check_fails_loudly_when_the_file_answers_unlike_the_run(exported: dict, tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.export.verify import check_floor, compare_answers

    (path,) = exported["f16"].files
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)  # the untrained base: same architecture and tokenizer, other weights
    answers = compare_answers(path, other, PROMPTS)
    assert answers.agreement < 0.9
    with pytest.raises(ExportError, match="does not answer like the run"):
        check_floor(answers, "f16", path)


def test_ollama_modelfile_renders_the_training_prompt_with_its_stop_tokens(lora_run: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    from tunesmith.data.examples import Message
    from tunesmith.data.template import render
    from tunesmith.export.ollama import SAMPLE_CONVERSATIONS, derive_parts, render_parts

    result = export_run(lora_run, "ollama", out_dir=tmp_path, quant="f16", verify=False)
    gguf_file, modelfile = result.files
    text = modelfile.read_text()
    assert f"FROM ./{gguf_file.name}" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text  # the template's own default, made explicit
    assert "ollama create chat-lora -f Modelfile" in (tmp_path / "README.md").read_text()
    assert all(row["same"] for row in result.details["template_check"])
    tokenizer = AutoTokenizer.from_pretrained(lora_run / "model")
    parts = derive_parts(lambda messages, generation: render(tokenizer, messages, add_generation_prompt=generation))
    system = text.split('SYSTEM """')[1].split('"""')[0]
    for conversation in SAMPLE_CONVERSATIONS:
        expected = render(tokenizer, [Message(m["role"], m["content"]) for m in conversation], add_generation_prompt=True)
        assert render_parts(parts, conversation, system) == expected
        if shutil.which("go"):  # the TEMPLATE itself, run by Go's text/template as Ollama runs it
            assert go_render(text.split('TEMPLATE """')[1].split('"""')[0], conversation, system, tmp_path) == expected


def go_render(template: str, conversation: list[dict], system: str, folder: Path) -> str:
    messages = conversation if conversation[0]["role"] == "system" else [{"role": "system", "content": system}, *conversation]
    (folder / "render.go").write_text(GO_PROGRAM)
    (folder / "template.txt").write_text(template)
    (folder / "messages.json").write_text(json.dumps(messages))
    done = subprocess.run(["go", "run", str(folder / "render.go"), str(folder / "template.txt"), str(folder / "messages.json")],
                          capture_output=True, text=True, cwd=folder, env={**__import__("os").environ, "GOCACHE": str(folder / "gocache"),
                                                                            "GOPATH": str(folder / "gopath")})
    assert done.returncode == 0, done.stderr
    return done.stdout


GO_PROGRAM = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func main() {
	source, _ := os.ReadFile(os.Args[1])
	raw, _ := os.ReadFile(os.Args[2])
	var messages []Message
	json.Unmarshal(raw, &messages)
	t := template.Must(template.New("ollama").Parse(string(source)))
	if err := t.Execute(os.Stdout, map[string]any{"Messages": messages}); err != nil {
		panic(err)
	}
}
"""


def test_lora_gguf_holds_every_pair_of_the_adapter(lora_run: Path, tmp_path: Path):
    from gguf import GGUFReader

    result = export_run(lora_run, "gguf-lora", out_dir=tmp_path)
    (path,) = result.files
    reader = GGUFReader(path)
    assert reader.fields["adapter.type"].contents() == "lora"
    assert result.details["lora"]["pairs"] == 2 * 7  # all-linear on 2 layers: q, k, v, o, gate, up, down
    assert result.details["lora"]["worst_relative_difference"] < 1e-2
    assert reader.fields["adapter.lora.alpha"].contents() == 16


def test_vllm_rules_name_what_it_refuses_and_pass_a_plain_adapter(lora_run: Path, tmp_path: Path):
    from tunesmith.export.lint import lint_adapter

    result = export_run(lora_run, "vllm", out_dir=tmp_path)
    (folder,) = result.files
    assert (folder / "adapter_model.safetensors").is_file()
    assert f"--lora-modules chat-lora={folder.resolve()}" in (folder / "README.md").read_text()
    broken = tmp_path / "broken"
    shutil.copytree(lora_run / "adapter", broken)
    settings = json.loads((broken / "adapter_config.json").read_text())
    settings.update(r=12, modules_to_save=["lm_head"], target_modules=["q_proj", "embed_tokens"], use_dora=True)
    (broken / "adapter_config.json").write_text(json.dumps(settings))
    problems = " | ".join(lint_adapter(broken, target="vllm"))
    for expected in ("modules_to_save ['lm_head']", "embedding or output layer (embed_tokens)", "DoRA", "rank 12"):
        assert expected in problems


def test_a_classifier_run_is_refused_for_gguf_and_its_onnx_gives_predicts_labels(tmp_path: Path, tiny_bert_dir: Path):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra")
    from tests.integration.test_eval import write_reviews_csv
    from tunesmith.export.onnx import onnx_probabilities
    from tunesmith.models.classifier import load_classifier, predict_probabilities

    train = write_reviews_csv(tmp_path / "reviews.csv", 64, seed=1)
    config = tiny_config(tmp_path, tiny_bert_dir, train, "train.method=classify", "data.columns.text=review_text",
                         "data.columns.label=verdict", "lora.enabled=false", "train.max_steps=4", "eval.test=null",
                         "data.audit=off", name="tone")
    run = tunesmith.train(config, show_progress=False).run_dir
    with pytest.raises(ExportError, match="--format onnx"):
        export_run(run, "gguf", out_dir=tmp_path / "out")
    result = export_run(run, "onnx", out_dir=tmp_path / "out")
    folder = result.files[0].parent
    assert json.loads((folder / "labels.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    texts = ["great fun", "a long and tedious film that never finds its feet, with actors who look lost", "ok", "bad"] * 3
    expected = predict_probabilities(load_classifier(str(run)), texts)
    got = onnx_probabilities(folder, texts, batch_size=5)  # other batches than predict's: padding must not matter
    assert (expected.argmax(1) == got.argmax(1)).all() and abs(expected - got).max() < 1e-4


def test_k_quants_without_llama_cpp_name_what_to_install(lora_run: Path, tmp_path: Path):
    """Where llama-cpp-python is missing (here it may be installed: a process where importing it
    fails, as Python's import system does for a None entry in sys.modules, stands in)."""
    import subprocess
    import sys

    script = ("import sys; sys.modules['llama_cpp'] = None\n"
              "from pathlib import Path\nfrom tunesmith.export.gguf import ExportError\nfrom tunesmith.export import export_run\n"
              f"try:\n    export_run(Path({str(lora_run)!r}), 'gguf', out_dir=Path({str(tmp_path)!r}), quant='q4_k_m')\n"
              "except ExportError as exc:\n    print(exc)\n")
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300).stdout
    assert "pip install 'tunesmith[llama-cpp]'" in printed
    assert not list(tmp_path.glob("*.gguf"))


def test_k_quants_through_llama_cpps_quantizer_where_it_is_installed(lora_run: Path, tmp_path: Path):
    pytest.importorskip("llama_cpp", reason="K-quants need llama-cpp-python (pip install 'tunesmith[llama-cpp]')")
    result = export_run(lora_run, "gguf", out_dir=tmp_path, quant="q4_k_m", prompts=PROMPTS)
    # llama-cpp-python 0.3.36 segfaults running quantized files of this hidden-64 model (its f16 file it
    # runs: the test above); the export then says so and answers with transformers' GGUF loader
    runtime = result.details["verification"]["runtime"]
    assert runtime.startswith("llama.cpp") or "llama.cpp crashed on this file" in runtime
    assert {"Q4_K", "Q6_K"} & set(result.details["tensor_types"]) or "Q5_0" in result.details["tensor_types"]
    assert result.details["verification"]["agreement"] >= 0.8
