"""Peak memory of DPO with LoRA against SFT with LoRA, on the same model and sequence length.

    python benchmarks/preference_memory.py [--steps 4] [--length 512]

Both train SmolLM2-135M-Instruct with LoRA r=16 on all linear layers on rows of `--length` tokens,
4 sequences per micro-batch: SFT sees 4 examples, DPO 2 pairs (each pair is two sequences). DPO
holds no second model: its reference is the same weights with the adapter switched off. Each run
is its own process; printed: peak RSS of each and the ratio (target: at most 1.3x).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = "the model learns to follow instructions and answer questions about many different topics".split()


def rows(count: int, words: int) -> tuple[list[dict], list[dict]]:
    text = lambda n, shift: " ".join(WORDS[(n + i + shift) % len(WORDS)] for i in range(words))  # noqa: E731
    sft = [{"messages": [{"role": "user", "content": text(n, 0)}, {"role": "assistant", "content": text(n, 3)}]} for n in range(count)]
    dpo = [{"prompt": text(n, 0), "chosen": text(n, 3), "rejected": text(n, 5)} for n in range(count)]
    return sft, dpo


def worker(method: str, data: Path, out: Path, steps: int, length: int) -> dict:
    import tunesmith

    config = tunesmith.build_config({
        "data": {"train": str(data), "max_length": length + 64, "validation_split": 0.0},
        "lora": {"rank": 16, "alpha": 32},
        "train": {"method": method, "max_steps": steps, "batch_size": 4 if method == "sft" else 2, "gradient_accumulation": 1,
                  "eval_every": 0, "eval_before": False, "save_every": 0},
        "output": {"dir": str(out), "name": method, "save_merged": False},
    })
    result = tunesmith.train(config, show_progress=False)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tokens_per_s": result.tokens_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--length", type=int, default=512, help="tokens per sequence (about)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, Path(args.data), Path(args.out), args.steps, args.length)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        sft, dpo = rows(64, words=args.length // 2 - 20)  # about `length` tokens per conversation
        results = {}
        for method, content in (("sft", sft), ("dpo", dpo)):
            path = Path(scratch) / f"{method}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in content))
            done = subprocess.run([sys.executable, __file__, "--worker", method, "--data", str(path), "--out", scratch,
                                   "--steps", str(args.steps), "--length", str(args.length)], capture_output=True, text=True)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
            results[method] = json.loads(line[7:])
        print(f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized), LoRA r=16, ~{args.length}-token sequences, 4 sequences per micro-batch, {args.steps} steps")
        for method, figures in results.items():
            print(f"  {method:<4} peak RSS {figures['peak_rss_mb']:7.0f} MB   {figures['tokens_per_s']:6.0f} tokens/s")
        print(f"DPO / SFT peak memory: {results['dpo']['peak_rss_mb'] / results['sft']['peak_rss_mb']:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
