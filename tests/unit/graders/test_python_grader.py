"""Python graders run only when trusted, in a child process under limits, one process per batch, and
every way a grader can fail is an error in the metadata with its reward 0, never the caller's crash."""

from __future__ import annotations

import os
import warnings

import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse

from tunesmith.graders import GraderError, PythonLimits, grade_many, run_grader

SOURCE = '''
import os

def grade(sample, item):
    print("graders may print; the answers are not disturbed")
    mode = item.get("mode")
    if mode == "text":
        return "0.5"
    if mode == "nan":
        return float("nan")
    if mode == "raise":
        raise KeyError("no such thing")
    if mode == "hang":
        while True:
            pass
    if mode == "allocate":
        block = bytearray(item["megabytes"] << 20)
        return float(len(block) > 0)
    if mode == "exit":
        os._exit(3)
    if mode == "pid":
        return os.getpid()
    return 1.0 if sample["output_text"] == item["answer"] else 0.0
'''
GRADER = {"type": "python", "name": "code", "source": SOURCE}
LIMITS = PythonLimits(timeout_s=3, memory_mb=512)


def run(item: dict, sample: str = "x", **options) -> dict:
    result = run_grader(GRADER, sample=sample, item=item, allow_python=True,
                        python_limits=options.pop("limits", LIMITS), **options)
    GraderRunResponse.model_validate(result)
    return result


def raised(result: dict) -> dict:
    return {name: value for name, value in result["metadata"]["errors"].items() if value}


def test_without_the_trust_flag_a_python_grader_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    grader = {"type": "python", "name": "code",
              "source": f"open({str(marker)!r}, 'w').close()\ndef grade(sample, item):\n    return 1.0\n"}
    with pytest.raises(GraderError, match=r"^grader: a python grader runs its source code on this machine; it runs "
                                          r"only when the caller trusts it \(allow_python=True"):
        run_grader(grader, sample="x", item={})
    multi = {"type": "multi", "name": "m", "calculate_output": "code", "graders": {"code": grader}}
    with pytest.raises(GraderError, match=r"^grader.graders.code: a python grader"):
        grade_many(multi, ["x"], [{}])
    assert not marker.exists()
    run_grader(grader, sample="x", item={}, allow_python=True)
    assert marker.exists()


def test_grade_gets_the_sample_and_the_item_and_its_number_is_the_reward():
    assert run({"answer": "x"})["reward"] == 1.0
    assert run({"answer": "y"})["reward"] == 0.0


@pytest.mark.parametrize(("mode", "message"), [
    ("text", "grade() returned '0.5' (str), not a number"),
    ("nan", "grade() returned nan, not a finite number"),
])
def test_a_result_that_is_not_a_number_is_a_runtime_error(mode: str, message: str):
    result = run({"mode": mode})
    assert result["reward"] == 0.0 and raised(result) == {
        "python_grader_runtime_error": True, "python_grader_runtime_error_details": message}


def test_an_exception_in_grade_is_a_runtime_error_with_its_traceback():
    details = run({"mode": "raise"})["metadata"]["errors"]["python_grader_runtime_error_details"]
    assert details.endswith("KeyError: 'no such thing'\n") and 'File "<grader source>", line 12, in grade' in details
    assert "python_worker.py" not in details  # the worker's own frames are left out


def test_a_grader_past_its_time_is_stopped_and_the_batch_goes_on():
    rewards_and_pids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rewards_and_pids = grade_many(GRADER, ["x", "x", "x", "x"],
                                      [{"mode": "pid"}, {"mode": "hang"}, {"answer": "x"}, {"mode": "pid"}],
                                      allow_python=True, python_limits=PythonLimits(timeout_s=1))
    first_pid, hung, after, second_pid = rewards_and_pids
    assert hung == 0.0 and after == 1.0
    assert first_pid != second_pid  # the stopped worker was replaced for the samples after it
    result = run({"mode": "hang"}, limits=PythonLimits(timeout_s=1))
    assert raised(result) == {"unresponsive_reward_error": True}
    assert result["metadata"]["error_messages"] == ["the grader ran past its 1 s limit and was stopped"]


def test_the_memory_limit_stops_a_grader_that_allocates_past_it():
    assert run({"mode": "allocate", "megabytes": 64})["reward"] == 1.0  # under the limit: runs
    result = run({"mode": "allocate", "megabytes": 1024})  # 1 GiB against a 512 MiB address space
    assert result["reward"] == 0.0
    assert result["metadata"]["errors"]["python_grader_runtime_error_details"].endswith("MemoryError\n")


def test_a_worker_that_dies_is_a_server_error_and_is_replaced():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rewards = grade_many(GRADER, ["x", "x"], [{"mode": "exit"}, {"answer": "x"}], allow_python=True,
                             python_limits=LIMITS)
    assert rewards == [0.0, 1.0]
    result = run({"mode": "exit"})
    assert raised(result) == {"python_grader_server_error": True, "python_grader_server_error_type": "process_died"}
    assert result["metadata"]["error_messages"][0].startswith("the grader's process died (exit code 3)")


def test_a_batch_runs_in_one_worker_process_not_one_per_sample():
    pids = grade_many(GRADER, ["x"] * 20, [{"mode": "pid"}] * 20, allow_python=True, python_limits=LIMITS)
    assert len(set(pids)) == 1 and pids[0] != os.getpid()
    # a multi grader's python graders share it too
    multi = {"type": "multi", "name": "m", "calculate_output": "one - two", "graders": {
        "one": GRADER, "two": {**GRADER, "name": "again", "source": SOURCE + "\n# another grader\n"}}}
    assert grade_many(multi, ["x"] * 5, [{"mode": "pid"}] * 5, allow_python=True, python_limits=LIMITS) == [0.0] * 5


def test_source_that_fails_to_load_fails_each_sample_with_its_error():
    grader = {"type": "python", "name": "broken", "source": "import no_such_module_here\ndef grade(s, i):\n    return 1\n"}
    result = run_grader(grader, sample="x", item={}, allow_python=True, python_limits=LIMITS)
    assert result["metadata"]["errors"]["python_grader_runtime_error_details"].endswith(
        "ModuleNotFoundError: No module named 'no_such_module_here'\n")


def test_the_grader_runs_in_an_empty_folder_without_the_callers_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    grader = {"type": "python", "name": "env", "source": (
        "import os\ndef grade(sample, item):\n"
        "    return float('OPENAI_API_KEY' not in os.environ) + float(os.listdir('.') == [])\n")}
    assert run_grader(grader, sample="x", item={}, allow_python=True, python_limits=LIMITS)["reward"] == 2.0
