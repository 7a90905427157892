"""train.gradient_checkpointing=auto: the projection it rests on, and what it does to a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tunesmith
from tests.integration.helpers import max_difference, tiny_config, weights
from tunesmith.data.batches import Batch
from tunesmith.training.loss import causal_lm_loss_sum
from tunesmith.training.memory import SavedActivations, measure_saved_activations, plan_memory

ADAPTER = "adapter/adapter_model.safetensors"


@pytest.fixture
def tiny_lora(tiny_model_dir: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))


def batch_of(rows: int, width: int) -> Batch:
    ids = torch.randint(3, 200, (rows, width), generator=torch.Generator().manual_seed(width))
    return Batch(ids, ids.clone(), None, rows * (width - 1), rows * width)


def test_saved_activations_are_what_autograd_keeps(tiny_lora):
    """The probe's figure against PyTorch's own count: the bytes a forward pass leaves allocated for
    its backward (the loss kept alive) are the saved tensors, within the loss's own few buffers."""
    cpu = torch.device("cpu")
    batch = batch_of(2, 64)
    saved = measure_saved_activations(tiny_lora, causal_lm_loss_sum, batch, cpu, "fp32")
    # the same layer twice; the first also holds what all layers share (the rotary tables), counted once
    assert len(saved.per_layer) == 2 and saved.per_layer[0] == pytest.approx(saved.per_layer[1], rel=0.1)
    assert saved.layer_input == 64 * 4  # hidden 64 in fp32, per token

    measured: list[int] = []
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept.setdefault(tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        return tensor

    weights_ = {p.untyped_storage().data_ptr() for p in tiny_lora.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = causal_lm_loss_sum(tiny_lora, batch)
    measured.append(sum(size for pointer, size in kept.items() if pointer not in weights_))
    loss.backward()  # what was kept is what the backward needs: it runs
    total = (sum(saved.per_layer) + saved.outside) * batch.input_ids.numel()
    assert total == pytest.approx(measured[0], rel=1e-6)

    # per token, the figure does not depend on the probe's length (flash attention keeps O(tokens))
    longer = measure_saved_activations(tiny_lora, causal_lm_loss_sum, batch_of(2, 128), cpu, "fp32")
    assert sum(longer.per_layer) == pytest.approx(sum(saved.per_layer), rel=0.05)


def test_projection_switches_on_only_when_the_run_would_not_fit():
    saved = SavedActivations(per_layer=(1000.0,) * 10, outside=500.0, layer_input=100.0)
    assert saved.peak(10, checkpointing=False) == 10 * (10 * 1000 + 1000 + 500)
    assert saved.peak(10, checkpointing=True) == 10 * (10 * 100 + 2 * 1000 + 500)
    cpu = torch.device("cpu")
    tokens = 1_000_000  # activations of 11.5 GB without checkpointing, 3.5 GB with it: far above what the test holds
    roomy = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=1000.0)
    assert not roomy.checkpointing and roomy.projected_off > roomy.projected_on > roomy.held > 0
    # a limit between the two projections: on, and it fits
    limit = (roomy.projected_on + roomy.projected_off) / 2 / 1e9
    tight = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=limit)
    assert tight.checkpointing and "checkpointing on" in tight.describe() and "may not fit" not in tight.describe()
    hopeless = plan_memory(saved, tokens, trainable=1000, device=cpu, limit_gb=0.001)
    assert hopeless.checkpointing and "lower train.batch_size" in hopeless.describe()


def test_auto_checkpointing_trains_as_the_explicit_settings_do(tmp_path: Path, tiny_model_dir: Path, chat_file: Path,
                                                               capfd: pytest.CaptureFixture):
    """Under a memory limit the run switches checkpointing on and says so, and trains exactly as
    gradient_checkpointing=true; with room it stays off and trains exactly as false: the probe
    draws no random numbers that the run would otherwise have drawn (LoRA dropout is on)."""
    common = ("train.max_steps=3", "train.eval_every=0", "train.save_every=0", "eval.compare=false",
              "train.precision=fp32", "lora.dropout=0.1", "output.save_merged=false", "data.audit=off")

    def run(name: str, *settings: str) -> tuple[dict, str]:
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, *common, *settings, name=name), show_progress=False)
        return weights(tmp_path / "runs" / name / ADAPTER), capfd.readouterr().err

    tight, said = run("tight", "train.memory_limit_gb=0.03")  # the weights (13 MB) fit, the whole run does not
    assert "activation checkpointing on (train.gradient_checkpointing=auto)" in said and "may not fit" in said
    explicit_on, _ = run("on", "train.gradient_checkpointing=true")
    roomy, said = run("roomy")
    assert "checkpointing off (train.gradient_checkpointing=auto)" in said
    explicit_off, said = run("off", "train.gradient_checkpointing=false")
    assert "memory:" not in said  # an explicit setting needs no projection

    assert max_difference(tight, explicit_on) == 0.0
    assert max_difference(roomy, explicit_off) == 0.0
    assert max_difference(explicit_on, explicit_off) < 1e-5  # recomputation changes no arithmetic that matters
    assert max(float(w.abs().max()) for name, w in roomy.items() if "lora_B" in name) > 1e-3  # it trained


def test_a_long_row_is_probed_by_its_last_tokens(tiny_lora):
    """The probe of a long row costs a short one's work, and gives the same per-token figures."""
    from tunesmith.training.memory import _shortened

    long = batch_of(1, 256)
    short = _shortened(long, 64)
    assert short.input_ids.shape == (1, 64) and torch.equal(short.input_ids, long.input_ids[:, -64:])
    assert short.n_loss_tokens == 63 and short.n_tokens == 64
    cpu = torch.device("cpu")
    whole = measure_saved_activations(tiny_lora, causal_lm_loss_sum, long, cpu, "fp32")
    cut = measure_saved_activations(tiny_lora, causal_lm_loss_sum, short, cpu, "fp32")
    assert sum(cut.per_layer) == pytest.approx(sum(whole.per_layer), rel=0.05)
    assert cut.outside == pytest.approx(whole.outside, rel=0.05)
