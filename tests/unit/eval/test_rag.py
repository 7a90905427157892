"""RAG prompts: the k best chunks before the question, never the evaluated row's own training copy."""

from __future__ import annotations

from tunesmith.config import RagConfig
from tunesmith.data.examples import Message
from tunesmith.eval.items import EvalItem
from tunesmith.eval.rag import PREAMBLE, build_index, retrieve


def item(text: str, label: str, where: str) -> EvalItem:
    return EvalItem(where, (Message("system", "S"), Message("user", f"Classify: {text}")), label, label, text)


POOL = [item("the lighthouse keeper of zorbula is kind", "positive", "train:1"),
        item("a dull grey film about taxes", "negative", "train:2"),
        item("zorbula lighthouse tour was a delight", "positive", "train:3")] + \
       [item(f"filler review {n} about cooking", "negative", f"train:{n}") for n in range(4, 20)]


def test_train_rows_as_corpus_never_return_the_rows_own_input_and_keep_rank_order():
    index, inputs = build_index(RagConfig(corpus="train", k=2), POOL)
    test = item("The lighthouse keeper of Zorbula is kind!", "positive", "test:1")  # also a training row (case, punctuation)
    retrieved = retrieve([test], index, inputs, 2)
    assert "train:1" not in retrieved.chunk_ids[0] and retrieved.chunk_ids[0][0] == "train:3"
    prompt = retrieved.prompts[0]
    assert prompt[0] == Message("system", "S") and prompt[-1].role == "user"
    body = prompt[-1].content
    assert body.startswith(PREAMBLE) and body.endswith("Classify: The lighthouse keeper of Zorbula is kind!")
    assert body.index("[1] zorbula lighthouse tour") < body.index("[2]")
    assert "Answer: positive" in body
