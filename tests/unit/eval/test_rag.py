"""RAG prompts: the k best chunks before the question, never the evaluated row's own training copy."""

from __future__ import annotations

from tunesmith.config import RagConfig
from tunesmith.data.examples import Message
from tunesmith.data.prompting import DOCUMENTS_HEADING
from tunesmith.eval.items import EvalItem
from tunesmith.eval.rag import build_index, retrieve


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
    assert body.startswith(DOCUMENTS_HEADING) and body.endswith("Classify: The lighthouse keeper of Zorbula is kind!")
    assert body.index("[1] zorbula lighthouse tour") < body.index("[2]")
    assert "Answer: positive" in body


def test_dense_retriever_over_a_named_document_split_finds_each_questions_source():
    """eval.rag.retriever=dense over invented-facts:documents: the catalog's MiniLM embeds, each
    question's own document (its `source`) comes back among the 3 best for most rows."""
    import json

    from tunesmith.data.catalog import dataset_path
    from tunesmith.models.retrieval import DenseIndex, recall_at_k

    index, inputs = build_index(RagConfig(corpus="invented-facts:documents", k=3, retriever="dense"), [])
    assert isinstance(index, DenseIndex) and inputs == {}
    rows = [json.loads(line) for line in dataset_path("invented-facts", "test").read_text().splitlines()[:40]]
    items = [EvalItem(f"test:{n}", (Message("user", r["messages"][0]["content"]),), r["messages"][1]["content"], None,
                      r["messages"][0]["content"], r["source"]) for n, r in enumerate(rows)]
    retrieved = retrieve(items, index, inputs, 3)
    assert all(len(ids) == 3 for ids in retrieved.chunk_ids)
    assert recall_at_k(retrieved.sources, [i.source for i in items]) >= 0.8
