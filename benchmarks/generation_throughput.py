"""Evaluation decoding: batched generation against calling `generate` one example at a time.

    python benchmarks/generation_throughput.py [--prompts 32] [--max-new-tokens 64]

Both decode the same held-out prompts greedily with the default model, in fp32 (evaluation's
default) and in bf16. Printed: generated tokens per second for each, the ratio, and whether the
answers are identical.
"""

from __future__ import annotations

import argparse
import time

MODEL = "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()

    import torch

    from tunesmith.config import build_config
    from tunesmith.eval.items import load_items
    from tunesmith.models.catalog import CATALOG
    from tunesmith.models.generate import generate, load_for_generation

    items, _ = load_items("alpaca-demo", build_config({}).data, None, max_rows=args.prompts)
    prompts = [item.prompt for item in items]
    precisions = ["fp32", "bf16"] if args.precision == "auto" else [args.precision]
    print(f"{CATALOG[MODEL].label}, {len(prompts)} Alpaca prompts, greedy, up to {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads\n")
    print(f"{'decoding':<48}{'new tokens':>11}{'seconds':>9}{'tokens/s':>10}")
    for precision in precisions:
        loaded = load_for_generation(MODEL, precision=precision)
        generate(loaded, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up
        started = time.perf_counter()
        single = [generate(loaded, [p], max_new_tokens=args.max_new_tokens, batch_size=1) for p in prompts]
        single_seconds = time.perf_counter() - started
        single_tokens = sum(g.new_tokens for g in single)
        batched = generate(loaded, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        for name, tokens, seconds in ((f"{precision}: one at a time (generate per prompt)", single_tokens, single_seconds),
                                      (f"{precision}: batched ({args.batch_size} prompts, left-padded)", batched.new_tokens, batched.seconds)):
            print(f"{name:<48}{tokens:>11}{seconds:>9.1f}{tokens / seconds:>10.1f}")
        ratio = (batched.new_tokens / batched.seconds) / (single_tokens / single_seconds)
        same = sum(a == b for a, b in zip([g.texts[0] for g in single], batched.texts))
        print(f"{precision}: batched / one at a time {ratio:.2f}x tokens/s; identical answers {same} of {len(prompts)}\n")


if __name__ == "__main__":
    main()
