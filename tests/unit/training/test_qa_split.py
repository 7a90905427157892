"""Extractive QA's held-out rows: validation contexts are never trained on (SQuAD asks ~5 questions
per context), and the F1 the run reports is measured on rows its no-answer threshold was not tuned on."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunesmith.config import build_config
from tunesmith.errors import DataError


@pytest.fixture(scope="module")
def wordpiece(tiny_wordpiece_bert_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_wordpiece_bert_dir)


def squad_rows(contexts: int, questions: int, *, seed: int = 0, unanswerable_every: int = 0) -> list[dict]:
    """`questions` questions on each of `contexts` contexts, the questions of a context scattered
    through the file (as a shuffled SQuAD export has them)."""
    rng = random.Random(seed)
    names, towns = ["Mara", "Tobin", "Elsa", "Quill", "Rafe", "Ines"], ["Vesk", "Orlan", "Pym", "Cadda"]
    rows = []
    for number in range(contexts):
        name, town = names[number % len(names)], towns[number % len(towns)]
        context = f"Story {number}. {name} lives in {town}. " + "The market was busy. " * rng.randint(0, 3)
        for question in range(questions):
            row = {"id": f"{number}-{question}", "context": context, "question": f"Where does {name} live ({question})?",
                   "answers": {"text": [town], "answer_start": [context.index(town)]}}
            if unanswerable_every and (number * questions + question) % unanswerable_every == 0:
                row["question"], row["answers"] = f"Where was {name} born ({question})?", {"text": [], "answer_start": []}
            rows.append(row)
    rng.shuffle(rows)
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def qa_config(data: Path, *settings: str):
    return build_config({"data": {"train": str(data), "max_length": 48, "stride": 16, "validation_split": 0.25},
                         "train": {"method": "extractive-qa"}}, list(settings))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_validation_context_is_in_the_training_split(tmp_path: Path, wordpiece, seed: int):
    from tunesmith.training.extractive_qa import prepare_qa_data

    data = write_rows(tmp_path / "qa.jsonl", squad_rows(12, 5, seed=seed))
    prepared = prepare_qa_data(qa_config(data, f"train.seed={seed}"), wordpiece, None)
    held_out = prepared.extras["validation_rows"]
    contexts = {row["id"]: row["context"] for row in squad_rows(12, 5, seed=seed)}
    trained = {contexts[line.split(":")[-1]] for line in _row_ids(tmp_path, prepared.train)}
    validated = {contexts[row.id] for row in held_out}
    assert validated and trained and not validated & trained
    assert {row.id for row in held_out} == {line.split(":")[-1] for line in _row_ids(tmp_path, prepared.validation)}
    assert 10 <= len(held_out) <= 20  # whole contexts of 5 questions: about a quarter of 60 questions


def _row_ids(tmp_path: Path, windows: list) -> set[str]:
    """The ids of the rows behind windows (file:line#n), as the rows' own ids (their JSON `id`)."""
    lines = (tmp_path / "qa.jsonl").read_text().splitlines()
    return {json.loads(lines[int(w.where.rpartition(":")[2].split("#")[0]) - 1])["id"] for w in windows}


def test_rows_of_one_document_stay_on_one_side(tmp_path: Path, wordpiece):
    from tunesmith.training.extractive_qa import prepare_qa_data

    rows = squad_rows(12, 2)
    for row in rows:  # two contexts per article: its paragraphs are held out together
        row["title"] = f"article {int(row['id'].split('-')[0]) // 2}"
    data = write_rows(tmp_path / "qa.jsonl", rows)
    prepared = prepare_qa_data(qa_config(data), wordpiece, None)
    titles = {row["id"]: row["title"] for row in rows}
    validated = {titles[row.id] for row in prepared.extras["validation_rows"]}
    assert validated and not validated & {titles[i] for i in _row_ids(tmp_path, prepared.train)}


def test_questions_on_a_single_context_cannot_be_split_and_say_so(tmp_path: Path, wordpiece):
    from tunesmith.training.extractive_qa import prepare_qa_data

    data = write_rows(tmp_path / "qa.jsonl", squad_rows(1, 8))
    with pytest.raises(DataError, match="all 8 questions share one context.*data.validation"):
        prepare_qa_data(qa_config(data), wordpiece, None)
    assert prepare_qa_data(qa_config(data, "data.validation_split=0"), wordpiece, None).validation == []


def test_the_reported_f1_comes_from_rows_the_null_threshold_was_not_tuned_on(tmp_path: Path, wordpiece,
                                                                             tiny_wordpiece_bert_dir: Path):
    import torch
    from transformers import AutoModelForQuestionAnswering

    from tunesmith.data.squad import squad_scores
    from tunesmith.models.reader import Reader, read_answers, score_answers, tune_null_threshold
    from tunesmith.training.extractive_qa import prepare_qa_data, threshold_halves, tune_no_answer

    data = write_rows(tmp_path / "qa.jsonl", squad_rows(24, 4, unanswerable_every=3))
    config = qa_config(data, "data.validation_split=0.5", "train.precision=fp32")  # as the test reads it: no autocast
    prepared = prepare_qa_data(config, wordpiece, None)
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_wordpiece_bert_dir).eval()  # an untrained head
    tune_no_answer(model, prepared, wordpiece, config)
    record = prepared.record

    tuning, scoring = threshold_halves(prepared.extras["validation_rows"], config.train.seed)
    assert tuning and scoring and not {r.context for r in tuning} & {r.context for r in scoring}
    assert sorted(r.id for r in tuning + scoring) == sorted(r.id for r in prepared.extras["validation_rows"])
    assert (record["null_threshold_rows"], record["validation_f1_rows"]) == (len(tuning), len(scoring))

    def golds(rows):
        return [[a.text for a in row.answers] for row in rows]

    reader = Reader(model, wordpiece, "r", 48, 16, config.task.max_answer_tokens, unanswerable=True)
    threshold, tuned_f1 = tune_null_threshold(score_answers(reader, tuning), golds(tuning))
    assert record["null_threshold"] == round(threshold, 6)  # tuned on its half alone
    assert record["null_threshold_tuning_f1"] == round(tuned_f1, 6)  # named as tuned on its rows
    reader.null_threshold = record["null_threshold"]
    answers = [a.text for a in read_answers(reader, scoring)]
    assert record["validation_f1"] == round(squad_scores(golds(scoring), answers)["f1"], 6)  # the other half, as eval scores it


def test_squad_json_paragraphs_of_one_article_are_one_group(tmp_path: Path):
    from tunesmith.data.qa import context_groups, read_qa

    def paragraph(text: str, qid: str) -> dict:
        return {"context": text, "qas": [{"id": qid, "question": "Who?", "answers": [{"text": text[:4], "answer_start": 0}]}]}

    squad = {"data": [{"title": "Vesk", "paragraphs": [paragraph("Mara lives here.", "a"), paragraph("Rafe works here.", "b")]},
                      {"title": "Pym", "paragraphs": [paragraph("Elsa lives here.", "c"), paragraph("Mara lives here.", "d")]}]}
    (tmp_path / "s.json").write_text(json.dumps(squad))
    rows = read_qa(tmp_path / "s.json")
    assert [row.title for row in rows] == ["Vesk", "Vesk", "Pym", "Pym"]
    assert len(set(context_groups(rows))) == 1  # Mara's paragraph is in both articles: it joins them
    assert len(set(context_groups(rows, documents=False))) == 3
