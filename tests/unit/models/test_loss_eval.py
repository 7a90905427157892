"""A model's mean loss over batches (models/loss_eval.py): what the training loop validates with and
what evaluation's perplexity reads, the same number either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.data.batches import collate
from tunesmith.data.tokenize import TokenizedExample
from tunesmith.models.loss_eval import evaluate_loss, loss_sums
from tunesmith.training.distributed.world import without_loss
from tunesmith.training.loop import evaluate
from tunesmith.training.loss import causal_lm_loss_sum

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def example(length: int, start: int, prompt: int) -> TokenizedExample:
    mask = np.arange(length) >= prompt  # the first `prompt` tokens are not in the loss
    return TokenizedExample(np.arange(start, start + length, dtype=np.int32), mask, "t", start)


def batches() -> list:
    examples = [example(9, 100, 3), example(5, 300, 1), example(12, 500, 6), example(4, 700, 2)]
    return [collate(examples, [[0], [1]], pad_id=2), collate(examples, [[2], [3]], pad_id=2),
            collate(examples, [[1]], pad_id=2)]


@pytest.mark.parametrize("training", [True, False])
def test_the_mean_is_over_every_loss_token_and_the_models_mode_is_kept(tiny_lm, training: bool):
    tiny_lm.train(training)
    held_out = batches()
    with torch.no_grad():
        was = tiny_lm.training
        tiny_lm.eval()
        expected = sum(float(causal_lm_loss_sum(tiny_lm, b)) for b in held_out) / sum(b.n_loss_tokens for b in held_out)
        tiny_lm.train(was)
    assert sum(b.n_loss_tokens for b in held_out) == 6 + 4 + 6 + 2 + 4
    assert evaluate_loss(tiny_lm, held_out, causal_lm_loss_sum, CPU, "fp32") == pytest.approx(expected, rel=1e-6)
    assert tiny_lm.training is training
    assert all(p.grad is None for p in tiny_lm.parameters())


def test_a_batch_without_loss_tokens_runs_and_counts_for_nothing(tiny_lm):
    held_out = batches()
    calls = []

    def counted(model, batch):
        calls.append(batch.n_loss_tokens)
        return causal_lm_loss_sum(model, batch)

    total, tokens, metrics = loss_sums(tiny_lm, held_out + [without_loss(held_out[0])], counted, CPU, "fp32")
    assert calls == [10, 8, 4, 0] and tokens == 22 and metrics == {}
    assert total / tokens == pytest.approx(evaluate_loss(tiny_lm, held_out, causal_lm_loss_sum, CPU, "fp32"), rel=1e-6)


def test_the_training_loops_validation_is_the_same_measure(tiny_lm):
    def with_metric(model, batch):
        return causal_lm_loss_sum(model, batch), {"tokens": float(batch.n_loss_tokens)}

    val_loss, metrics = evaluate(tiny_lm, batches(), with_metric, CPU, "fp32")
    assert val_loss == evaluate_loss(tiny_lm, batches(), causal_lm_loss_sum, CPU, "fp32")
    assert metrics == {"tokens": 1.0}  # a metric's sum over its loss tokens, as a mean per token
