"""Retrieval for the RAG baselines: BM25 and dense embeddings find the planted document, chunk ids are stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.errors import DataError
from tunesmith.models.retrieval import (
    BM25Index,
    Chunk,
    DenseIndex,
    chunk_document,
    load_corpus,
    recall_at_k,
)


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


def test_a_jsonl_corpus_names_each_chunk_by_its_id_field_else_by_its_line(tmp_path: Path):
    rows = tmp_path / "docs.jsonl"
    rows.write_text('{"id": "doc-7", "text": "named"}\n{"text": "unnamed"}\n')
    assert [chunk.source for chunk in load_corpus(rows)] == ["doc-7", f"{rows}:2"]
    assert [chunk.source for chunk in load_corpus(rows, id_field="title")] == [f"{rows}:1", f"{rows}:2"]


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A 2-layer BERT encoder (absolute positions, 64 of them) whose tokenizer pads on the left."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "padding_side": "left"}))
    return folder


def hand_embedding(model, tokenizer, text: str, max_length: int):
    """The sentence-transformers recipe written out for one text alone: mean of the last hidden
    states over its tokens, divided by its length."""
    import torch

    ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        mean = model(**ids).last_hidden_state[0].mean(0)
    return mean / mean.norm()


def test_dense_embeddings_are_mask_averaged_and_normalized_like_each_text_read_alone(tiny_encoder_dir: Path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = ["short", "a somewhat longer text about lighthouses and their keepers", "mid length text",
             " ".join(["word"] * 200)]  # past the 64 positions: cut, as sentence-transformers cuts it
    index = DenseIndex([Chunk(f"t#{i}", "t", text) for i, text in enumerate(texts)], str(tiny_encoder_dir), batch_size=3)
    model, tokenizer = AutoModel.from_pretrained(tiny_encoder_dir).eval(), AutoTokenizer.from_pretrained(tiny_encoder_dir)
    expected = torch.stack([hand_embedding(model, tokenizer, text, 64) for text in texts])
    assert index.max_length == 64
    torch.testing.assert_close(index.embeddings, expected, atol=1e-5, rtol=1e-5)
    (best, score), *_ = index.search(texts[2], k=2)
    assert best.id == "t#2" and score == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    from tunesmith.models.catalog import materialize

    return materialize("all-minilm-l6-v2")  # in the tests' shared cache: downloaded once


def test_dense_retrieval_finds_a_paraphrase_that_bm25_ranks_below_a_word_sharing_distractor(minilm_dir: Path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    query = "How long should someone recuperate after surgery, according to the doctor?"
    chunks = [
        Chunk("paraphrase#0", "paraphrase", "The physician told the patient to rest for two weeks following the operation."),
        Chunk("distractor#0", "distractor", "Someone should ask how long the laptop battery lasts, according to the doctor of the repair shop."),
        Chunk("filler#0", "filler", "The bakery sells rye bread and almond cakes on Saturdays."),
    ]
    assert BM25Index(chunks).search(query, k=1)[0][0].id == "distractor#0"
    dense = DenseIndex(chunks, str(minilm_dir))
    (best, best_score), (second, second_score), _ = dense.search(query, k=3)
    assert best.id == "paraphrase#0" and second.id == "distractor#0" and best_score > second_score
    # sentence-transformers' pooling of this model (its max_seq_length is 256), by hand with AutoModel
    model, tokenizer = AutoModel.from_pretrained(minilm_dir).eval(), AutoTokenizer.from_pretrained(minilm_dir)
    assert dense.max_length == 256
    torch.testing.assert_close(dense.embeddings[0], hand_embedding(model, tokenizer, chunks[0].text, 256), atol=1e-5, rtol=1e-5)


def test_two_rows_with_the_same_id_are_refused_naming_both(tmp_path: Path):
    rows = tmp_path / "docs.jsonl"
    rows.write_text('{"id": "doc-7", "text": "one"}\n{"id": "doc-7", "text": "two"}\n')
    with pytest.raises(DataError, match=r"docs.jsonl:2: id 'doc-7' already names the document at .*docs.jsonl:1"):
        load_corpus(rows)
