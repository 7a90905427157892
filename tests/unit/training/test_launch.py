"""Which rank the launcher names when several fail."""

import signal
from types import SimpleNamespace

from tunesmith.training.distributed.launch import _failed_at


def failure(exitcode: int, timestamp: int, error_file_data: object = None) -> SimpleNamespace:
    return SimpleNamespace(exitcode=exitcode, timestamp=timestamp, error_file_data=error_file_data or {})


def first(failures: dict) -> int:
    return min(failures.items(), key=lambda item: (*_failed_at(item[1]), item[0]))[0]


def test_a_crashed_rank_is_named_before_the_ranks_the_agent_then_stopped():
    # rank 1 aborted (gloo's collective mismatch); the agent then sent rank 0 SIGTERM, in the same second
    assert first({0: failure(-signal.SIGTERM, 100), 1: failure(-signal.SIGABRT, 100)}) == 1
    assert first({0: failure(-signal.SIGTERM, 100), 1: failure(1, 100)}) == 1


def test_a_rank_that_wrote_its_error_comes_first_and_the_earliest_of_those():
    said = {"tunesmith_failed_ns": 5, "message": "rank 2: ..."}
    earlier = {"tunesmith_failed_ns": 3, "message": "rank 3: ..."}
    assert first({0: failure(-signal.SIGABRT, 99), 2: failure(1, 100, said), 3: failure(1, 100, earlier)}) == 3
    assert first({0: failure(-signal.SIGTERM, 100), 1: failure(-signal.SIGTERM, 100)}) == 0  # all stopped: rank 0
