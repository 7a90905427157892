"""GRPO's arithmetic against cases worked by hand: group advantages, the clipped objective with its
KL term, and each loss normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.training.grpo import (
    ADVANTAGE_EPSILON,
    clipped_token_losses,
    group_advantages,
    loss_units,
    no_signal_share,
    summed_loss,
)


def test_advantages_are_normalised_within_each_group_and_a_tied_group_has_none():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 1: mean 0.5, sample standard deviation sqrt((4 x 0.25) / 3); group 2: all equal
    std = math.sqrt(1.0 / 3.0)
    expected = [0.5 / (std + ADVANTAGE_EPSILON), -0.5 / (std + ADVANTAGE_EPSILON)]
    assert group_advantages(rewards, 4, scale=True).tolist() == pytest.approx(
        [expected[0], expected[1], expected[1], expected[0], 0, 0, 0, 0], abs=1e-6)
    assert group_advantages(rewards, 4, scale=False).tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert no_signal_share(rewards, 4) == 0.5
    # the groups are each 4 rewards in a row: the same rewards grouped in 2s are other groups
    assert no_signal_share(rewards, 2) == 0.5 and group_advantages(rewards, 2, scale=False)[:4].tolist() == [0.5, -0.5, -0.5, 0.5]


def hand_case() -> dict:
    """Two completions of 2 and 3 tokens (the third column of row 0 is padding, not in the loss)."""
    mask = torch.tensor([[True, True, False], [True, True, True]])
    return {
        "mask": mask,
        "log_probs": torch.tensor([[-1.0, -0.5, 99.0], [-2.0, -1.0, -0.3]]),
        "old": torch.tensor([[-1.0, -1.0, 99.0], [-1.0, -1.1, -0.3]]),
        "reference": torch.tensor([[-1.0, -1.0, 99.0], [-2.0, -1.0, -0.1]]),
        "advantages": torch.tensor([1.0, -1.0]),
    }


def hand_token_losses(beta: float) -> tuple[list[float], list[float], list[bool]]:
    """Each token's -min(r A, clip(r, 0.8, 1.2) A) + beta k3, worked out token by token."""
    def k3(ref: float, logp: float) -> float:
        return math.exp(ref - logp) - (ref - logp) - 1

    kl = [k3(-1.0, -1.0), k3(-1.0, -0.5), k3(-2.0, -2.0), k3(-1.0, -1.0), k3(-0.1, -0.3)]
    objective = [
        -1.0,                # r = 1, A = 1: -(1 x 1)
        -1.2,                # r = e^0.5 = 1.65 > 1.2 with A = 1: clipped to -(1.2 x 1)
        0.8,                 # r = e^-1 = 0.37 < 0.8 with A = -1: clipped, -min(-0.37, -0.8) = 0.8
        math.exp(0.1),       # r = e^0.1 = 1.105 within the clip, A = -1: -(-1.105)
        1.0,                 # r = 1, A = -1
    ]
    clipped = [False, True, True, False, False]
    return [o + beta * k for o, k in zip(objective, kl)], kl, clipped


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_each_loss_type_gives_the_hand_computed_value(loss_type: str):
    case, beta, max_new_tokens = hand_case(), 0.1, 4
    mask = case["mask"]
    rows = torch.nonzero(mask)[:, 0]  # the loss tokens row by row, as the loss function sees them
    losses, kl, clipped = clipped_token_losses(case["log_probs"][mask], case["old"][mask], case["reference"][mask],
                                               case["advantages"][rows], clip_epsilon=0.2, beta=beta)
    token_losses, token_kl, token_clipped = hand_token_losses(beta)
    assert losses.tolist() == pytest.approx(token_losses, abs=1e-6)
    assert kl.tolist() == pytest.approx(token_kl, abs=1e-6) and clipped.tolist() == token_clipped
    expected = {
        "dapo": sum(token_losses) / 5,  # every token of the step weighs the same
        "grpo": ((token_losses[0] + token_losses[1]) / 2 + sum(token_losses[2:]) / 3) / 2,  # per completion, then over them
        "dr_grpo": sum(token_losses) / (2 * max_new_tokens),  # a constant: completions x longest completion allowed
    }[loss_type]
    value = summed_loss(losses, rows, 2, loss_type, max_new_tokens) / loss_units(loss_type, 5, 2)
    assert float(value) == pytest.approx(expected, abs=1e-6)


def test_the_loss_of_a_step_split_into_micro_batches_is_the_loss_of_the_whole_step():
    """The loop sums the micro-batches' summed losses and divides by the sum of their units."""
    case = hand_case()
    for loss_type in ("dapo", "grpo", "dr_grpo"):
        parts = []
        for row in range(2):
            mask = case["mask"][row:row + 1]
            rows = torch.nonzero(mask)[:, 0]
            losses, _, _ = clipped_token_losses(case["log_probs"][row:row + 1][mask], case["old"][row:row + 1][mask],
                                                case["reference"][row:row + 1][mask], case["advantages"][row:row + 1][rows],
                                                0.2, 0.1)
            parts.append((summed_loss(losses, rows, 1, loss_type, 4), loss_units(loss_type, int(mask.sum()), 1)))
        whole = sum(float(s) for s, _ in parts) / sum(u for _, u in parts)
        mask = case["mask"]
        rows = torch.nonzero(mask)[:, 0]
        losses, _, _ = clipped_token_losses(case["log_probs"][mask], case["old"][mask], case["reference"][mask],
                                            case["advantages"][rows], 0.2, 0.1)
        assert whole == pytest.approx(float(summed_loss(losses, rows, 2, loss_type, 4)) / loss_units(loss_type, 5, 2))


def test_at_the_sampling_policy_the_ratio_is_one_nothing_is_clipped_and_the_gradient_is_the_advantage():
    log_probs = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    advantages = torch.tensor([2.0, -1.0, 0.5])
    losses, kl, clipped = clipped_token_losses(log_probs, log_probs.detach(), None, advantages, 0.2, 0.04)
    assert kl is None and not clipped.any()
    losses.sum().backward()
    assert log_probs.grad.tolist() == pytest.approx((-advantages).tolist())  # d(-r A)/d logp = -A at r = 1
