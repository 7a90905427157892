"""Extractive QA data: SQuAD files read and checked, windows that overlap recover an answer that a
window edge cuts, and scores as the official SQuAD script defines them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.qa import Answer, QARow, read_qa, windows
from tunesmith.data.squad import f1, normalize_answer, squad_scores
from tunesmith.errors import DataError


def test_squad_json_and_flat_jsonl_read_the_same_and_a_misplaced_answer_is_named(tmp_path: Path):
    context = "The Eiffel Tower was finished in 1889 in Paris."
    squad = {"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "When?", "answers": [{"text": "1889", "answer_start": 33}]},
        {"id": "q2", "question": "Who built the moon?", "answers": [], "is_impossible": True}]}]}]}
    (tmp_path / "s.json").write_text(json.dumps(squad))
    (tmp_path / "s.jsonl").write_text(json.dumps({"id": "q1", "context": context, "question": "When?",
                                                  "answers": {"text": ["1889"], "answer_start": [33]}}) + "\n")
    rows = read_qa(tmp_path / "s.json")
    assert rows[0].answers == (Answer("1889", 33),) and rows[1].answers == ()
    assert read_qa(tmp_path / "s.jsonl")[0].answers == rows[0].answers
    (tmp_path / "bad.jsonl").write_text(json.dumps({"context": context, "question": "Where?",
                                                    "answers": {"text": ["Paris"], "answer_start": [40]}}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: answer 'Paris' is not at answer_start 40 \(it occurs at 41\)"):
        read_qa(tmp_path / "bad.jsonl")


def test_overlapping_windows_recover_an_answer_that_straddles_a_window_edge(tokenizer):
    answer = "the golden lighthouse of Varn"

    def row_with(lead: int) -> QARow:
        context = " ".join(f"word{i}" for i in range(lead)) + f" {answer} " + " ".join(f"word{i}" for i in range(60))
        return QARow("f:1", "q", "Which landmark?", context, (Answer(answer, context.index(answer)),))

    def recovered(row: QARow, found) -> list[str]:
        return [row.context[w.offsets[w.start][0]:w.offsets[w.end][1]] for w in found if w.start > 0]

    # a context whose answer a window edge cuts when the windows do not overlap
    row = next(row_with(lead) for lead in range(10, 80) if not recovered(row_with(lead), windows([row_with(lead)], tokenizer,
                                                                                                  max_length=64, stride=0)))
    with_overlap = windows([row], tokenizer, max_length=64, stride=24)
    assert len(with_overlap) >= 3
    assert recovered(row, with_overlap) and all(text == answer for text in recovered(row, with_overlap))


def test_scores_follow_the_official_squad_definitions():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert f1("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    scores = squad_scores([["Paris", "in Paris"], ["1889"], [""]], ["paris", "in 1889", ""])
    assert scores["exact_match"] == pytest.approx(2 / 3)  # Paris exact; "in 1889" not; empty right
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert scores["no_answer_accuracy"] == 1.0 and scores["has_answer_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert squad_scores([[""]], ["something"])["no_answer_accuracy"] == 0.0
