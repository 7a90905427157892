"""The chunked cross-entropy (training/loss.py) on CUDA: it equals the unchunked loss and its
gradients, and it is the path a bf16 model on CUDA trains with."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.gpu.tiny import CUDA, lora_model, needs_cuda, padded_batch

pytestmark = needs_cuda


def reference(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits.float() + bias.float()
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def loss_and_grads(loss_fn, hidden, weight, bias, targets) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (hidden, weight, bias)]
    loss = loss_fn(*leaves, targets)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves if leaf is not None]


@pytest.mark.parametrize("with_bias", [False, True])
def test_the_chunked_loss_equals_the_unchunked_on_cuda(with_bias: bool):
    """Chunks of 37 rows (a last, short one too) against one cross-entropy over all logits: in fp32
    to rounding, and under bf16 autocast to bf16's rounding of the same products."""
    from tunesmith.training.loss import linear_cross_entropy_sum

    generator = torch.Generator(device=CUDA).manual_seed(0)
    hidden = torch.randn(300, 64, device=CUDA, generator=generator)
    weight = torch.randn(5000, 64, device=CUDA, generator=generator) * 0.2
    bias = torch.randn(5000, device=CUDA, generator=generator) if with_bias else None
    targets = torch.randint(0, 5000, (300,), device=CUDA, generator=generator)

    def chunked(h, w, b, t):
        return linear_cross_entropy_sum(h, w, b, t, chunk=37)

    expected, expected_grads = loss_and_grads(reference, hidden, weight, bias, targets)
    found, found_grads = loss_and_grads(chunked, hidden, weight, bias, targets)
    assert found.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(found_grads, expected_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)

    with torch.autocast("cuda", dtype=torch.bfloat16):
        found, found_grads = loss_and_grads(chunked, hidden, weight, bias, targets)
        unchunked, unchunked_grads = loss_and_grads(reference, hidden, weight, bias, targets)
    assert found.item() == pytest.approx(unchunked.item(), rel=5e-3)
    assert found.item() == pytest.approx(expected.item(), rel=1e-2)
    for got, want in zip(found_grads, unchunked_grads):
        assert (got.float() - want.float()).norm() <= 2e-2 * want.float().norm()


def test_a_bf16_model_on_cuda_trains_with_the_chunked_loss(tiny_model_dir: Path, tokenizer):
    """The probe that picks the loss path (choose_loss_path) passes for a bf16 base on CUDA, as
    trainable_model runs it (no autocast yet), without a warning; under autocast the chunked loss
    equals the model's own forward's loss."""
    from tunesmith.models.device import autocast
    from tunesmith.training.loss import _own_forward_loss_sum, causal_lm_loss_sum, choose_loss_path

    model = lora_model(tiny_model_dir, CUDA, "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_loss_path(model)
    batch = padded_batch([96, 70, 40], len(tokenizer)).to(CUDA)
    with torch.no_grad(), autocast(CUDA, "bf16"):
        chunked = causal_lm_loss_sum(model, batch)
        own = _own_forward_loss_sum(model, batch)
    assert chunked.item() == pytest.approx(own.item(), rel=5e-3)
