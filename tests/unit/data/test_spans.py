"""Entity spans: tag schemes convert to spans, spans survive sub-token alignment exactly, and bad
spans are named with their line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.spans import (
    IGNORE,
    Entity,
    SpanRow,
    align_tags,
    check_spans,
    detect_scheme,
    read_conll,
    read_entity_file,
    read_span_rows,
    spans_from_tags,
    tags_to_entities,
)
from tunesmith.errors import DataError

TEXT = "Angela Merkel met Emmanuel Macron in Saint-Étienne, France, on 3 May 2019."
ENTITIES = (Entity(0, 13, "PER"), Entity(18, 33, "PER"), Entity(37, 50, "LOC"), Entity(52, 58, "LOC"),
            Entity(63, 73, "DATE"))


def test_bio_bioes_and_io_give_the_same_entities():
    bio = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    bioes = ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC"]
    assert [detect_scheme(t) for t in (bio, bioes, ["I-PER", "O"])] == ["BIO", "BIOES", "IO"]
    expected = [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")]
    assert tags_to_entities(bio)[0] == expected and tags_to_entities(bioes)[0] == expected
    assert tags_to_entities(["I-PER", "I-PER", "O", "I-LOC"])[0] == [(0, 2, "PER"), (3, 4, "LOC")]  # IO


def test_an_i_tag_without_its_b_starts_an_entity_and_is_reported():
    entities, problems = tags_to_entities(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"])
    assert entities == [(1, 3, "PER"), (3, 4, "LOC"), (4, 5, "ORG")]
    assert len(problems) == 2 and "I-PER at token 2" in problems[0] and "use B-ORG" in problems[1]


def test_conll_file_reads_sentences_as_text_with_character_spans(tmp_path: Path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\nGerman JJ B-MISC\ncall NN O\n\n"
                    "Peter NNP B-PER\nBlackburn NNP I-PER\n")
    rows, problems = read_conll(path)
    assert problems == [] and [row.where for row in rows] == [f"{path}:3", f"{path}:8"]
    assert rows[0].text == "EU rejects German call"
    assert [(rows[0].text[e.start:e.end], e.label) for e in rows[0].entities] == [("EU", "ORG"), ("German", "MISC")]
    assert [(rows[1].text[e.start:e.end], e.label) for e in rows[1].entities] == [("Peter Blackburn", "PER")]


def test_jsonl_and_spacy_rows_and_their_problems_name_the_line(tmp_path: Path):
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join([
        json.dumps({"text": "Ada Lovelace wrote", "entities": [{"start": 0, "end": 12, "label": "PER"}]}),
        json.dumps(["Paris in May", {"entities": [[0, 5, "LOC"], [9, 12, "DATE"]]}]),
        json.dumps({"text": "Bob and Alice", "entities": [{"start": 0, "end": 7, "label": "PER"},
                                                           {"start": 4, "end": 13, "label": "PER"}]}),
        json.dumps({"text": "Londoners", "entities": [{"start": 0, "end": 6, "label": "LOC"}]}),
    ]) + "\n")
    rows, problems = read_span_rows(path)
    assert problems == [] and [e.label for e in rows[1].entities] == ["LOC", "DATE"]
    checked = [problem for row in rows for problem in check_spans(row)]
    assert [p.where for p in checked] == [f"{path}:3", f"{path}:4"]
    assert "overlap" in checked[0].what and "3 characters of its words fall outside" in checked[1].what
    with pytest.raises(DataError, match="2 problems"):
        read_entity_file(path)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from tunesmith.models.catalog import materialize

    return AutoTokenizer.from_pretrained(materialize("all-minilm-l6-v2"))


@pytest.mark.parametrize("which", ["smollm2", "minilm"])
def test_sub_token_alignment_round_trips_the_spans_exactly(which, tokenizer, minilm_tokenizer):
    tok = tokenizer if which == "smollm2" else minilm_tokenizer
    labels = ["O"] + [f"{p}-{t}" for t in ("PER", "LOC", "DATE") for p in ("B", "I")]
    label_ids = {label: i for i, label in enumerate(labels)}
    encoded = tok(TEXT, return_offsets_mapping=True)
    offsets = [tuple(pair) for pair in encoded["offset_mapping"]]
    aligned = align_tags(TEXT, offsets, ENTITIES, label_ids)
    assert len(aligned) == len(encoded["input_ids"]) and IGNORE in aligned
    assert sum(tag != IGNORE for tag in aligned) == 17  # one label per word ("Saint-Étienne" is 3 words)
    back = spans_from_tags(TEXT, offsets, [0 if t == IGNORE else t for t in aligned], dict(enumerate(labels)))
    assert back == ENTITIES


def test_a_sentence_without_entities_is_all_o():
    row = SpanRow("f:1", "nothing here", ())
    assert check_spans(row) == []
    assert align_tags(row.text, [(0, 7), (7, 12)], (), {"O": 0}) == [0, 0]


def test_tagged_word_lines_become_one_span_per_word_that_train_as_bio_tags(tmp_path: Path):
    from tunesmith.data.catalog import _tagged_words
    from tunesmith.data.spans import read_entity_file, word_tags

    source = tmp_path / "tagged.txt"
    source.write_text("Mr./NNP Vinken/NNP is/VBZ 1/2/CD ./.\n\nIt/PRP rose/VBD\n")
    rows = list(_tagged_words(source))
    assert [r["text"] for r in rows] == ["Mr. Vinken is 1/2 .", "It rose"]
    jsonl = tmp_path / "tagged.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = read_entity_file(jsonl)[0]
    assert [(first.text[e.start:e.end], e.label) for e in first.entities] == \
        [("Mr.", "NNP"), ("Vinken", "NNP"), ("is", "VBZ"), ("1/2", "CD"), (".", ".")]
    # a word the tokenizer's word rule splits ("Mr." -> "Mr", ".") keeps one tag: B- then I-
    assert word_tags(first.text, first.entities)[:3] == ["B-NNP", "I-NNP", "B-NNP"]


# Byte-level BPE glues punctuation into tokens ("'s", ".),", ".,", '"The'), so a word can start inside
# a token that began in the word before it: each case below has an entity that ends or starts there.
GLUED = [
    ("I shopped at Macy's today.", [("Macy's", "ORG")]),
    ("Macy's", [("Macy's", "ORG")]),
    ("He met O'Neil at McDonald's in the U.S., then left.", [("O'Neil", "PER"), ("McDonald's", "ORG"), ("U.S.", "LOC")]),
    ("Shares of (Acme Inc.), the maker, fell.", [("Acme Inc.", "ORG")]),
    ("John Smith Jr., aged 9, read \"The Times\".", [("John Smith Jr.", "PER"), ("The Times", "ORG")]),
    ("Macy's store is in Macy's Plaza.", [("Macy", "ORG"), ("Macy's Plaza", "LOC")]),
]
TYPES = ["O"] + [f"{p}-{t}" for t in ("PER", "ORG", "LOC") for p in ("B", "I")]


def glued_row(text: str, surfaces: list[tuple[str, str]]) -> SpanRow:
    entities, start = [], 0
    for surface, label in surfaces:
        start = text.index(surface, start)
        entities.append(Entity(start, start + len(surface), label))
        start += len(surface)
    return SpanRow("f:1", text, tuple(entities))


@pytest.mark.parametrize("text, surfaces", GLUED)
@pytest.mark.parametrize("which", ["smollm2", "minilm"])
def test_a_word_that_starts_inside_a_token_is_tagged_and_the_spans_round_trip(which, text, surfaces, tokenizer,
                                                                             minilm_tokenizer):
    from tunesmith.data.spans import word_of_tokens, words_of

    tok = tokenizer if which == "smollm2" else minilm_tokenizer
    row = glued_row(text, surfaces)
    offsets = [tuple(pair) for pair in tok(text, return_offsets_mapping=True)["offset_mapping"]]
    aligned = align_tags(text, offsets, row.entities, {tag: i for i, tag in enumerate(TYPES)})
    # every run of letters or digits is the word of exactly one labelled token (the "s" of "Macy's" too)
    labelled = [word for word, tag in zip(word_of_tokens(text, offsets), aligned) if tag != IGNORE]
    letters = [n for n, (start, _) in enumerate(words_of(text)) if text[start].isalnum()]
    assert sorted(set(labelled) & set(letters)) == letters and len(labelled) == len(set(labelled))
    # a perfect tagger (the training labels as its predictions) gives back exactly the gold spans
    back = spans_from_tags(text, offsets, [0 if t == IGNORE else t for t in aligned], dict(enumerate(TYPES)))
    assert [(text[e.start:e.end], e.label) for e in back] == surfaces


def test_a_perfect_tagging_scores_one_with_a_byte_level_tokenizer(tokenizer):
    from tunesmith.eval.extraction import entity_metrics

    rows = [glued_row(text, surfaces) for text, surfaces in GLUED]
    label_ids = {tag: i for i, tag in enumerate(TYPES)}
    predicted = []
    for row in rows:
        offsets = [tuple(pair) for pair in tokenizer(row.text, return_offsets_mapping=True)["offset_mapping"]]
        aligned = align_tags(row.text, offsets, row.entities, label_ids)
        predicted.append(spans_from_tags(row.text, offsets, [0 if t == IGNORE else t for t in aligned], dict(enumerate(TYPES))))
    metrics, _ = entity_metrics(rows, predicted)
    assert metrics["micro_f1"] == 1.0 and metrics["macro_f1"] == 1.0
