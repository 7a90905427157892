"""Retrieval-aware training (data.rag): each training question gets its documents in the prompt,
exactly as the evaluation's RAG systems ask it, so the model is trained on the prompt it is scored on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import RagConfig, build_config
from tunesmith.data.examples import Message
from tunesmith.data.template import analyze_template
from tunesmith.errors import ConfigError
from tunesmith.eval.items import EvalItem
from tunesmith.eval.rag import build_index, retrieve
from tunesmith.training.sft import prepare_chat_data

DOCUMENTS = [{"id": "a", "text": "The Zorbula lighthouse was built in 1820 by Mira Kest."},
             {"id": "b", "text": "Pell river runs through Drandmoor, a town known for its salt."},
             {"id": "c", "text": "The brass kettle of Tovin was first shown in Drandmoor."}]
QUESTIONS = [("When was the Zorbula lighthouse built?", "1820"), ("Which river runs through Drandmoor?", "Pell"),
             ("Where was the brass kettle of Tovin first shown?", "Drandmoor")]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_each_training_prompt_holds_its_documents_as_the_rag_baseline_asks(tmp_path: Path, tokenizer):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QUESTIONS])
    config = build_config({"data": {"train": str(train), "validation_split": 0.0, "rag": {"corpus": str(docs), "k": 2}}})
    info = analyze_template(tokenizer)
    prepared = prepare_chat_data(config, tokenizer, info)
    index, inputs = build_index(RagConfig(corpus=str(docs), k=2), [])
    items = [EvalItem(f"q{n}", (Message("user", q),), a, None, q) for n, (q, a) in enumerate(QUESTIONS)]
    asked = retrieve(items, index, inputs, 2)
    for example in sorted(prepared.train, key=lambda e: e.where):
        n = int(example.where.rsplit(":", 1)[1]) - 1
        text = tokenizer.decode(example.input_ids)
        prompt = asked.prompts[n][-1].content
        assert prompt in text, (prompt, text)  # the same documents, in the same order and words
        assert text.index(DOCUMENTS[n]["text"]) < text.index(QUESTIONS[n][0])  # its own document, before the question
        learned = tokenizer.decode(example.input_ids[example.loss_mask])
        assert QUESTIONS[n][1] in learned and "documents" not in learned  # the loss is still only the answer


def test_training_rows_cannot_be_their_own_corpus():
    with pytest.raises(ConfigError, match="data.rag.corpus"):
        build_config({"data": {"train": "x.jsonl", "rag": {"corpus": "train"}}})
