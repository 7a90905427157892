"""Training and evaluation on CUDA (bf16 autocast, SDPA's fused attention) against the fp32 CPU path
on the same batch: `pytest -m gpu` on a machine with a CUDA device (benchmarks/gpu/check.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.gpu.tiny import (
    CPU,
    CUDA,
    agreement,
    lora_model,
    needs_cuda,
    padded_batch,
    step_gradients,
)

pytestmark = needs_cuda

LENGTHS = [96, 80, 64, 50]  # right padding in three of the four rows


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path) -> tuple:
    cpu = lora_model(tiny_model_dir, CPU, "fp32")
    return cpu, lora_model(tiny_model_dir, CUDA, "bf16", like=cpu)


def test_a_bf16_training_step_on_cuda_matches_the_fp32_step_on_cpu(models, tokenizer):
    """The loss and the adapters' gradients of one step: bf16 autocast on CUDA (bf16 frozen base,
    fp32 adapters, the chunked loss) against fp32 on the CPU (its blocked attention), same weights
    and batch. bf16 keeps 8 bits of mantissa: the loss agrees to 1%, the gradients' direction to 0.99."""
    cpu_model, cuda_model = models
    batch = padded_batch(LENGTHS, len(tokenizer))
    cpu_loss, cpu_grads = step_gradients(cpu_model, batch, CPU, "fp32")
    cuda_loss, cuda_grads = step_gradients(cuda_model, batch, CUDA, "bf16")
    assert cuda_loss == pytest.approx(cpu_loss, rel=1e-2)
    assert all(name.count("lora_") for name in cuda_grads)  # the base stayed frozen on CUDA
    cosine, ratio = agreement(cpu_grads, cuda_grads)
    assert cosine > 0.99 and 0.97 < ratio < 1.03, (cosine, ratio)


def test_validation_loss_and_sequence_log_probs_on_cuda_match_cpu(models, tokenizer):
    """Evaluation's paths on CUDA in bf16: the held-out loss (models/loss_eval.py, as validation and
    perplexity measure it) and each row's summed log-probability (preference training's and
    likelihood evaluation's), against fp32 on the CPU."""
    from tunesmith.models.device import autocast
    from tunesmith.models.loss_eval import evaluate_loss
    from tunesmith.training.loss import causal_lm_loss_sum, sequence_log_probs

    cpu_model, cuda_model = models
    batches = [padded_batch(LENGTHS, len(tokenizer), seed=seed) for seed in (1, 2)]
    cpu_loss = evaluate_loss(cpu_model, batches, causal_lm_loss_sum, CPU, "fp32")
    cuda_loss = evaluate_loss(cuda_model, batches, causal_lm_loss_sum, CUDA, "bf16")
    assert cuda_loss == pytest.approx(cpu_loss, rel=1e-2)

    with torch.no_grad():
        cpu_sums, cpu_counts = sequence_log_probs(cpu_model, batches[0])
        with autocast(CUDA, "bf16"):
            cuda_sums, cuda_counts = sequence_log_probs(cuda_model, batches[0].to(CUDA))
    assert torch.equal(cuda_counts.cpu(), cpu_counts)
    assert torch.allclose(cuda_sums.cpu(), cpu_sums, rtol=2e-2)


def test_training_attention_on_cuda_is_a_fused_kernel_and_flash_equals_math(models, tokenizer):
    """tunesmith's training batches carry no attention mask (right padding, causal attention), so on
    CUDA SDPA runs a fused kernel (flash, memory-efficient or cuDNN), never the math fallback; flash
    forced gives the math kernel's loss and gradients. A mask slipping in would make the forced
    flash step fail ("No available kernel")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    _, cuda_model = models
    batch = padded_batch(LENGTHS, len(tokenizer))
    with profile(activities=[ProfilerActivity.CPU]) as profiler:  # the operators PyTorch dispatched
        step_gradients(cuda_model, batch, CUDA, "bf16")
    names = {event.key for event in profiler.key_averages()}
    fused = {n for n in names if any(kernel in n for kernel in ("_flash_attention", "_efficient_attention", "_cudnn_attention"))}
    assert fused, sorted(n for n in names if "attention" in n)
    assert not any("_scaled_dot_product_attention_math" in n for n in names)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        flash_loss, flash_grads = step_gradients(cuda_model, batch, CUDA, "bf16")
    with sdpa_kernel(SDPBackend.MATH):
        math_loss, math_grads = step_gradients(cuda_model, batch, CUDA, "bf16")
    assert flash_loss == pytest.approx(math_loss, rel=1e-2)
    cosine, ratio = agreement(math_grads, flash_grads)
    assert cosine > 0.99 and 0.97 < ratio < 1.03, (cosine, ratio)
