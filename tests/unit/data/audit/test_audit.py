"""The data audit finds what was planted, and nothing in look-alikes; cleaning writes a new file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.data.audit import run_audit
from tunesmith.data.audit.duplicates import find_duplicates, find_leaks
from tunesmith.data.audit.pii import find_pii, iban_ok, luhn_ok, scrub
from tunesmith.errors import ConfigError

WORDS = "the a film story cast plot ending scene music actor good bad long short warm cold funny dull bright dark".split()


def sentence(rng: random.Random, n: int = 30) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_exact_and_near_duplicates_are_grouped_and_unrelated_rows_are_not():
    rng = random.Random(0)
    texts = [sentence(rng) + f" row {i}" for i in range(500)]
    texts.append(texts[3].upper() + " !")  # exact after normalization
    near = texts[9].split()
    near[15] = "zebra"
    texts.append(" ".join(near))  # one word changed in 32
    wheres = [f"f:{i + 1}" for i in range(len(texts))]
    groups = find_duplicates(wheres, texts)
    as_sets = {frozenset(g.rows): g for g in groups}
    assert set(as_sets) == {frozenset({"f:4", "f:501"}), frozenset({"f:10", "f:502"})}
    assert as_sets[frozenset({"f:4", "f:501"})].exact and not as_sets[frozenset({"f:10", "f:502"})].exact
    assert 0.8 <= as_sets[frozenset({"f:10", "f:502"})].similarity < 1.0


def test_leaks_exact_near_and_long_shared_answer_runs():
    rng = random.Random(1)
    train = [sentence(rng) + f" q{i}" for i in range(200)]
    answers = [sentence(rng, 20) for _ in range(200)]
    changed = train[5].split()
    changed[3] = "kangaroo"
    held = [train[2], " ".join(changed), "a brand new question", "another new one"]
    held_answers = ["x", "y", "so it goes: " + " ".join(answers[7].split()[:14]) + " and more", "short"]
    leaks = find_leaks([f"t:{i}" for i in range(200)], train, [f"h:{j}" for j in range(4)], held, answers, held_answers)
    assert [(leak.held_out, leak.train, leak.kind) for leak in leaks] == [
        ("h:0", "t:2", "exact"), ("h:1", "t:5", "near"), ("h:2", "t:7", "ngram")]


@pytest.mark.parametrize("text, kind", [
    ("mail jo.doe@example.com now", "EMAIL"), ("call +1 415-555-0132", "PHONE"), ("or (020) 7946 0958", "PHONE"),
    ("card 4111 1111 1111 1111", "CARD"), ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN"), ("from 192.168.1.20", "IP"),
    ("v6 2001:db8::1", "IP"), ("ssn 123-45-6789", "SSN"), ("NI AB 12 34 56 C", "NINO"),
    ("https://bob:hunter2@db.example.com/x", "URL_CREDENTIALS"), ("key sk-proj-abcdefghijklmnopqrstuvwx1234", "API_KEY"),
    ("AKIAIOSFODNN7EXAMPLE", "API_KEY"), ("ghp_" + "a1B2" * 9, "API_KEY"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----", "PRIVATE_KEY"),
    ("token aZ3kP9qLm2XvB7nR4tY8wE1uI6oP0sDfG5hJ", "SECRET"),
])
def test_each_kind_of_personal_or_secret_data_is_found(text, kind):
    assert [f.kind for f in find_pii(text)] == [kind]


@pytest.mark.parametrize("text", [
    "order 4111 1111 1111 1112",  # 16 digits failing Luhn
    "IBAN GB82 WEST 1234 5698 7654 33",  # bad mod-97 checksum
    "ssn 000-12-3456 and 666-12-3456",  # numbers the SSA never issues
    "version 1.2.3.4.5 and 999.1.1.1", "in 2024 we had 3.14 and 12 345 678 people", "time 12:30:45",
    "a sha-like word aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "see https://example.com/page?x=1",
])
def test_look_alikes_are_not_personal_data(text):
    assert find_pii(text) == []


def test_checksums_match_their_definitions():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")  # the Luhn article's example
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE89 3704 0044 0532 0130 01")
    assert scrub("a@b.io and +1 415-555-0132")[0] == "<EMAIL> and <PHONE>"


def test_label_noise_balance_and_a_broken_quote_csv(tmp_path: Path):
    rng = random.Random(2)
    lines = ["text,label"] + [f"{sentence(rng)} {i},{'pos' if i < 90 else 'neg'}" for i in range(100)]
    lines.append(f"{lines[4].rsplit(',', 1)[0]},neg")  # the same text under the other label
    lines.append('"an unclosed quote swallows the next rows,neg')
    lines += [f"{sentence(rng, 8)}, row {i},pos" for i in range(10)]
    lines.append('where the quote finally closes",neg')  # one row of 2 fields that holds 11 lines
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    report = run_audit(path)
    checks = {f.check for f in report.findings}
    assert "label-noise" in checks and "swallowed-rows" in checks
    assert report.labels["imbalance_ratio"] >= 3 and report.labels["suggest_class_weights"]


def test_preference_pairs_same_contradicting_and_length_bias(tmp_path: Path):
    def pair(prompt, chosen, rejected):
        return {"messages": [{"role": "user", "content": prompt}], "chosen": chosen, "rejected": rejected}

    rows = [pair("p1", "a long helpful reply", "no"), pair("p2", "same", "same"), pair("p1", "no", "a long helpful reply"),
            pair("p3", "a longer reply here", "short")]
    report = run_audit(write_jsonl(tmp_path / "pairs.jsonl", rows))
    found = {(f.check, f.where.rsplit(":", 1)[1]) for f in report.findings}
    assert ("invalid", "2") in found and ("contradicting-pair", "3") in found  # chosen == rejected fails validation
    assert any("same reply" in f.what for f in report.findings if f.check == "invalid")
    assert report.chosen_longer == pytest.approx(2 / 3)


def test_cli_audit_writes_reports_and_a_cleaned_copy_leaving_the_input_alone(tmp_path: Path, capsys):
    rng = random.Random(3)
    rows = [{"messages": [{"role": "user", "content": sentence(rng) + f" {i}"},
                          {"role": "assistant", "content": sentence(rng, 10)}]} for i in range(50)]
    rows.append(rows[0])
    rows.append({"messages": [{"role": "user", "content": "mail me at ann@example.com"},
                              {"role": "assistant", "content": "sure, 4111 1111 1111 1111"}]})
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    before = train.read_bytes()
    test = write_jsonl(tmp_path / "test.jsonl", [rows[7]])
    out = tmp_path / "clean.jsonl"
    assert main(["data", "audit", str(train), "--test", str(test), "--report-dir", str(tmp_path / "audit"),
                 "--dedupe", "--scrub", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 of 1 rows of" in printed and "EMAIL in 1 rows" in printed and "1 duplicate rows removed" in printed
    assert train.read_bytes() == before
    cleaned = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(cleaned) == 51 and "<EMAIL>" in json.dumps(cleaned[-1]) and "<CARD>" in json.dumps(cleaned[-1])
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["version"] == 1 and len(saved["leaks"]) == 1 and saved["pii"]["EMAIL"]
    assert (tmp_path / "audit" / "audit.html").read_text().startswith("<!doctype html>")
    with pytest.raises(ConfigError, match="overwrite the input"):
        from tunesmith.data.audit.clean import write_cleaned

        write_cleaned(train, train, scrub_pii=True)


def test_a_row_in_another_language_or_script_is_flagged(tmp_path: Path):
    english = [{"text": f"this is the review number {i} and it was not bad at all for the money", "label": "pos"}
               for i in range(30)]
    german = {"text": "das ist nicht der film den ich sehen wollte und die musik ist zu laut", "label": "neg"}
    russian = {"text": "это был очень хороший фильм и я рекомендую его всем друзьям", "label": "pos"}
    report = run_audit(write_jsonl(tmp_path / "rows.jsonl", english + [german, russian]))
    flagged = {f.where.rsplit(":", 1)[1]: f.what for f in report.findings if f.check == "language"}
    assert set(flagged) == {"31", "32"} and "de" in flagged["31"] and "Cyrillic" in flagged["32"]


def test_presidio_without_the_package_is_one_line_naming_what_to_install(tmp_path: Path):
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("presidio-analyzer is installed here; the message is for machines without it")
    with pytest.raises(ConfigError, match="pip install presidio-analyzer"):
        run_audit(write_jsonl(tmp_path / "rows.jsonl", [{"text": "hello there", "label": "a"}]), pii_detector="presidio")


def test_pairs_just_above_the_threshold_are_found():
    """Pairs at Jaccard 0.70-0.75 (the LSH must not be tuned at the threshold itself, where it misses half)."""
    from tunesmith.data.audit.duplicates import THRESHOLD, jaccard, shingles

    rng = random.Random(5)
    texts, planted = [], 0
    for i in range(100):
        words = [f"w{rng.randrange(10**6)}" for _ in range(60)]
        copy = list(words)
        for position in rng.sample(range(60), 60):
            similarity = jaccard(shingles(" ".join(words)), shingles(" ".join(copy)))
            if similarity < THRESHOLD + 0.05:
                break
            copy[position] = f"x{i}-{position}"
        if jaccard(shingles(" ".join(words)), shingles(" ".join(copy))) >= THRESHOLD:
            planted += 1
        texts += [" ".join(words), " ".join(copy)]
    groups = find_duplicates([f"f:{n}" for n in range(len(texts))], texts)
    assert planted >= 80 and len(groups) >= 0.95 * planted
