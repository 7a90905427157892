"""Evaluation decoding: batched generation against calling `generate` one example at a time.

    python benchmarks/generation_throughput.py [--prompts 32] [--max-new-tokens 64]

Both decode the same held-out prompts greedily with the default model, in the precision tunesmith
picks for this machine. Printed: generated tokens per second for each, the ratio, and whether the
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
    args = parser.parse_args()

    import torch

    from tunesmith.config import build_config
    from tunesmith.eval.generate import generate, load_for_generation
    from tunesmith.eval.items import load_items

    items, _ = load_items("alpaca-demo", build_config({}).data, None, max_rows=args.prompts)
    prompts = [item.prompt for item in items]
    loaded = load_for_generation(MODEL)
    dtype = next(loaded.model.parameters()).dtype
    print(f"{MODEL} ({dtype}), {len(prompts)} Alpaca prompts, greedy, up to {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads\n")
    generate(loaded, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up

    started = time.perf_counter()
    single = [generate(loaded, [p], max_new_tokens=args.max_new_tokens, batch_size=1) for p in prompts]
    single_seconds = time.perf_counter() - started
    single_tokens = sum(g.new_tokens for g in single)
    batched = generate(loaded, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    rows = [("one at a time (HF generate per prompt)", single_tokens, single_seconds),
            (f"batched ({args.batch_size} prompts, left-padded)", batched.new_tokens, batched.seconds)]
    print(f"{'decoding':<42}{'new tokens':>11}{'seconds':>9}{'tokens/s':>10}")
    for name, tokens, seconds in rows:
        print(f"{name:<42}{tokens:>11}{seconds:>9.1f}{tokens / seconds:>10.1f}")
    ratio = (batched.new_tokens / batched.seconds) / (single_tokens / single_seconds)
    same = sum(a == b for a, b in zip([g.texts[0] for g in single], batched.texts))
    print(f"\nbatched / one at a time: {ratio:.2f}x tokens/s; identical answers: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
