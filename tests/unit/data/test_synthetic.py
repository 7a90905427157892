"""invented-facts: generated from a seed (the same seed, the same files), every test answer stated in
its source document, and no test fact (nor any held-out entity) in the training rows."""

from __future__ import annotations

import json
import re

from tunesmith.cli import main
from tunesmith.data.catalog import dataset_path, parse_name
from tunesmith.data.synthetic import invented_facts


def test_the_same_seed_gives_the_same_files_and_another_seed_other_facts():
    assert invented_facts(seed=0) == invented_facts(seed=0)
    assert invented_facts(seed=0)["documents"] != invented_facts(seed=1)["documents"]
    paths = [dataset_path("invented-facts", split) for split in ("train", "test", "documents", None)]
    first = [path.read_bytes() for path in paths]
    for path in paths:
        path.unlink()
    assert [dataset_path("invented-facts", split).read_bytes() for split in ("train", "test", "documents", None)] == first
    assert [len(content.splitlines()) for content in first] == [700, 100, 200, 800]


def test_every_test_answer_is_in_its_source_document_and_in_no_training_row():
    parts = invented_facts()
    documents = {document["id"]: document["text"] for document in parts["documents"]}
    assert len(documents) == 200
    train_questions = {row["messages"][0]["content"] for row in parts["train"]}
    train_entities = {row["entity"] for row in parts["train"]}
    for row in parts["train"] + parts["test"]:
        question, answer = (m["content"] for m in row["messages"])
        assert answer in documents[row["source"]] and row["entity"] in documents[row["source"]], row
        assert row["entity"] in question
    for row in parts["test"]:
        assert row["messages"][0]["content"] not in train_questions
        assert row["entity_in_training"] == (row["entity"] in train_entities)
    held_out = {row["entity"] for row in parts["test"] if not row["entity_in_training"]}
    seen = [row for row in parts["test"] if row["entity_in_training"]]
    assert len(held_out) == 12 and len(seen) == 52
    # a held-out entity is named only in its own document and its own test questions
    train_text = json.dumps(parts["train"])
    for name in held_out:
        assert not re.search(rf"\b{name}\b", train_text), name
        assert sum(name in text for text in documents.values()) == 1, name


def test_invented_facts_is_listed_with_its_licence_and_its_documents_are_a_split(capsys):
    assert parse_name("invented-facts:documents") == ("invented-facts", "documents")
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    entry = listing[listing.index("invented-facts:"):]
    assert "800 rows" in entry and "invented-facts:test (100)" in entry
    assert "licence: tunesmith's own generated data" in entry and "from ==" not in listing
