"""model.quantization=4bit (QLoRA through bitsandbytes on the CPU): it trains, its gradients are the
real ones, the memory projection counts its weights, and `--estimate` names it when bf16 cannot fit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import write_jsonl
from tests.integration.helpers import tiny_config
from tunesmith.allocator import tcmalloc_library
from tunesmith.config import build_config
from tunesmith.errors import ConfigError, RunError
from tunesmith.models.load import load_causal_lm, resolve_model
from tunesmith.training.memory import (
    NF4_BYTES_PER_WEIGHT,
    SavedActivations,
    base_weight_bytes,
    four_bit_saving,
    plan_memory,
    weights_fit,
)

bnb = pytest.importorskip("bitsandbytes", reason="needs the quantize extra: pip install 'tunesmith[quantize]'")
FOUR_BIT = ("model.quantization=4bit", "output.save_merged=false")


def load_4bit(folder: Path):
    return load_causal_lm(resolve_model(str(folder)), dtype=torch.bfloat16, quantization="4bit")


def test_4bit_lora_trains_the_adapters_and_the_loss_falls(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    import tunesmith

    config = tiny_config(tmp_path, tiny_model_dir, chat_file, *FOUR_BIT, "train.max_steps=12", "train.eval_every=0",
                         "train.save_every=0", "eval.compare=false", "data.audit=off")
    result = tunesmith.train(config, show_progress=False)
    losses = [r["loss"] for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (result.run_dir / "model").exists()


def test_a_validation_pass_leaves_the_gradients_through_4bit_weights_intact(tiny_model_dir: Path):
    """bitsandbytes 0.50 repacks a 4-bit layer for its inference kernel, which has no backward, the first
    time it runs in eval mode without gradients: the gradient after a validation pass must be the one before."""
    model = load_4bit(tiny_model_dir)
    ids = torch.randint(3, 200, (1, 16), generator=torch.Generator().manual_seed(0))

    def input_gradient() -> torch.Tensor:
        model.train()
        embedded = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        model(inputs_embeds=embedded).logits.float().sum().backward()
        return embedded.grad

    before = input_gradient()
    model.eval()
    with torch.no_grad():
        model(ids)
    assert before.abs().max() > 0
    assert torch.equal(input_gradient(), before)


def test_a_4bit_model_leaves_no_view_of_its_file(tmp_path: Path, tiny_model_dir: Path):
    """Loaded in the file's own dtype, the weights 4 bits leave alone would be views of the mapped file,
    keeping every page of it that the quantization read resident (7 GB of a 7B model's bf16 file)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(folder)
    model = load_4bit(folder)
    with open("/proc/self/maps") as maps:
        assert str(folder) not in maps.read()
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16


def test_the_4bit_byte_counts_are_what_bitsandbytes_stores(tiny_model_dir: Path):
    """NF4_BYTES_PER_WEIGHT, base_weight_bytes (read from the files' headers) and four_bit_saving (from a
    loaded bf16 model) against the bytes of the 4-bit model bitsandbytes really holds."""
    model = load_4bit(tiny_model_dir)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.dtype == torch.uint8 for m in layers)  # every body linear layer in 4 bits
    weights = sum(m.in_features * m.out_features for m in layers)

    def state_bytes(state) -> int:
        nested = state.state2.absmax.numel() * state.state2.absmax.element_size() if state.nested else 0
        return state.absmax.numel() * state.absmax.element_size() + nested

    stored = sum(m.weight.numel() * m.weight.element_size() + state_bytes(m.weight.quant_state) for m in layers)
    assert stored == pytest.approx(weights * NF4_BYTES_PER_WEIGHT, rel=0.01)

    other = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if not isinstance(p, bnb.nn.Params4bit))
    whole, four_bit = base_weight_bytes(str(tiny_model_dir), torch.bfloat16)
    assert four_bit == pytest.approx(stored + other, rel=0.01)
    bf16 = load_causal_lm(resolve_model(str(tiny_model_dir)), dtype=torch.bfloat16)
    bf16.requires_grad_(False)
    assert whole == sum(p.numel() * 2 for p in bf16.parameters())
    assert four_bit_saving(bf16) == pytest.approx(whole - four_bit, rel=0.01)
    assert four_bit_saving(model) == 0.0  # in 4 bits already


def test_the_plan_names_4bit_only_when_checkpointing_is_not_enough():
    saved = SavedActivations(per_layer=(1000.0,) * 10, outside=500.0, layer_input=100.0)
    cpu = torch.device("cpu")
    tokens = 1_000_000
    base = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=1000.0, held=1e9)
    saving = 2e9  # what 4 bits would hold less
    # bf16 + checkpointing does not fit (on > 75% of the limit), 4 bits do
    limit = (base.projected_on - saving / 2) / 0.75 / 1e9
    tight = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=limit, held=1e9, four_bit_saving=saving)
    assert tight.checkpointing and tight.four_bit_on == pytest.approx(tight.projected_on - saving)
    assert "model.quantization=4bit" in tight.describe() and "which fits" in tight.describe()
    hopeless = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=0.1, held=1e9, four_bit_saving=saving)
    assert "still does not fit" in hopeless.describe() and "lower train.batch_size" in hopeless.describe()
    roomy = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=1000.0, held=1e9, four_bit_saving=saving)
    assert "quantization" not in roomy.describe()  # it fits: nothing to recommend
    unquantizable = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=limit, held=1e9)
    assert "quantization" not in unquantizable.describe()


