"""`tunesmith feedback export` on a chat run: which rows become SFT rows and DPO pairs, and what the
audit drops (personal data, duplicates, test-set prompts, rows already in the training data), on a
real SQLite store. No model is needed: the export reads the store and the run's data files."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.config import build_config, dump_config
from tunesmith.data.tasks import LabelTask
from tunesmith.feedback import export_feedback, parse_label_prompt
from tunesmith.store.completions import Completions
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


def served(completions: Completions, run: Path, question: str, answer: str, *feedback: dict) -> None:
    row = completions.add(project="default", model="bot", kind="adapter", run_dir=str(run.resolve()), generation=0,
                          endpoint="chat", messages=[{"role": "user", "content": question}], answer=answer,
                          choices=[{"index": 0, "text": answer, "finish_reason": "stop"}], params={}, latency_ms=3.0)
    for given in feedback:
        completions.add_feedback(None, row.id, score=given.get("score"), comment=None, correction=given.get("correction"))


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
