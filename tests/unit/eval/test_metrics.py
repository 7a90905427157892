import pytest

from tunesmith.eval.metrics import (
    UNPARSED,
    label_metrics,
    map_answer_to_label,
    normalize_for_match,
    text_metrics,
)

LABELS = ["negative", "positive"]


@pytest.mark.parametrize(("answer", "label", "rule"), [
    ("positive", "positive", "exact"),
    ("  negative\n", "negative", "exact"),
    ("Positive.", "positive", "normalized"),
    ("NEGATIVE!", "negative", "normalized"),
    ("I think it is positive, not negative", "positive", "first match"),
    ("negative; well, maybe positive", "negative", "first match"),
    ("It's neutral", None, "unparsed"),
    ("positively", None, "unparsed"),  # whole words only
    ("", None, "unparsed"),
    ("not positive", None, "unparsed"),  # a negated label is no vote, and the model did not say the other one
    ("It is not positive; it is negative.", "negative", "first match"),
    ("This review isn't negative at all, it's positive", "positive", "first match"),
    ("No, never positive. Negative.", "negative", "first match"),
    ("The sentiment is not really positive", None, "unparsed"),
])
def test_answers_map_to_labels_by_the_documented_rules(answer, label, rule):
    assert map_answer_to_label(answer, LABELS) == (label, rule)


def test_at_the_same_position_the_longer_label_wins():
    assert map_answer_to_label("very good movie", ["good", "very good"]) == ("very good", "first match")


