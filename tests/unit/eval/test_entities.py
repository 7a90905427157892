"""Entity-level scores equal seqeval's (default mode) on the same tag sequences."""

from __future__ import annotations

import random

import pytest

from tunesmith.eval.entities import entity_scores

seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval (the reference) is a dev dependency: pip install -e .[dev]")


def random_tags(rng: random.Random, length: int, prefixes: str) -> list[str]:
    return [rng.choice(["O", "O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC", "ORG")]) for _ in range(length)]


@pytest.mark.parametrize("prefixes", ["BI", "BIES"])
def test_micro_macro_and_per_type_scores_equal_seqeval(prefixes):
    rng = random.Random(len(prefixes))
    gold = [random_tags(rng, rng.randint(1, 12), prefixes) for _ in range(300)]
    predicted = [[tag if rng.random() < 0.7 else random_tags(rng, 1, prefixes)[0] for tag in row] for row in gold]
    ours = entity_scores(gold, predicted)
    assert ours["micro"]["precision"] == pytest.approx(seqeval.precision_score(gold, predicted))
    assert ours["micro"]["recall"] == pytest.approx(seqeval.recall_score(gold, predicted))
    assert ours["micro"]["f1"] == pytest.approx(seqeval.f1_score(gold, predicted))
    assert ours["macro"]["f1"] == pytest.approx(seqeval.f1_score(gold, predicted, average="macro"))
    report = seqeval.classification_report(gold, predicted, output_dict=True)
    for kind, figures in ours["per_type"].items():
        for key in ("precision", "recall", "f1", "support"):
            assert figures[key] == pytest.approx(report[kind]["f1-score" if key == "f1" else key]), (kind, key)
    assert ours["token_accuracy"] == pytest.approx(seqeval.accuracy_score(gold, predicted))


def test_hand_made_case_and_the_type_confusion():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
    ours = entity_scores(gold, predicted)
    assert ours["micro"]["precision"] == pytest.approx(2 / 4) and ours["micro"]["recall"] == pytest.approx(2 / 3)
    assert ours["confusion"] == {"LOC -> ORG": 1, "ORG -> ORG": 1, "PER -> PER": 1}
