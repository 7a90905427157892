"""The data audit's speed: 10,000 and 100,000 chat rows, beside a plain exact de-duplication.

    python benchmarks/data_audit.py [--sizes 10000 100000]

Rows are generated (seeded): a user question and an assistant answer of 20-60 words each, with 2%
exact duplicates, 2% near duplicates (one word changed) and 1% rows holding an e-mail address or a
card number. Printed for each size: rows, the full audit's seconds (every check: reading and
validating the rows, exact and near duplicates, personal data, suspicious rows), what it found, and
the seconds of the baseline a user would write first (hash each normalized row, keep the first),
which finds only the exact duplicates. The target: 100,000 rows in under a minute on 2 cores, and
10x the rows in about 10x the time.
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


def make_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

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
            words = rows[-1]["messages"][0]["content"].split()
            words[len(words) // 2] = "changed"
            question, answer = " ".join(words), rows[-1]["messages"][1]["content"]
        elif roll < 0.045:
            answer += f" write to person{i}@example.com"
        elif roll < 0.05:
            answer += " card 4111 1111 1111 1111"
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    from tunesmith.data.audit import run_audit

    print(f"{'rows':>8}{'audit s':>10}{'rows/s':>10}{'exact dup':>11}{'near dup':>10}{'pii rows':>10}"
          f"{'exact-dedup s':>15}{'its dups':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            path = Path(folder) / f"rows-{size}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in make_rows(size)))
            report = run_audit(path)
            exact = sum(len(g.rows) - 1 for g in report.duplicates if g.exact)
            near = sum(len(g.rows) - 1 for g in report.duplicates if not g.exact)
            pii = len({w for wheres in report.pii.values() for w in wheres})
            baseline, removed = exact_dedup(path)
            print(f"{size:>8}{report.seconds:>10.1f}{size / report.seconds:>10.0f}{exact:>11}{near:>10}{pii:>10}"
                  f"{baseline:>15.2f}{removed:>10}")


if __name__ == "__main__":
    main()
