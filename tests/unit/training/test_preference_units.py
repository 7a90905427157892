import math

import pytest
import torch

from tunesmith.data.examples import Message
from tunesmith.data.formats import choose_format, convert_records
from tunesmith.data.prompts import PromptItem
from tunesmith.data.read import Record
from tunesmith.training.online_dpo import build_pairs
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
                       [0.1, 0.9, 0.5, 1.0, 1.0, 1.0, 0.2, 0.7, 0.7], ["stop"] * 9, samples=3)
    assert (rows[0]["chosen"], rows[0]["rejected"]) == (1, 0)
    assert rows[1]["chosen"] is None  # all tied
    assert (rows[2]["chosen"], rows[2]["rejected"]) == (1, 0)
    rows = build_pairs([prompt(1)], ["same answer", "same answer "], [0.9, 0.1], ["stop", "length"], samples=2)
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


# ------------------------------------------------------------------------------------ rewards


REWARD_CODE = '''
def score(prompt, completion):
    if completion == "boom":
        raise ValueError("cannot score boom")
    return float(len(completion))
'''


def test_python_rewards_run_only_when_trusted_and_built_in_ones_need_no_trust(tmp_path):
    from tunesmith.errors import ConfigError
    from tunesmith.training.rewards import load_reward

    (tmp_path / "mine.py").write_text(REWARD_CODE)
    for spec in ("os:system", f"{tmp_path / 'mine.py'}:score"):
        with pytest.raises(ConfigError, match="preference.trust_reward_code=true"):
            load_reward(spec)
    assert load_reward(f"{tmp_path / 'mine.py'}:score", trust_code=True)(["q"], ["abc"], [None], ["p.jsonl:1"]) == [3.0]
    for spec in ("concise", "reference:exact", "reference:rouge"):
        load_reward(spec)  # no trust needed


def test_an_error_in_reward_code_names_the_reward_and_the_row(tmp_path):
    from tunesmith.errors import ConfigError
    from tunesmith.training.rewards import load_reward

    (tmp_path / "mine.py").write_text(REWARD_CODE)
    spec = f"{tmp_path / 'mine.py'}:score"
    reward = load_reward(spec, trust_code=True)
    with pytest.raises(ConfigError) as error:
        reward(["q", "q"], ["fine", "boom"], [None, None], ["prompts.jsonl:4", "prompts.jsonl:7"])
    message = str(error.value)
    assert message.startswith("prompts.jsonl:7: ") and spec in message and "ValueError: cannot score boom" in message
    assert isinstance(error.value.__cause__, ValueError)  # --debug still shows where in the function
    with pytest.raises(ConfigError, match=r"^prompts.jsonl:2: preference.reward=reference:exact needs a reference"):
        load_reward("reference:exact")(["q", "q"], ["a", "b"], ["a", None], ["prompts.jsonl:1", "prompts.jsonl:2"])


def test_a_reward_file_in_a_config_is_found_next_to_the_config_file(tmp_path, monkeypatch):
    from tunesmith.config import load_config

    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "mine.py").write_text(REWARD_CODE)
    (tmp_path / "here.py").write_text(REWARD_CODE)
    (folder / "run.yaml").write_text("preference:\n  reward: mine.py:score\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert load_config(folder / "run.yaml").preference.reward == f"{folder / 'mine.py'}:score"
    # a path that exists only from the working folder, an absolute path and --set values stay as written
    (folder / "cwd.yaml").write_text("preference:\n  reward: here.py:score\nstages: [{preference: {reward: mine.py:score}}]\n")
    config = load_config(folder / "cwd.yaml")
    assert config.preference.reward == "here.py:score" and config.stages[0]["preference"]["reward"] == f"{folder / 'mine.py'}:score"
    (folder / "absolute.yaml").write_text(f"preference:\n  reward: {tmp_path / 'here.py'}:score\n")
    assert load_config(folder / "absolute.yaml").preference.reward == f"{tmp_path / 'here.py'}:score"
    assert load_config(folder / "run.yaml", ["preference.reward=mine.py:score"]).preference.reward == "mine.py:score"


# ------------------------------------------------------------------------------- online pairs


def test_a_sampled_pair_trains_the_sampled_tokens_with_a_stop_token_only_when_the_model_stopped(tokenizer):
    from tunesmith.data.template import analyze_template
    from tunesmith.data.tokenize import encode_prompt
    from tunesmith.training.online_dpo import pair_examples

    info = analyze_template(tokenizer, 2)
    end_of_turn = info.stop_token_ids[0]
    stopped, cut = tokenizer("Blue is calm.")["input_ids"] + [end_of_turn], tokenizer("Blue is a colour that")["input_ids"]
    rows = build_pairs([prompt(1)], ["Blue is calm.", "Blue is a colour that"], [1.0, 0.0], ["stop", "length"], samples=2)
    (pair,) = pair_examples([prompt(1)], rows, [stopped, cut], 2, tokenizer, info)
    prompt_ids = encode_prompt(tokenizer, info, [Message("user", "question 1")])
    for sequence, reply in ((pair.chosen, stopped), (pair.rejected, cut)):
        assert sequence.input_ids.tolist() == prompt_ids + reply
        assert sequence.input_ids[sequence.loss_mask].tolist() == reply  # every sampled token, nothing else
    assert pair.rejected.input_ids[-1] != end_of_turn
