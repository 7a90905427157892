"""Inference with tagging and QA heads: batched equals each row alone, spans obey their rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.data.qa import Answer, QARow
from tunesmith.models.reader import Reader, best_span, read_answers
from tunesmith.models.tagger import Tagger, entities_of, find_entities

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def wordpiece(tiny_wordpiece_bert_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_wordpiece_bert_dir)


def test_entities_come_from_each_words_first_sub_token_by_the_conll_rules(wordpiece):
    text = "Unbelievably Wei Chen flew to New York"
    encoded = wordpiece(text, return_offsets_mapping=True)
    tokens = wordpiece.convert_ids_to_tokens(encoded["input_ids"])
    wanted = {"wei": "B-PER", "chen": "I-PER", "new": "I-LOC", "york": "I-LOC"}  # an I- after O starts an entity
    probabilities = torch.zeros(len(tokens), len(TAGS))
    for position, token in enumerate(tokens):
        probabilities[position, TAGS.index(wanted.get(token, "O"))] = 0.9
        if token.startswith("##"):  # a later sub-token: its tag is never read
            probabilities[position] = 0
            probabilities[position, TAGS.index("B-PER")] = 1.0
    found = entities_of(text, encoded["offset_mapping"], probabilities, TAGS)
    assert [(f.text, f.label) for f in found] == [("Wei Chen", "PER"), ("New York", "LOC")]
    assert all(f.score == pytest.approx(0.9) for f in found)


def test_batched_tagging_equals_each_text_alone(tiny_wordpiece_bert_dir: Path, wordpiece):
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(1)
    model = AutoModelForTokenClassification.from_pretrained(tiny_wordpiece_bert_dir, num_labels=len(TAGS)).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(40)  # a confident random head: many entities to compare
    tagger = Tagger(model, wordpiece, TAGS, "tiny", 64)
    texts = ["Wei Chen flew to Lima .", "A much longer sentence about Anna Berg , Oslo and the Red Cross in spring .", "Hi"]
    together, cut = find_entities(tagger, texts, batch_size=8)
    alone = [find_entities(tagger, [text], batch_size=1)[0][0] for text in texts]
    assert cut == 0 and sum(map(len, together)) > 0
    assert [[(f.start, f.end, f.label) for f in e] for e in together] == [[(f.start, f.end, f.label) for f in e] for e in alone]
    for batched, single in zip(together, alone):
        assert [f.score for f in batched] == pytest.approx([f.score for f in single], abs=1e-5)
    assert find_entities(Tagger(model, wordpiece, TAGS, "tiny", 6), texts)[1] == 2  # two texts cut at 6 tokens


def test_the_best_span_ends_after_it_starts_stays_short_and_inside_the_context():
    context = "Mara lives in Vesk"
    offsets = [None, None, (0, 4), (5, 10), (11, 13), (14, 18), None]  # question tokens, then the context's, then [SEP]
    starts = torch.tensor([9.0, 9.0, 0.0, 1.0, 0.0, 5.0, 9.0])
    ends = torch.tensor([9.0, 9.0, 8.0, 0.0, 0.0, 0.0, 9.0])
    score, found = best_span(starts, ends, offsets, 30, context)
    assert (found.text, found.start) == ("Mara", 0)  # end before start (5 -> 2) is not allowed; outside tokens neither
    assert score == pytest.approx(8.0)
    _, short = best_span(starts, ends, offsets, 1, context)
    assert short.text == "Mara"
    starts, ends = torch.tensor([0.0, 0, 0, 4, 2, 0, 0]), torch.tensor([0.0, 0, 0, 0, 0, 3, 0])
    assert best_span(starts, ends, offsets, 3, context)[1].text == "lives in Vesk"
    assert best_span(starts, ends, offsets, 2, context)[1].text == "in Vesk"  # at most 2 tokens
    assert best_span(starts, ends, [None] * 7, 30, context) is None


def test_batched_reading_equals_each_question_alone(tiny_wordpiece_bert_dir: Path, wordpiece):
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(2)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_wordpiece_bert_dir).eval()
    long_context = "The mill stands by the river and grinds wheat. " * 12 + "Mara lives in Vesk."
    rows = [QARow("f:1", "1", "Where does Mara live?", long_context, (Answer("Vesk", long_context.index("Vesk")),)),
            QARow("f:2", "2", "Who bakes?", "Mara bakes bread in Vesk.", ()),
            QARow("f:3", "3", "What grinds wheat?", "The mill grinds wheat.", ())]
    for unanswerable in (False, True):
        reader = Reader(model, wordpiece, "tiny", max_length=48, stride=16, unanswerable=unanswerable)
        together = read_answers(reader, rows, batch_size=16)
        alone = [read_answers(reader, [row], batch_size=1)[0] for row in rows]
        assert [(a.text, a.start) for a in together] == [(a.text, a.start) for a in alone]
        assert [a.score for a in together] == pytest.approx([a.score for a in alone], abs=1e-5)
        for row, answer in zip(rows, together):
            assert answer.text == "" or row.context[answer.start:answer.start + len(answer.text)] == answer.text
        if not unanswerable:
            assert all(answer.text for answer in together)  # a reader never trained on no-answer always answers


def test_the_no_answer_threshold_is_the_one_with_the_best_f1_and_nearest_zero_on_ties():
    from tunesmith.models.reader import FoundAnswer, Scored, choose, tune_null_threshold

    def scored(text: str, margin: float) -> Scored:  # margin: null score - best span score
        return Scored(FoundAnswer(text, 0, 0.5), 0.0, margin, 0.5)

    # two unanswerable questions with margins 2 and 3, two answerable ones (right spans) with margins -1 and 1
    rows = [scored("x", 2.0), scored("y", 3.0), scored("Vesk", -1.0), scored("Mara", 1.0)]
    golds = [[], [], ["Vesk"], ["Mara"]]
    threshold, f1 = tune_null_threshold(rows, golds)
    assert f1 == 1.0 and 1.0 <= threshold < 2.0  # abstain above 1, answer at or below it
    reader = Reader(None, None, "r", unanswerable=True, null_threshold=threshold)
    assert [choose(s, reader).text for s in rows] == ["", "", "Vesk", "Mara"]
    assert [choose(s, Reader(None, None, "r")).text for s in rows] == ["x", "y", "Vesk", "Mara"]  # never trained to abstain
    threshold, f1 = tune_null_threshold([scored("Vesk", 5.0)], [["Vesk"]])
    assert threshold >= 5.0 and f1 == 1.0  # answering is right: it answers even against a null score 5 higher


def test_a_perfect_tagger_finds_whole_words_that_start_inside_a_byte_level_token(tokenizer):
    # SmolLM2's byte-level BPE keeps "'s" whole: the "s" of "Macy's" starts inside that token
    from tunesmith.data.spans import IGNORE, Entity, align_tags

    text = "I shopped at Macy's and Acme Inc., not at Macy's Plaza."
    gold = (Entity(13, 19, "ORG"), Entity(24, 33, "ORG"), Entity(42, 54, "LOC"))
    tags = ["O", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    labels = align_tags(text, offsets, gold, {tag: i for i, tag in enumerate(tags)})
    probabilities = torch.zeros(len(labels), len(tags))
    for position, label in enumerate(labels):
        probabilities[position, 0 if label == IGNORE else label] = 0.8  # the training labels as predictions
    found = entities_of(text, offsets, probabilities, tags)
    assert [(f.text, f.label, f.start, f.end) for f in found] == [(text[e.start:e.end], e.label, e.start, e.end) for e in gold]
    assert [f.text for f in found] == ["Macy's", "Acme Inc.", "Macy's Plaza"] and all(f.score == pytest.approx(0.8) for f in found)
