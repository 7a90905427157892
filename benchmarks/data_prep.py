"""Data preparation scales linearly, and a second run reuses the cache: tunesmith against TRL.

    python benchmarks/data_prep.py [--sizes 10000 100000]

Rows are Alpaca demo instructions, numbered so that every row is distinct. tunesmith: read, check,
render with the chat template and tokenize (`data.pipeline.load_source`), in a fresh cache, then
again with the cache warm. TRL: the same JSONL loaded with `datasets` and prepared by SFTTrainer's
constructor (chat template, tokenization, completion mask), then again (datasets' own cache).
Each measurement runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"


def write_rows(path: Path, count: int) -> None:
    from tunesmith.data.catalog import dataset_path

    base = [json.loads(line) for line in dataset_path("alpaca-demo").read_text().splitlines()]
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(count):
            row = dict(base[number % len(base)])
            row["instruction"] = f"{row['instruction']} (request {number})"
            handle.write(json.dumps({"messages": [{"role": "user", "content": row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")},
                                                  {"role": "assistant", "content": row["output"]}]}) + "\n")


def worker_tunesmith(path: Path) -> float:
    from tunesmith.config import build_config
    from tunesmith.data.pipeline import load_source
    from tunesmith.data.template import analyze_template, ensure_chat_template
    from tunesmith.models.load import load_tokenizer, resolve_model

    config = build_config({"data": {"train": str(path), "max_length": 4096}})
    tokenizer = load_tokenizer(resolve_model(MODEL))
    ensure_chat_template(tokenizer)
    info = analyze_template(tokenizer, 2)
    started = time.perf_counter()
    source = load_source(path, config.data, tokenizer, info)
    seconds = time.perf_counter() - started
    assert len(source.examples) > 0.99 * source.rows, "rows were lost"
    return seconds


def worker_trl(path: Path, scratch: Path) -> float:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.catalog import materialize

    folder = materialize(MODEL)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    started = time.perf_counter()
    dataset = load_dataset("json", data_files=str(path), split="train", cache_dir=str(scratch / "hf-datasets"))
    dataset = dataset.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                          remove_columns=["messages"])
    SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
               args=SFTConfig(output_dir=str(scratch / "trl"), use_cpu=True, bf16=False, max_length=4096, report_to=[]))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        seconds = worker_tunesmith(Path(args.path)) if args.worker == "tunesmith" else worker_trl(Path(args.path), Path(args.scratch))
        print(f"RESULT {seconds}")
        return

    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "TUNESMITH_CACHE": str(Path(scratch) / "tunesmith-cache"), "HF_DATASETS_CACHE": str(Path(scratch) / "hf")}
        (Path(scratch) / "tunesmith-cache" / "models").mkdir(parents=True)
        from tunesmith.models.catalog import materialize

        os.symlink(materialize(MODEL), Path(scratch) / "tunesmith-cache" / "models" / MODEL)
        results: dict[tuple[str, int], list[float]] = {}
        for size in args.sizes:
            path = Path(scratch) / f"rows-{size}.jsonl"
            write_rows(path, size)
            for tool in ("tunesmith", "trl"):
                for run in ("first", "second"):
                    command = [sys.executable, __file__, "--worker", tool, "--path", str(path), "--scratch", scratch]
                    done = subprocess.run(command, capture_output=True, text=True, env=env)
                    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                    if line is None:
                        raise SystemExit(f"{tool} failed:\n{done.stderr[-3000:]}")
                    results.setdefault((tool, size), []).append(float(line.split()[1]))
                    print(f"{tool:10} {size:>8} rows, {run} run: {float(line.split()[1]):7.1f} s", flush=True)
        print(f"\n{'tool':<12}" + "".join(f"{f'{s:,} rows':>14}{'(cached)':>10}" for s in args.sizes) + f"{'scaling':>10}")
        for tool in ("tunesmith", "trl"):
            cells = "".join(f"{results[(tool, s)][0]:>13.1f}s{results[(tool, s)][1]:>9.1f}s" for s in args.sizes)
            scaling = results[(tool, args.sizes[-1])][0] / results[(tool, args.sizes[0])][0]
            print(f"{tool:<12}{cells}{scaling:>9.1f}x")
        print(f"(rows grow {args.sizes[-1] / args.sizes[0]:.0f}x; linear scaling means the same factor in time)")


if __name__ == "__main__":
    main()