@pytest.fixture(scope="module")
def weighty_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose weights are mostly linear layers (a small vocabulary): 4 bits take a third of bf16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("weighty")
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_train_and_estimate_name_4bit_when_the_bf16_weights_cannot_fit(tmp_path: Path, weighty_model_dir: Path, chat_file: Path):
    from tunesmith.training.estimate import estimate_run
    from tunesmith.training.session import run_method

    whole, four_bit = base_weight_bytes(str(weighty_model_dir), torch.bfloat16)
    assert four_bit < 0.35 * whole
    limit_gb = (whole + four_bit) / 2 / 0.75 / 1e9  # bf16 over 75% of it, 4 bits under
    settings = ("train.precision=bf16", f"train.memory_limit_gb={limit_gb}")
    with pytest.raises(RunError, match=r"in 4 bits they take .* \(which fits\): model.quantization=4bit"):
        estimate_run(tiny_config(tmp_path, weighty_model_dir, chat_file, *settings))
    # a plain run refuses the same way, before loading the weights or making its run folder
    with pytest.raises(RunError, match=r"in 4 bits they take .* \(which fits\): model.quantization=4bit"):
        run_method(tiny_config(tmp_path, weighty_model_dir, chat_file, *settings), show_progress=False)
    assert not (tmp_path / "runs").exists()
    cpu = torch.device("cpu")
    assert weights_fit(str(weighty_model_dir), torch.bfloat16, "4bit", cpu, limit_gb) is None
    assert "more than the run can use" in weights_fit(str(weighty_model_dir), torch.bfloat16, "4bit", cpu, limit_gb / 3)


@pytest.mark.parametrize(("settings", "named"), [
    (("model.quantization=4bit",), "output.save_merged=false"),
    ((*FOUR_BIT, "lora.enabled=false"), "lora.enabled=true"),
    ((*FOUR_BIT, "train.method=classify"), "set model.quantization=none"),
])
def test_4bit_settings_that_do_not_go_together_are_refused(settings: tuple[str, ...], named: str):
    with pytest.raises(ConfigError, match=re.escape(named)):
        build_config({"model": "smollm2-135m-instruct", "data": {"train": "rows.jsonl"}}, list(settings))


@pytest.mark.slow  # a 4-bit load and step of SmolLM2-135M: minutes on a busy 2-core machine
@pytest.mark.skipif(sys.platform != "linux" or tcmalloc_library() is None,
                    reason="the projection is the peak under tcmalloc: apt-get install libtcmalloc-minimal4")
def test_the_projected_peak_of_a_4bit_run_is_near_its_measured_peak(tmp_path: Path, smollm2_dir: Path):
    """SmolLM2-135M in 4 bits, one step of a row of about 520 tokens, by the CLI (under tcmalloc): the projection
    that gradient_checkpointing=auto decided on within 25% of the process's peak RSS (the tolerance of
    tests/gpu/test_cuda_memory.py)."""
    words = "river stone light garden window paper music winter forest orange silver market".split()
    rows = [{"messages": [{"role": "user", "content": " ".join(words[(i + j) % 12] for j in range(250))},
                          {"role": "assistant", "content": " ".join(words[(i * j) % 12] for j in range(250))}]}
            for i in range(4)]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    args = ["train", "--model", str(smollm2_dir), "--data", str(data), "--output", "run", "--no-progress",
            *[part for setting in (*FOUR_BIT, "data.max_length=600", "data.validation_split=0", "data.audit=off",
                                   "train.batch_size=1", "train.max_steps=1", "train.eval_before=false",
                                   "train.eval_every=0", "train.save_every=0", "eval.compare=false",
                                   f"output.dir={tmp_path / 'runs'}") for part in ("--set", setting)]]
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TUNESMITH_ALLOCATOR_RESTARTED")}
    done = subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    projected = re.search(r"projected peak ([\d.]+) GB without activation checkpointing, ([\d.]+) GB with it", done.stderr)
    assert projected and "checkpointing off" in done.stderr, done.stderr[-2000:]
    manifest = json.loads((tmp_path / "runs" / "run" / "manifest.json").read_text())
    assert manifest["machine"]["allocator"] == "tcmalloc"
    measured = manifest["results"]["peak_memory_mb"] * 2**20 / 1e9
    assert 0.75 <= measured / float(projected.group(1)) <= 1.25, (measured, projected.group(0))
