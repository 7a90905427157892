"""The GPU check's report: one markdown file (a row per part, then each part's figures) and the raw
JSON, from what check.sh left in its work folder. Stdlib only: it reports whatever failed before it.
Exits 1 when a part failed or ran out of time, so that a dry run in CI fails on it.

    python benchmarks/gpu/report.py --work WORK --out OUT [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path

PARTS = ("setup", "environment", "gpu tests", "training", "serving")
FILES = {"environment": "env.json", "training": "train.json", "serving": "serve.json"}


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_tests(path: Path) -> list[dict]:
    """Each test's outcome from pytest's JUnit XML: passed, failed, error or skipped, with its message."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return []
    tests = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                text = (found.get("message") or found.text or "").strip()
                message = text.splitlines()[0][:240] if text else ""
                break
        tests.append({"test": f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    return tests


def part_status(record: dict | None) -> str:
    if record is None:
        return "not run"
    if record.get("skipped"):
        return f"skipped ({record['skipped']})"
    if record["rc"] in (124, 137):
        return f"timed out ({record['timeout']} s)"
    return "ok" if record["rc"] == 0 else f"failed (exit {record['rc']})"


def part_note(part: str, data: dict) -> str:
    """What each part found, in a few words."""
    if part == "environment" and data.get("environment"):
        env = data["environment"]
        device = env["device"]
        bad = [f"{m}: {e}" for m, e in env["imports"].items() if e != "ok"]
        return (f"{device.get('name', 'no CUDA device')}, torch {device['torch']}, CUDA {device.get('cuda')}; "
                f"transformers {env['versions'].get('transformers')}; unmet requirements: "
                f"{'; '.join(env['unmet']) or 'none'}" + (f"; imports failing: {'; '.join(bad)}" if bad else ""))
    if part == "gpu tests" and data.get("tests") is not None:
        counts: dict[str, int] = {}
        for test in data["tests"]:
            counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
        failed = [t["test"] for t in data["tests"] if t["outcome"] in ("failed", "error")]
        return ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) + (f": {', '.join(failed)}" if failed else "")
    if part == "training" and data.get("training"):
        rows = data["training"]["rows"]
        return f"{sum(r.get('status') == 'ok' for r in rows)} of {len(rows)} rows measured; bf16 peak " \
               f"{data['training']['bf16_peak_tflops']:.1f} TFLOP/s"
    if part == "serving" and data.get("serving"):
        return f"{len(data['serving']['rows'])} rows"
    return ""


def summary_table(parts: dict, data: dict) -> list[str]:
    lines = ["| part | status | seconds | note |", "|---|---|---|---|"]
    for part in PARTS:
        record = parts.get(part)
        seconds = f"{record['seconds']:.0f}" if record and "seconds" in record else "-"
        lines.append(f"| {part} | {part_status(record)} | {seconds} | {part_note(part, data)} |")
    return lines


def tests_table(tests: list[dict]) -> list[str]:
    lines = ["## GPU tests", "", "| test | outcome | seconds | message |", "|---|---|---|---|"]
    lines += [f"| {t['test']} | {t['outcome']} | {t['seconds']:.1f} | {t['message'].replace('|', '/')} |" for t in tests]
    return lines


def training_table(training: dict) -> list[str]:
    lines = [f"## Training ({training['device']}, torch {training['torch']}; LoRA r=16, {training['batch']} rows of "
             f"{training['row_tokens']} tokens a step, {training['steps']} steps, the first excluded; MFU: tokens/s x 4N "
             f"against the bf16 matmul peak of {training['bf16_peak_tflops']:.1f} TFLOP/s measured in this run)", "",
             "| size | parameters (N) | system | tokens/s | MFU | peak memory MB | last loss |", "|---|---|---|---|---|---|---|"]
    for row in training["rows"]:
        head = f"| {row['size']} | {row['parameters'] / 1e9:.2f}B | {row['system']} |"
        if "tokens_per_s" in row:
            lines.append(f"{head} {row['tokens_per_s']:.0f} | {row['mfu']:.1%} | {row['peak_memory_mb']:.0f} | {row['loss']:.4f} |")
        else:
            lines.append(f"{head} {row['status']} | {row['status']} | {row['status']} | - |")
    return lines


def serving_table(serving: dict) -> list[str]:
    lines = [f"## Serving ({serving['model']}, {serving['device']}, {serving['precision']}, greedy, up to "
             f"{serving['max_tokens']} new tokens)", "",
             "| system | concurrency | requests | tokens/s | p50 s | p95 s | vs one at a time | same answers |",
             "|---|---|---|---|---|---|---|---|"]
    for row in serving["rows"]:
        lines.append(f"| {row['system']} | {row['concurrency']} | {row['requests']} | {row['tokens_per_s']:.1f} | "
                     f"{row['p50_s']:.2f} | {row['p95_s']:.2f} | {row['vs_one_at_a_time']:.2f}x | "
                     f"{row['same_answers']}/{row['compared']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    parts = {}
    if (work / "parts.jsonl").exists():
        for line in (work / "parts.jsonl").read_text().splitlines():
            record = json.loads(line)
            parts[record["part"]] = record
    data = {part: read_json(work / name) for part, name in FILES.items()}
    data["tests"] = read_tests(work / "tests.xml") if (work / "tests.xml").exists() else None
    device = (data["environment"] or {}).get("device", {}).get("name", "no CUDA device")
    lines = [f"# GPU check{' (dry run)' if args.dry_run else ''}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {device}", ""]
    lines += summary_table(parts, data)
    if data["tests"]:
        lines += [""] + tests_table(data["tests"])
    if data["training"]:
        lines += [""] + training_table(data["training"])
    if data["serving"]:
        lines += [""] + serving_table(data["serving"])
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    (out / "gpu_check.json").write_text(json.dumps({"dry_run": args.dry_run, "parts": parts, **data}, indent=1))
    print("\n".join(lines))
    failed = [p for p in PARTS if part_status(parts.get(p)).startswith(("failed", "timed out", "not run"))]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
