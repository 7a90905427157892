"""How decoding work is shared out over processes: whole batches, every N-th one per process."""

from __future__ import annotations

from tunesmith.models.processes import ALONE, Share


def test_each_process_takes_every_nth_batch_and_together_they_take_each_once():
    batches = [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    shares = [Share(rank, 3).take(batches) for rank in range(3)]
    assert shares == [[[0, 1], [6, 7]], [[2, 3], [8]], [[4, 5]]]
    assert sorted(row for share in shares for batch in share for row in batch) == list(range(9))
    assert [Share(rank, 3).writes for rank in range(3)] == [True, False, False]


def test_one_process_takes_everything_and_gathers_only_its_own():
    assert ALONE.take([[0], [1]]) == [[0], [1]] and ALONE.writes
    assert ALONE.gather({1: "b", 0: "a"}) == {1: "b", 0: "a"}