def test_label_metrics_match_hand_computed_values():
    gold = ["positive", "positive", "positive", "negative", "negative", "negative", "negative"]
    predicted = ["positive", "positive", "negative", "negative", "negative", "positive", None]
    metrics = label_metrics(gold, predicted, LABELS)
    # positive: tp=2, predicted 3, support 3 -> p=2/3, r=2/3 ; negative: tp=2, predicted 3, support 4 -> p=2/3, r=1/2
    assert metrics.accuracy == pytest.approx(4 / 7)
    assert metrics.per_class["positive"]["precision"] == pytest.approx(2 / 3)
    assert metrics.per_class["positive"]["recall"] == pytest.approx(2 / 3)
    assert metrics.per_class["positive"]["f1"] == pytest.approx(2 / 3)
    assert metrics.per_class["negative"]["precision"] == pytest.approx(2 / 3)
    assert metrics.per_class["negative"]["recall"] == pytest.approx(1 / 2)
    assert metrics.per_class["negative"]["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert metrics.macro["f1"] == pytest.approx((2 / 3 + 4 / 7) / 2)
    assert metrics.macro["precision"] == pytest.approx(2 / 3)
    assert metrics.macro["recall"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # rows gold (negative, positive); columns predicted (negative, positive, unparsed)
    assert metrics.confusion == [[2, 1, 1], [1, 2, 0]]
    assert metrics.unparsed == 1
    assert metrics.as_dict()["labels"] == LABELS and UNPARSED == "(unparsed)"


def test_a_class_never_predicted_has_zero_precision_not_an_error():
    metrics = label_metrics(["a", "b", "c"], ["a", "a", "a"], ["a", "b", "c"])
    assert metrics.per_class["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics.per_class["a"]["precision"] == pytest.approx(1 / 3)
    assert metrics.macro["f1"] == pytest.approx((0.5 + 0 + 0) / 3)


def test_text_metrics_match_hand_computed_values():
    references = ["The cat sat on the mat.", "Paris", "blue sky"]
    predictions = ["the cat sat on mat", "Paris", "grey sky today"]
    metrics = text_metrics(references, predictions)
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["normalized_exact_match"] == pytest.approx(2 / 3)  # articles and punctuation ignored
    # ROUGE-L F: (1) LCS 5 of 6 ref / 5 pred -> p=1, r=5/6 ; (2) 1 ; (3) LCS 1: p=1/3, r=1/2
    expected = (2 * 1 * (5 / 6) / (1 + 5 / 6) + 1.0 + 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)) / 3
    assert metrics["rouge_l"] == pytest.approx(expected)
    assert normalize_for_match("The  Answer!") == "answer"


def test_contains_answer_counts_a_whole_word_reference_inside_a_sentence():
    from tunesmith.eval.metrics import contains_answer

    assert contains_answer("1702", "Sasshe Fonhu was born in 1702.")
    assert contains_answer("the Deilei", "It lies on the deilei river")  # articles, case, punctuation
    assert not contains_answer("1702", "born in 17021")  # whole words only
    assert not contains_answer("oak", "made of cloak")
    assert not contains_answer("", "anything")
    metrics = text_metrics(["1702", "oak", "Paris"], ["born in 1702", "pine", "Paris"])
    assert metrics["contains_answer"] == pytest.approx(2 / 3) and metrics["exact_match"] == pytest.approx(1 / 3)


def random_labelled(rng, labels: list[str], rows: int, unparsed: bool) -> tuple[list[str], list[str | None]]:
    """Gold and predicted labels drawn from a random subset of `labels` (some labels absent from both)."""
    used = rng.sample(labels, rng.randint(1, len(labels)))
    gold = [rng.choice(used) for _ in range(rows)]
    guesses = used + ([None] if unparsed else []) + rng.sample(labels, 1)
    return gold, [g if rng.random() < 0.6 else rng.choice(guesses) for g in gold]


@pytest.mark.parametrize("unparsed", [False, True])
def test_macro_scores_average_the_labels_present_as_sklearn_does(unparsed: bool):
    # sklearn's macro average runs over the labels found in gold or predicted; an unparsed answer
    # (None) is wrong, but is no label of its own
    import random

    from sklearn.metrics import f1_score, precision_recall_fscore_support

    rng = random.Random(5)
    labels = ["a", "b", "c", "d", "e"]
    for _ in range(200):
        gold, predicted = random_labelled(rng, labels, rng.randint(1, 12), unparsed)
        metrics = label_metrics(gold, predicted, labels)
        as_text = [UNPARSED if p is None else p for p in predicted]
        present = sorted(set(gold) | {p for p in predicted if p is not None})
        p, r, f, _ = precision_recall_fscore_support(gold, as_text, labels=present, average="macro", zero_division=0)
        assert (metrics.macro["precision"], metrics.macro["recall"], metrics.macro["f1"]) == pytest.approx((p, r, f))
        if not unparsed:
            assert metrics.macro["f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))


def test_a_group_with_one_class_all_right_scores_one_and_shows_no_gap():
    from tunesmith.eval.metrics import metrics_by_group

    gold = ["pos"] * 5 + ["neg"] * 5
    found = metrics_by_group({"praised": [0, 1, 2, 3, 4], "panned": [5, 6, 7, 8, 9]}, gold, list(gold), ["neg", "pos"])
    assert found["groups"]["praised"] == {"rows": 5, "accuracy": 1.0, "macro_f1": 1.0}
    assert found["gap"] == {"accuracy": 0.0, "macro_f1": 0.0}


def test_macro_f1_by_group_is_sklearns_on_each_groups_rows():
    import random

    from sklearn.metrics import f1_score

    from tunesmith.eval.metrics import metrics_by_group

    rng = random.Random(11)
    for _ in range(50):
        gold, predicted = random_labelled(rng, ["a", "b", "c"], 40, unparsed=False)
        members = {name: sorted(rng.sample(range(40), rng.randint(1, 15))) for name in ("x", "y", "z")}
        found = metrics_by_group(members, gold, predicted, ["a", "b", "c"])
        expected = {name: f1_score([gold[i] for i in rows], [predicted[i] for i in rows], average="macro", zero_division=0)
                    for name, rows in members.items()}
        assert {name: g["macro_f1"] for name, g in found["groups"].items()} == pytest.approx(expected)
        assert found["gap"]["macro_f1"] == pytest.approx(max(expected.values()) - min(expected.values()))


def test_the_group_notes_say_which_labels_macro_f1_averages(tmp_path):
    from tunesmith.data.examples import Message
    from tunesmith.eval.compare import Comparison, SystemResult
    from tunesmith.eval.items import EvalItem
    from tunesmith.pipeline.evaluate import group_notes

    groups = tmp_path / "groups.yaml"
    groups.write_text("praised: [great]\npanned: [awful]\n")
    texts = ["a great film"] * 4 + ["an awful film"] * 4
    gold = ["positive"] * 4 + ["negative"] * 4
    items = [EvalItem(f"f:{n}", (Message("user", text),), label, label, text) for n, (text, label) in enumerate(zip(texts, gold))]
    system = SystemResult("fine-tuned", "m", list(gold), {}, 1.0, 0, predicted=list(gold))
    [note] = group_notes(Comparison("label", items, [system], labels=LABELS), str(groups))
    assert "praised accuracy 1.000, macro F1 1.000 (n=4)" in note and "gap 0.000 in accuracy, 0.000 in macro F1" in note
    assert "labels present in the group" in note
