import math

import pytest
import torch

from tunesmith.data.examples import Message
from tunesmith.data.formats import choose_format, convert_records
from tunesmith.data.read import Record
from tunesmith.training.online_dpo import PromptItem, build_pairs
from tunesmith.training.preference import dpo_losses, simpo_losses


def test_dpo_loss_matches_a_hand_computed_value():
    chosen, rejected = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    ref_chosen, ref_rejected = torch.tensor([-11.0, -4.5]), torch.tensor([-11.5, -3.5])
    losses, chosen_reward, rejected_reward = dpo_losses(chosen, rejected, ref_chosen, ref_rejected, beta=0.1)
    # pair 1: 0.1 * ((-10 + 11) - (-12 + 11.5)) = 0.15 ; pair 2: 0.1 * ((-4 + 4.5) - (-3 + 3.5)) = 0.0
    expected = [-math.log(1 / (1 + math.exp(-0.15))), math.log(2)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert chosen_reward.tolist() == pytest.approx([0.1, 0.05])
    assert rejected_reward.tolist() == pytest.approx([-0.05, 0.05])


def test_simpo_loss_matches_a_hand_computed_value():
    losses, chosen_reward, rejected_reward = simpo_losses(torch.tensor([-8.0]), torch.tensor([-9.0]), torch.tensor([4]),
                                                          torch.tensor([3]), beta=2.0, gamma=0.5)
    # 2 * (-8/4) - 2 * (-9/3) - 0.5 = -4 + 6 - 0.5 = 1.5
    assert losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))))
    assert (chosen_reward.item(), rejected_reward.item()) == pytest.approx((-4.0, -6.0))


def prompt(n: int) -> PromptItem:
    return PromptItem((Message("user", f"question {n}"),), None, "p", n, 3)


def test_pairs_take_the_best_and_the_worst_and_never_a_completion_with_itself():
    rows = build_pairs([prompt(1), prompt(2), prompt(3)],
                       ["a", "bb", "ccc", "same", "same", "same", "x", "y", "y "],
                       [0.1, 0.9, 0.5, 1.0, 1.0, 1.0, 0.2, 0.7, 0.7], samples=3)
    assert (rows[0]["chosen"], rows[0]["rejected"]) == (1, 0)
    assert rows[1]["chosen"] is None  # all tied
    assert (rows[2]["chosen"], rows[2]["rejected"]) == (1, 0)
    rows = build_pairs([prompt(1)], ["same answer", "same answer "], [0.9, 0.1], samples=2)
    assert rows[0]["chosen"] is None  # different scores but the same text: no pair


@pytest.mark.parametrize("row", [
    {"prompt": "Write a haiku", "chosen": "good", "rejected": "bad"},
    {"prompt": [{"role": "user", "content": "Write a haiku"}], "chosen": [{"role": "assistant", "content": "good"}],
     "rejected": [{"role": "assistant", "content": "bad"}]},
    {"conversations": [{"from": "human", "value": "Write a haiku"}], "chosen": {"from": "gpt", "value": "good"},
     "rejected": {"from": "gpt", "value": "bad"}},
    {"input": {"messages": [{"role": "user", "content": "Write a haiku"}]},
     "preferred_output": [{"role": "assistant", "content": "good"}], "non_preferred_output": [{"role": "assistant", "content": "bad"}]},
])
def test_every_common_preference_shape_becomes_the_same_pair(row):
    records = [Record("p.jsonl", 1, row)]
    (example,), problems = convert_records(records, choose_format(records, "auto"), {})
    assert not problems
    assert example.kind == "preference" and example.messages[-1].content == "Write a haiku"
    assert (example.chosen, example.rejected) == ("good", "bad")


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "are the same reply"),
    ({"prompt": "q", "chosen": "", "rejected": "x"}, "'chosen' is empty"),
    ({"chosen": "a", "rejected": "b"}, "no prompt"),
    ({"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"}, "start the conversation with a user message"),
])
def test_bad_preference_rows_are_reported(row, message):
    records = [Record("p.jsonl", 4, row)]
    examples, problems = convert_records(records, choose_format(records, "auto"), {})
    assert not examples and message in str(problems[0]) and str(problems[0]).startswith("p.jsonl:4: ")
