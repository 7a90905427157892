"""Validation splits by group, and the row ids a run records for the rows it held out."""

from __future__ import annotations

import random

import pytest

from tunesmith.data.pipeline import row_id, row_ids, split_validation_by_group


@pytest.mark.parametrize("seed", range(20))
def test_a_split_by_group_keeps_each_group_on_one_side_and_both_sides_filled(seed: int):
    rng = random.Random(seed)
    groups = [rng.randrange(rng.randint(2, 12)) for _ in range(rng.randint(2, 60))]
    if len(set(groups)) < 2:
        groups[0], groups[-1] = 0, 1
    items = list(range(len(groups)))
    fraction = rng.choice([0.1, 0.25, 0.5, 0.9])
    train, validation = split_validation_by_group(items, groups, fraction, seed)
    assert sorted(train + validation) == items and train == sorted(train) and validation == sorted(validation)
    assert train and validation
    assert not {groups[i] for i in train} & {groups[i] for i in validation}
    assert split_validation_by_group(items, groups, fraction, seed) == (train, validation)  # seeded
    # the fewest whole groups (in the seeded order) that reach the fraction, one group short of all at most
    target = min(len(items) - 1, max(1, round(fraction * len(items))))
    assert len(validation) >= target or len({groups[i] for i in train}) == 1


def test_one_group_or_no_fraction_holds_nothing_out():
    assert split_validation_by_group([1, 2, 3], ["a", "a", "a"], 0.5, 0) == ([1, 2, 3], [])
    assert split_validation_by_group([1, 2, 3], ["a", "b", "c"], 0.0, 0) == ([1, 2, 3], [])


def test_row_ids_name_each_row_once_whatever_it_was_cut_into():
    class Window:
        def __init__(self, where: str) -> None:
            self.where = where

    assert row_id("/data/qa.jsonl:12#3") == "/data/qa.jsonl:12" and row_id("C:/d/x.jsonl:7") == "C:/d/x.jsonl:7"
    windows = [Window(w) for w in ("f.jsonl:2#1", "f.jsonl:2#2", "f.jsonl:5#1", "f.json:5733be284776f41900661182#1")]
    assert row_ids(windows) == ["f.jsonl:2", "f.jsonl:5", "f.json:5733be284776f41900661182"]
