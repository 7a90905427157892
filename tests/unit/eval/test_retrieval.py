"""BM25 retrieval for the RAG baselines: the planted document is found, chunk ids are stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.errors import DataError
from tunesmith.eval.retrieval import BM25Index, chunk_document, load_corpus, recall_at_k


def test_bm25_retrieves_the_planted_document(tmp_path: Path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for number in range(30):
        (corpus / f"filler-{number:02d}.txt").write_text(
            f"Report {number} on the weather in the valley: rain, wind and the price of bread in spring.")
    (corpus / "planted.md").write_text("The Zorbulan lighthouse keeper is named Ottilie Marrow; she has kept the light since 1911.")
    index = BM25Index(load_corpus(corpus))
    (best, score), *rest = index.search("Who keeps the Zorbulan lighthouse?", k=3)
    assert best.source.endswith("planted.md") and score > rest[0][1]
    assert recall_at_k([[c.source for c, _ in index.search("Who keeps the Zorbulan lighthouse?", k=3)]],
                       [str(corpus / "planted.md")]) == 1.0


def test_chunks_overlap_and_keep_stable_ids():
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_document("doc.txt", text, max_words=40, overlap=10)
    assert [c.id for c in chunks] == ["doc.txt#0", "doc.txt#1", "doc.txt#2"]
    assert chunks[0].text.split()[-10:] == chunks[1].text.split()[:10]
    assert chunks[-1].text.split()[-1] == "w99"
    assert chunk_document("doc.txt", text, max_words=40, overlap=10) == chunks


def test_a_jsonl_corpus_without_the_text_field_names_the_row(tmp_path: Path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: no text field 'text' \(fields: body\)"):
        load_corpus(rows)
