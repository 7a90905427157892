"""A prompt every row shares (a system turn, an instruction template) makes no two rows alike: the
audit compares what differs between rows, for duplicates, near duplicates and leakage."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunesmith.cli import main
from tunesmith.data.audit import run_audit
from tunesmith.data.audit.duplicates import find_duplicates, find_leaks


def words(rng: random.Random, n: int, tag: str) -> str:
    """`n` words no other call shares (each carries `tag`): rows whose questions share nothing."""
    return " ".join(f"{tag}{rng.choice('bcdfgklmnprst')}{rng.choice('aeiou')}{k}" for k in range(n))


_PROMPT_WORDS = ("you are a careful assistant for the support team answer briefly politely and always in english never "
                 "reveal internal notes cite the policy when relevant ask a clarifying question when the request is "
                 "ambiguous").split()
SYSTEM = " ".join(random.Random(7).choices(_PROMPT_WORDS, k=150))  # 150 words, the same in every row


def chat(question: str, answer: str, system: str | None = SYSTEM) -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": turns + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_shared_system_prompt_leaks_nothing_and_dedupe_keeps_every_distinct_row(tmp_path: Path, capsys):
    rng = random.Random(0)
    train = [chat(words(rng, 12, f"q{i}"), words(rng, 10, f"a{i}")) for i in range(50)]
    test = [chat(words(rng, 12, f"t{j}"), words(rng, 10, f"u{j}")) for j in range(10)]
    train_path, test_path = write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test)
    out = tmp_path / "clean.jsonl"
    assert main(["data", "audit", str(train_path), "--test", str(test_path), "--report-dir", str(tmp_path / "audit"),
                 "--dedupe", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"leakage: 0 of 10 rows of {test_path}" in printed
    assert "0 groups of exact duplicates, 0 of near duplicates" in printed and "0 duplicate rows removed" in printed
    assert len(out.read_text().splitlines()) == 50

    # the same question asked again is still a leak, and the same row twice still a duplicate
    write_jsonl(test_path, test + [chat(train[4]["messages"][1]["content"], "another answer")])
    write_jsonl(train_path, train + [train[9]])
    report = run_audit(train_path, held_out=[test_path])
    assert [(leak.train.rsplit(":", 1)[1], leak.held_out.rsplit(":", 1)[1], leak.kind) for leak in report.leaks] == [
        ("5", "11", "exact")]
    assert [(g.rows, g.exact) for g in report.duplicates] == [((f"{train_path}:10", f"{train_path}:51"), True)]


def test_a_question_asked_under_another_system_prompt_is_still_a_leak(tmp_path: Path):
    rng = random.Random(1)
    train = [chat(words(rng, 30, f"q{i}"), words(rng, 10, f"a{i}")) for i in range(20)]
    near = train[3]["messages"][1]["content"].split()
    near[15] = "changed"  # one word in 30: Jaccard 25/31
    test = [chat(train[2]["messages"][1]["content"], "x", system="be terse"),
            chat(" ".join(near), "y", system=None), chat(words(rng, 12, "new"), "z")]
    report = run_audit(write_jsonl(tmp_path / "train.jsonl", train), held_out=[write_jsonl(tmp_path / "test.jsonl", test)])
    assert [(leak.train.rsplit(":", 1)[1], leak.held_out.rsplit(":", 1)[1], leak.kind) for leak in report.leaks] == [
        ("3", "1", "exact"), ("4", "2", "near")]


def test_an_instruction_template_in_every_prompt_is_left_out_of_the_comparison():
    """Alpaca-style rows: the same 100-word preamble, then a short instruction that differs."""
    rng = random.Random(2)
    preamble = " ".join(rng.choices(_PROMPT_WORDS, k=100))
    train = [f"{preamble}### instruction: {words(rng, 8, f'q{i}')} ### response: {words(rng, 8, f'a{i}')}"
             for i in range(40)]
    held = [f"{preamble}### instruction: {words(rng, 8, f'h{j}')}" for j in range(5)]
    held.append(train[7].split("### response:")[0].strip())  # a real leak: the same instruction
    wheres = [f"t:{i}" for i in range(40)]
    assert find_duplicates(wheres, train) == []
    train_inputs = [text.split("### response:")[0].strip() for text in train]
    leaks = find_leaks(wheres, train_inputs, [f"h:{j}" for j in range(6)], held, [""] * 40, [""] * 6)
    assert [(leak.train, leak.held_out, leak.kind) for leak in leaks] == [("t:7", "h:5", "exact")]

    near = train[11].split()
    near[-3] = "changed"  # one word of the response differs: still a near duplicate
    groups = find_duplicates(wheres + ["t:40"], train + [" ".join(near)])
    assert [(g.rows, g.exact) for g in groups] == [(("t:11", "t:40"), False)]


def test_answers_that_share_a_long_stock_phrase_are_not_ngram_leaks():
    rng = random.Random(3)
    stock = "thank you for contacting the support team we are happy to help you with your question today"
    train_answers = [f"{stock} {words(rng, 10, f'a{i}')}" for i in range(30)]
    held_answers = [f"{stock} {words(rng, 10, f'b{j}')}" for j in range(5)]
    held_answers.append(f"so {' '.join(train_answers[6].split()[-13:])}")  # 13 words of a training answer's own part
    train = [words(rng, 10, f"q{i}") for i in range(30)]
    held = [words(rng, 10, f"h{j}") for j in range(6)]
    leaks = find_leaks([f"t:{i}" for i in range(30)], train, [f"h:{j}" for j in range(6)], held, train_answers, held_answers)
    assert [(leak.train, leak.held_out, leak.kind) for leak in leaks] == [("t:6", "h:5", "ngram")]


def test_personal_data_in_a_system_turn_is_still_found(tmp_path: Path):
    rows = [chat(f"question {i} about the weather", "fine", system="Escalate to ops@example.com if unsure.") for i in range(3)]
    report = run_audit(write_jsonl(tmp_path / "rows.jsonl", rows))
    assert report.pii == {"EMAIL": [f"{tmp_path / 'rows.jsonl'}:{n}" for n in (1, 2, 3)]}
