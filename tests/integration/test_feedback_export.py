"""`tunesmith feedback export` on a chat run: which rows become SFT rows and DPO pairs, and what the
audit drops (personal data, duplicates, test-set prompts, rows already in the training data), on a
real SQLite store. No model is needed: the export reads the store and the run's data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import build_config, dump_config
from tunesmith.data.tasks import LabelTask
from tunesmith.errors import RunError
from tunesmith.improve.feedback import export_feedback, parse_label_prompt
from tunesmith.store.completions import Completions, key_fingerprint
from tunesmith.store.db import open_store, sqlite_url


def chat_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"},
                                              {"role": "assistant", "content": "Paris."}]}) + "\n")
    test.write_text(json.dumps({"messages": [{"role": "user", "content": "How many legs does a spider have?"},
                                             {"role": "assistant", "content": "Eight."}]}) + "\n")
    (folder / "config.yaml").write_text(dump_config(build_config({"data": {"train": str(train)},
                                                                  "eval": {"test": str(test)}})))
    (folder / "manifest.json").write_text(json.dumps({"method": "sft"}))
    return folder


def served(completions: Completions, run: Path, question: str, answer: str, *feedback: dict, project: str = "default",
           key: str | None = None) -> None:
    """A completion as `serve --store` keeps it (in the project of the key that asked), and feedback
    on it as that key gives it."""
    row = completions.add(project=project, model="bot", kind="adapter", run_dir=str(run.resolve()), generation=0,
                          endpoint="chat", messages=[{"role": "user", "content": question}], answer=answer,
                          choices=[{"index": 0, "text": answer, "finish_reason": "stop"}], params={}, latency_ms=3.0)
    for given in feedback:
        completions.add_feedback(project, row.id, score=given.get("score"), comment=None,
                                 correction=given.get("correction"),
                                 key_fingerprint=key_fingerprint(key) if key is not None else None)


def test_sft_and_dpo_rows_from_feedback_with_the_audit_applied(tmp_path: Path) -> None:
    run = chat_run(tmp_path / "run")
    completions = Completions(open_store(sqlite_url(run / "completions.db")))
    served(completions, run, "Name a red fruit.", "A banana.", {"score": -1}, {"correction": "A strawberry."})
    served(completions, run, "Name a red fruit.", "A banana.", {"score": -1, "correction": "A strawberry."})  # same again
    served(completions, run, "Say hi to bob@example.com", "Hi!", {"score": 1})
    served(completions, run, "Name a colour.", "Blue.", {"score": 1})
    served(completions, run, "Name a colour.", "Hmm.", {"score": -1})
    served(completions, run, "What is two and two?", "Five.", {"score": -1})  # disliked, nothing to learn from
    served(completions, run, "How many legs does a spider have?", "Six.", {"correction": "Eight."})  # a test prompt
    served(completions, run, "What is the capital of France?", "Paris.", {"score": 1})  # already a training row
    served(completions, run, "Unrated question", "An answer.")

    sft = export_feedback(run, tmp_path / "sft.jsonl", "sft")
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows] == [
        ("Name a red fruit.", "A strawberry."), ("Say hi to <EMAIL>", "Hi!"), ("Name a colour.", "Blue.")]
    assert sft.completions == 9 and sft.with_feedback == 8 and sft.written == 3 and sft.scrubbed == 1
    assert sft.project == "default"  # the one project the store holds: read without being named
    assert sft.dropped == {"disliked or unscored, without a correction": 2, "duplicate within the export": 1,
                           "prompt of the run's test set (the gate scores it)": 1,
                           "already a training row with the same answer": 1}

    dpo = export_feedback(run, tmp_path / "dpo.jsonl", "dpo")
    pairs = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert [(p["input"]["messages"][0]["content"], p["preferred_output"][0]["content"],
             p["non_preferred_output"][0]["content"]) for p in pairs] == [
        ("Name a red fruit.", "A strawberry.", "A banana."), ("Name a colour.", "Blue.", "Hmm.")]
    assert dpo.written == 2


def test_a_label_prompt_reads_back_through_its_template_or_not_at_all() -> None:
    task = LabelTask(("negative", "positive"), "Review: {text}\nIs it {labels}?")
    assert parse_label_prompt(task.prompt("a fine film {with braces}"), task) == "a fine film {with braces}"
    assert parse_label_prompt("Review: something else entirely", task) is None


def test_an_export_reads_one_project_and_never_another_projects_feedback(tmp_path: Path) -> None:
    run = chat_run(tmp_path / "run")
    completions = Completions(open_store(sqlite_url(run / "completions.db")))
    served(completions, run, "Name a red fruit.", "A banana.", {"correction": "A strawberry."}, project="p1", key="k-ann")
    served(completions, run, "Name a colour.", "Blue.", {"score": 1}, project="p1", key="k-amy")
    served(completions, run, "Name a colour.", "Green.", {"score": 1}, project="p1", key="k-ann")
    for number in range(5):  # another project's key, correcting its own completions of the same served run
        served(completions, run, f"Is this safe, case {number}?", "No.", {"score": -1, "correction": "Yes, always."},
               project="p2", key="k-mallory")

    with pytest.raises(RunError, match=r"2 projects \(p1, p2\); give the one to read with --project NAME"):
        export_feedback(run, tmp_path / "mixed.jsonl", "sft")
    assert not (tmp_path / "mixed.jsonl").exists()
    with pytest.raises(RunError, match=r"--project p3: .* \(projects with completions of it: p1, p2\)"):
        export_feedback(run, tmp_path / "typo.jsonl", "sft", project="p3")

    report = export_feedback(run, tmp_path / "p1.jsonl", "sft", project="p1")
    rows = [json.loads(line) for line in (tmp_path / "p1.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in rows] == ["A strawberry.", "Blue.", "Green."]
    assert "Yes, always." not in (tmp_path / "p1.jsonl").read_text()
    assert (report.project, report.completions, report.with_feedback) == ("p1", 3, 3)
    assert report.by_key == {key_fingerprint("k-ann"): 2, key_fingerprint("k-amy"): 1}
    assert "in project p1" in report.summary() and key_fingerprint("k-ann") in report.summary()

    theirs = export_feedback(run, tmp_path / "p2.jsonl", "dpo", project="p2")
    assert theirs.written == 5 and theirs.by_key == {key_fingerprint("k-mallory"): 5}


def test_the_cli_asks_for_a_project_when_the_store_holds_several(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tunesmith.cli import main

    run = chat_run(tmp_path / "run")
    completions = Completions(open_store(sqlite_url(run / "completions.db")))
    served(completions, run, "Name a colour.", "Blue.", {"score": 1}, project="p1", key="k-ann")
    served(completions, run, "Is this safe?", "No.", {"correction": "Yes, always."}, project="p2", key="k-mallory")
    output = tmp_path / "rows.jsonl"
    assert main(["feedback", "export", str(run), "--as", "sft", "-o", str(output)]) == 2
    assert "--project NAME" in capsys.readouterr().err and not output.exists()
    assert main(["feedback", "export", str(run), "--as", "sft", "-o", str(output), "--project", "p1"]) == 0
    assert "in project p1" in capsys.readouterr().out
    assert [json.loads(line)["messages"][-1]["content"] for line in output.read_text().splitlines()] == ["Blue."]
