"""Prompted baselines' replies parsed into spans, and entity-level intervals from per-row counts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tunesmith.config import EvalConfig
from tunesmith.data.spans import Entity, SpanRow, word_tags
from tunesmith.eval.entities import entity_scores
from tunesmith.eval.extraction import (
    compare_entities,
    entity_answer,
    entity_metrics,
    parse_answer,
    parse_entities,
)
from tunesmith.eval.intervals import micro_f1_intervals
from tunesmith.models.tagger import FoundEntity

TEXT = "Anna met Anna Berg in Paris , near Parisian cafes ."


def test_a_reply_becomes_typed_spans_on_word_boundaries():
    reply = "PER: Anna\n- per: Anna\nLOC: Paris\nCITY: Paris\nORG: Red Cross\n1. LOC: \"Paris\".\nnone"
    found = parse_entities(reply, TEXT, ["LOC", "ORG", "PER"])
    # the second "Anna" takes the next occurrence; an unknown type, words not in the text and a span
    # already taken are left out; "Paris" never matches inside "Parisian"
    assert [(TEXT[e.start:e.end], e.label, e.start) for e in found] == [("Anna", "PER", 0), ("Anna", "PER", 9), ("Paris", "LOC", 22)]
    assert parse_entities("none", TEXT, ["PER"]) == ()


def test_gold_entities_in_the_prompt_format_parse_back_to_themselves():
    row = SpanRow("f:1", TEXT, (Entity(9, 18, "PER"), Entity(22, 27, "LOC")))
    assert entity_answer(row) == "PER: Anna Berg\nLOC: Paris"
    assert parse_entities(entity_answer(row), TEXT, ["LOC", "PER"]) == row.entities


def test_entities_that_end_in_a_period_keep_it_and_a_closing_period_is_dropped_only_when_the_text_lacks_it():
    text = "Acme Inc. hired John Smith Jr. in the U.S., then moved to Paris, France."
    gold = (Entity(0, 9, "ORG"), Entity(16, 30, "PER"), Entity(38, 42, "LOC"), Entity(58, 63, "LOC"), Entity(65, 71, "LOC"))
    assert [text[e.start:e.end] for e in gold] == ["Acme Inc.", "John Smith Jr.", "U.S.", "Paris", "France"]
    reply = "ORG: Acme Inc.\nPER: John Smith Jr.\nLOC: U.S.\nLOC: Paris.\nLOC: France"  # the text has no "Paris."
    assert parse_entities(reply, text, ["LOC", "ORG", "PER"]) == gold
    assert parse_entities(entity_answer(SpanRow("f:1", text, gold)), text, ["LOC", "ORG", "PER"]) == gold
    # CoNLL text (tokens joined by spaces): a sentence's period is a token of its own
    conll = "He left the U.S. ."
    assert parse_entities('LOC: "U.S."', conll, ["LOC"]) == parse_entities('LOC: "U.S.".', conll, ["LOC"]) == \
        (Entity(12, 16, "LOC"),)
    assert parse_entities("LOC: U.S", conll, ["LOC"]) == (Entity(12, 15, "LOC"),)  # as written, though not the gold
    # the reply's words as written win where the text has them, a sentence's period included
    assert parse_entities("LOC: France.", text, ["LOC"]) == (Entity(65, 72, "LOC"),)


@pytest.mark.parametrize("reply, answer", [("Paris", "Paris"), ("The answer is: Paris.", "Paris"), ('"Vesk"\nmore', "Vesk"),
                                           ("Unanswerable.", ""), ("none", ""), ("", "")])
def test_an_answer_is_the_first_line_without_its_wrapping(reply: str, answer: str):
    assert parse_answer(reply) == answer


def random_spans(rng: random.Random, words: list[str], starts: list[int]) -> tuple[Entity, ...]:
    chosen = sorted(rng.sample(range(len(words)), rng.randint(0, 3)))
    return tuple(Entity(starts[i], starts[i] + len(words[i]), rng.choice(["A", "B"])) for i in chosen)


def random_rows(count: int, seed: int) -> tuple[list[SpanRow], list[tuple[Entity, ...]]]:
    rng = random.Random(seed)
    rows, predicted = [], []
    for number in range(count):
        words = [rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(8)]
        text = " ".join(words)
        starts = [sum(len(w) + 1 for w in words[:i]) for i in range(8)]

        rows.append(SpanRow(f"f:{number}", text, random_spans(rng, words, starts)))
        predicted.append(random_spans(rng, words, starts) if rng.random() < 0.5 else rows[-1].entities)
    return rows, predicted


def test_micro_f1_from_row_counts_equals_the_entity_scores_and_brackets_them():
    rows, predicted = random_rows(60, seed=3)
    metrics, counts = entity_metrics(rows, predicted)
    reference = entity_scores([word_tags(r.text, r.entities) for r in rows], [word_tags(r.text, p) for r, p in zip(rows, predicted)])
    assert metrics["micro_f1"] == pytest.approx(reference["micro"]["f1"])
    perfect = np.array([[c[2], c[2], c[2]] for c in counts])
    systems, gains = micro_f1_intervals({"tuned": perfect, "base": counts}, "tuned", resamples=500)
    assert systems["base"].estimate == pytest.approx(metrics["micro_f1"])
    assert systems["base"].low < systems["base"].estimate < systems["base"].high
    assert systems["tuned"].estimate == 1.0 and gains["base"].estimate == pytest.approx(1 - metrics["micro_f1"])
    assert gains["base"].low > 0


def test_the_comparison_puts_the_tagger_beside_the_baselines_with_intervals():
    rows, predicted = random_rows(30, seed=4)
    found = [[FoundEntity(e.start, e.end, e.label, r.text[e.start:e.end], 0.9) for e in r.entities] for r in rows]
    comparison = compare_entities(rows, ("run", found, 1.0), [], EvalConfig(resamples=200), 0)
    assert comparison.systems[0].metrics["micro_f1"] == 1.0
    assert comparison.table().splitlines()[2].startswith("fine-tuned")
    assert comparison.as_dict()["systems"]["fine-tuned"]["micro_f1"] == 1.0


def test_the_answer_parser_dropping_a_closing_period_costs_an_answer_nothing():
    # SQuAD's normalization drops punctuation before comparing, so "U.S" scores as "U.S." does
    from tunesmith.data.squad import exact, f1

    for gold in ("U.S.", "Acme Inc.", "John Smith Jr."):
        assert parse_answer(gold) == gold.rstrip(".")
        assert exact(gold, parse_answer(gold)) == 1 and f1(gold, parse_answer(gold)) == 1.0
