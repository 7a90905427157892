"""The data audit's speed: 10,000 and 100,000 chat rows, beside a plain exact de-duplication.

    python benchmarks/data_audit.py [--sizes 10000 100000] [--system-words 150] [--pii-worst-cases]

Rows are generated (seeded): a user question and an assistant answer of 20-60 words each, with 2%
exact duplicates, 2% near duplicates (one word changed) and 1% rows holding an e-mail address or a
card number; with --system-words N, every row also starts with the same N-word system prompt (the
audit must find the same duplicates: it leaves system turns out of the comparison). Printed for each size: rows, the full audit's seconds (every check: reading and
validating the rows, exact and near duplicates, personal data, suspicious rows), what it found, and
the seconds of the baseline a user would write first (hash each normalized row, keep the first),
which finds only the exact duplicates. The target: 100,000 rows in under a minute on 2 cores, and
10x the rows in about 10x the time.

--pii-worst-cases times the personal-data search alone on rows built against its detectors (80 kB
and 1 MB each: a long local part without a domain, a scheme-like run without "://", BEGIN lines
without END, 100,000 findings in one row, phone-shaped ids, ...): each must stay linear in the row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
import time
from pathlib import Path

WORDS = ("model data train answer question value river town year people water light music story paper glass "
         "market stone garden window morning letter table number simple public local early common").split()


def make_rows(count: int, seed: int = 0, system_words: int = 0) -> list[dict]:
    rng = random.Random(seed)
    system = [{"role": "system", "content": " ".join(random.Random(seed + 1).choices(WORDS, k=system_words))}]

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    rows = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.02 and rows:
            rows.append(json.loads(json.dumps(rng.choice(rows))))
            continue
        question, answer = f"{text(20, 60)} {i}", text(20, 60)
        if roll < 0.04 and rows:
            words = rows[-1]["messages"][-2]["content"].split()
            words[len(words) // 2] = "changed"
            question, answer = " ".join(words), rows[-1]["messages"][-1]["content"]
        elif roll < 0.045:
            answer += f" write to person{i}@example.com"
        elif roll < 0.05:
            answer += " card 4111 1111 1111 1111"
        turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        rows.append({"messages": (system if system_words else []) + turns})
    return rows


def exact_dedup(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    seen, removed = set(), 0
    with path.open() as lines:
        for line in lines:
            row = json.loads(line)
            key = hashlib.blake2b(" ".join(" ".join(m["content"] for m in row["messages"]).lower().split()).encode()).digest()
            removed += key in seen
            seen.add(key)
    return time.perf_counter() - started, removed


def pii_worst_cases() -> None:
    from tunesmith.data.audit.pii import find_pii

    units = {"e-mail local part, no domain": ("a.", "@"), "scheme-like run, no ://": ("a.", "://"),
             "BEGIN lines, no END": ("-----BEGIN RSA PRIVATE KEY-----\n", ""), "one finding each 7 chars": ("a@b.co ", ""),
             "phone-shaped ids": ("2023 1234 5678, ", ""), "spaced digits": ("1 ", ""), "slashed digits": ("1/", "")}
    print(f"{'find_pii on a row of':34}{'80 kB s':>10}{'1 MB s':>10}{'findings':>10}")
    for name, (unit, tail) in units.items():
        seconds = []
        for size in (80_000, 1_000_000):
            row = unit * ((size - len(tail)) // len(unit)) + tail
            started = time.perf_counter()
            found = find_pii(row)
            seconds.append(time.perf_counter() - started)
        print(f"{name:34}{seconds[0]:>10.2f}{seconds[1]:>10.2f}{len(found):>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--system-words", type=int, default=0, help="the same system prompt of N words in every row")
    parser.add_argument("--pii-worst-cases", action="store_true", help="time find_pii on rows built against it instead")
    args = parser.parse_args()
    if args.pii_worst_cases:
        return pii_worst_cases()
    from tunesmith.data.audit import run_audit

    print(f"{'rows':>8}{'audit s':>10}{'rows/s':>10}{'exact dup':>11}{'near dup':>10}{'pii rows':>10}"
          f"{'exact-dedup s':>15}{'its dups':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            path = Path(folder) / f"rows-{size}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in make_rows(size, system_words=args.system_words)))
            report = run_audit(path)
            exact = sum(len(g.rows) - 1 for g in report.duplicates if g.exact)
            near = sum(len(g.rows) - 1 for g in report.duplicates if not g.exact)
            pii = len({w for wheres in report.pii.values() for w in wheres})
            baseline, removed = exact_dedup(path)
            print(f"{size:>8}{report.seconds:>10.1f}{size / report.seconds:>10.0f}{exact:>11}{near:>10}{pii:>10}"
                  f"{baseline:>15.2f}{removed:>10}")


if __name__ == "__main__":
    main()
