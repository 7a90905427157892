"""Evaluation, the zero- and few-shot baselines and prediction ask a model exactly what training
taught it to answer: the same system message and user turn, down to the token ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import chat_rows, write_jsonl
from tunesmith.config import DataConfig
from tunesmith.data.examples import Message
from tunesmith.data.pipeline import prepare_data
from tunesmith.data.template import analyze_template
from tunesmith.data.tokenize import encode_prompt
from tunesmith.eval.compare import answer_budget
from tunesmith.eval.fewshot import few_shot_prompt, select_shots
from tunesmith.eval.items import load_items
from tunesmith.pipeline.predict import prompts_to_predict, rows_to_predict

SYSTEM = "You sort film reviews. Be terse."


def label_rows(count: int) -> list[dict]:
    return [{"text": f"review {n}: {'superb lovely' if n % 2 else 'dull boring'} film", "label": "pos" if n % 2 else "neg"}
            for n in range(count)]


@pytest.mark.parametrize("kind", ["label", "chat"])
def test_every_prompt_a_model_is_asked_is_the_training_prompt_with_the_system_prompt(tmp_path: Path, tokenizer, kind: str):
    rows = label_rows(12) if kind == "label" else chat_rows(12, seed=3)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    data = DataConfig(train=str(train), validation_split=0.0, system_prompt=SYSTEM)
    info = analyze_template(tokenizer, 2)
    prepared = prepare_data(data, tokenizer, info, seed=0)
    items, task = load_items(str(train), data, prepared.task)
    unlabelled = write_jsonl(tmp_path / "new.jsonl", [{"text": r["text"]} for r in rows] if kind == "label" else rows)
    source, examples = rows_to_predict(str(unlabelled), data)
    predicted = prompts_to_predict(source, examples, data, task)
    assert len(prepared.train) == len(items) == len(predicted) == 12
    for number, (example, item, asked) in enumerate(zip(prepared.train, items, predicted)):
        # what training saw before the reply (the first token in the loss) is what every prompt encodes to
        before_reply = example.input_ids[:int(np.argmax(example.loss_mask))].tolist()
        assert encode_prompt(tokenizer, info, list(item.prompt)) == before_reply  # evaluation and zero-shot
        assert encode_prompt(tokenizer, info, list(asked.messages)) == before_reply  # tunesmith predict
        assert item.prompt[0] == Message("system", SYSTEM) and asked.messages == item.prompt
        shots = few_shot_prompt(item, select_shots(item, number, items, 3, "random", seed=0))
        assert shots[0] == item.prompt[0] and shots[-1] == item.prompt[-1] and len(shots) == len(item.prompt) + 6
        if kind == "label":
            assert item.label == item.reference == rows[number]["label"] and item.key == rows[number]["text"]
            assert item.prompt[-1].content == task.prompt(rows[number]["text"])
        else:
            assert item.reference == rows[number]["messages"][-1]["content"] and item.label is None


def test_label_answers_get_room_for_a_sentence_before_the_label(tokenizer):
    labels = ["neg", "a rather long label that takes many tokens"]
    longest = len(tokenizer(labels[1], add_special_tokens=False)["input_ids"])
    assert longest > 6
    assert answer_budget(tokenizer, labels, 256) == max(32, longest + 8)
    assert answer_budget(tokenizer, ["a " * 40], 256) == len(tokenizer("a " * 40, add_special_tokens=False)["input_ids"]) + 8
    assert answer_budget(tokenizer, None, 256) == 256


def test_online_dpo_prompts_carry_the_system_prompt_like_every_other_prompt(tokenizer):
    from tunesmith.data.examples import Example, Message
    from tunesmith.data.prompting import prompt_of
    from tunesmith.data.prompts import prompt_items
    from tunesmith.data.template import analyze_template

    info = analyze_template(tokenizer)
    chat = Example("rows.jsonl", 1, "chat", messages=(Message("user", "Name a colour."), Message("assistant", "Blue.")))
    items, problems = prompt_items([chat], None, tokenizer, info, system_prompt="Answer in one word.")
    assert not problems
    assert items[0].messages == prompt_of(chat, "Answer in one word.", None).messages
    assert items[0].messages[0] == Message("system", "Answer in one word.") and items[0].reference == "Blue."
