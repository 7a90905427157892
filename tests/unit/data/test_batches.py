import numpy as np
import pytest
import torch

from tunesmith.data.batches import IGNORE_INDEX, collate, plan_epoch
from tunesmith.data.tokenize import TokenizedExample


def example(length: int, loss_from: int = 1, start: int = 10) -> TokenizedExample:
    ids = np.arange(start, start + length, dtype=np.int32)
    mask = np.zeros(length, dtype=bool)
    mask[loss_from:] = True
    return TokenizedExample(ids, mask, "t", start)


LENGTHS = [5, 40, 7, 33, 12, 3, 25, 18, 9, 30, 2, 11, 38, 6, 21, 14, 27]


@pytest.mark.parametrize("strategy", ["pad", "group_by_length", "pack"])
def test_each_epoch_uses_every_example_once_in_an_order_fixed_by_seed_and_epoch(strategy):
    plans = plan_epoch(LENGTHS, strategy, batch_size=3, max_length=64, seed=1, epoch=0)
    used = sorted(i for plan in plans for row in plan for i in row)
    assert used == list(range(len(LENGTHS)))
    assert plans == plan_epoch(LENGTHS, strategy, batch_size=3, max_length=64, seed=1, epoch=0)
    assert plans != plan_epoch(LENGTHS, strategy, batch_size=3, max_length=64, seed=1, epoch=1)


def test_packed_rows_stay_within_max_length_and_grouping_reduces_padding():
    for plan in plan_epoch(LENGTHS, "pack", batch_size=2, max_length=64, seed=0, epoch=0):
        assert all(sum(LENGTHS[i] for i in row) <= 64 for row in plan)

    def padding(strategy: str) -> int:
        plans = plan_epoch(LENGTHS * 20, strategy, batch_size=4, max_length=64, seed=0, epoch=0)
        lengths = LENGTHS * 20
        return sum(len(plan) * max(lengths[row[0]] for row in plan) - sum(lengths[row[0]] for row in plan) for plan in plans)

    assert padding("group_by_length") < padding("pad") / 3


def test_collate_right_pads_and_masks_padding_and_prompt_tokens():
    examples = [example(4, loss_from=2), example(2, start=50)]
    batch = collate(examples, [[0], [1]], pad_id=0)
    assert batch.input_ids.tolist() == [[10, 11, 12, 13], [50, 51, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 12, 13], [IGNORE_INDEX, 51, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch.position_ids is None
    assert (batch.n_loss_tokens, batch.n_tokens) == (3, 6)


def test_collate_packs_with_positions_restarting_per_example():
    examples = [example(3), example(2, start=50)]
    batch = collate(examples, [[0, 1]], pad_id=0)
    assert batch.input_ids.tolist() == [[10, 11, 12, 50, 51]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    # the first token of each packed example is never a target, so no loss crosses examples
    assert batch.labels.tolist() == [[IGNORE_INDEX, 11, 12, IGNORE_INDEX, 51]]


def test_packed_batch_gives_the_same_loss_as_separate_examples(tiny_model_dir):
    """Attention stays inside each packed example: packing changes nothing the model computes."""
    from transformers import AutoModelForCausalLM

    from tunesmith.training.loss import causal_lm_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    examples = [example(9, start=100), example(6, start=300), example(12, start=700)]
    with torch.no_grad():
        packed = causal_lm_loss_sum(model, collate(examples, [[0, 1, 2]], pad_id=2))
        separate = sum(causal_lm_loss_sum(model, collate(examples, [[i]], pad_id=2)) for i in range(3))
        padded = causal_lm_loss_sum(model, collate(examples, [[0], [1], [2]], pad_id=2))
    assert torch.allclose(packed, separate, rtol=1e-5)
    assert torch.allclose(padded, separate, rtol=1e-5)


def test_length_grouped_steps_weigh_every_loss_token_the_same():
    """Each step's loss sum is divided by the epoch's mean loss tokens per step (not its own count),
    so a token in a batch of short examples does not count more than one in a batch of long ones."""
    from tunesmith.config import build_config
    from tunesmith.training.loop import BatchStream

    examples = [example(n, loss_from=n // 2) for n in LENGTHS * 4]
    train = build_config({"train": {"batch_size": 3, "gradient_accumulation": 1}}).train
    grouped = BatchStream(examples, train, max_length=64, pad_id=0, batching="group_by_length")
    steps = grouped.steps_per_epoch()
    total = sum(e.n_loss_tokens for e in examples)
    assert grouped.normalizer(0) == pytest.approx(total / steps)
    per_step = []
    for plan in grouped.plans(0):
        per_step.append(sum(examples[i].n_loss_tokens for row in plan for i in row))
    assert max(per_step) > 2 * min(per_step)  # grouping by length makes the steps' own counts differ widely
    assert BatchStream(examples, train, max_length=64, pad_id=0, batching="pad").normalizer(0) is None
