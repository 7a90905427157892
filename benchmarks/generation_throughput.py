"""Evaluation decoding: batched generation against calling `generate` one example at a time.

    python benchmarks/generation_throughput.py [--prompts 32] [--max-new-tokens 64] [--label-rows 64]

Both decode the same held-out prompts greedily with the default model, in fp32 (evaluation's
default) and in bf16. Printed: generated tokens per second for each, the ratio, and whether the
answers are identical. Then, on movie-review rows zero-shot and 5-shot (balanced; shots drawn per
row, or one fixed draw for every row), the two ways a label task is scored, timed side by side in
fp32: generated answers (evaluation's budget, stopping at the end of a line) and the likelihood of
each label (the prompt's pass shared across labels, and a shared block of shots run once), each
against generated 5-shot with per-row shots (evaluation's default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--label-rows", type=int, default=64, help="movie-review rows for the label-scoring part (0: skip)")
    args = parser.parse_args()

    import torch

    from tunesmith.config import build_config
    from tunesmith.eval.items import load_items
    from tunesmith.models.catalog import CATALOG
    from tunesmith.models.generate import generate, load_for_generation

    items, _ = load_items("alpaca-demo", build_config({}).data, None, max_rows=args.prompts)
    prompts = [item.prompt for item in items]
    precisions = ["fp32", "bf16"] if args.precision == "auto" else [args.precision]
    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import matmul_parameters, matmul_peak_gflops

    peaks = {"fp32": matmul_peak_gflops("float32"), "bf16": matmul_peak_gflops("bfloat16")}
    flops_per_token = 2 * matmul_parameters()  # a forward pass; the prompt's own tokens are not counted
    print(f"{CATALOG[MODEL].label}, {len(prompts)} Alpaca prompts, greedy, up to {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads; matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f}; "
          "of peak: new tokens/s x 2N FLOPs against the peak of the precision decoded in\n")
    print(f"{'decoding':<48}{'new tokens':>11}{'seconds':>9}{'tokens/s':>10}{'of peak':>9}")
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
            share = tokens / seconds * flops_per_token / (peaks[precision] * 1e9)
            print(f"{name:<48}{tokens:>11}{seconds:>9.1f}{tokens / seconds:>10.1f}{share:>9.1%}")
        ratio = (batched.new_tokens / batched.seconds) / (single_tokens / single_seconds)
        same = sum(a == b for a, b in zip([g.texts[0] for g in single], batched.texts))
        print(f"{precision}: batched / one at a time {ratio:.2f}x tokens/s; identical answers {same} of {len(prompts)}\n")
    if args.label_rows:
        label_scoring(args.label_rows, args.batch_size)


def label_scoring(rows: int, batch_size: int) -> None:
    """Generated answers vs label likelihood on the same movie-review prompts, fp32."""
    import random

    from tunesmith.config import DataConfig, EvalConfig, TaskConfig
    from tunesmith.eval.compare import answer_budget
    from tunesmith.eval.fewshot import few_shot_prompt, select_shots
    from tunesmith.eval.items import load_items
    from tunesmith.eval.metrics import label_metrics, map_answer_to_label
    from tunesmith.models.generate import generate, load_for_generation
    from tunesmith.models.score import score_labels

    items, task = load_items("movie-review-polarity:test", DataConfig(), None, TaskConfig())
    random.Random(0).shuffle(items)
    items = items[:rows]
    pool, _ = load_items("movie-review-polarity:train", DataConfig(), task, TaskConfig(), max_rows=400, skip_invalid=True)
    labels, gold = list(task.labels), [item.label for item in items]
    loaded = load_for_generation(MODEL, precision=EvalConfig().precision)
    def shots(selection: str) -> list:
        return [few_shot_prompt(item, select_shots(item, n, pool, 5, selection, 0)) for n, item in enumerate(items)]

    print(f"label scoring, {len(items)} movie-review rows, fp32, batch {batch_size}")
    print(f"{'prompts':<18}{'scoring':<32}{'accuracy':>9}{'unparsed':>9}{'seconds':>9}{'rows/s':>8}"
          f"{'vs gen. 5-shot':>16}")
    reference = None
    for name, prompts in (("zero-shot", [item.prompt for item in items]), ("5-shot per row", shots("random")),
                          ("5-shot fixed", shots("fixed"))):
        generated = generate(loaded, prompts, max_new_tokens=answer_budget(loaded.tokenizer, labels, 256),
                             batch_size=batch_size, stop_at_newline=True)
        by_answer = label_metrics(gold, [map_answer_to_label(a, labels)[0] for a in generated.texts], labels)
        if name == "5-shot per row":
            reference = generated.seconds
        unshared = score_labels(loaded, prompts, labels, batch_size=batch_size, share_prefix=False)
        scored = score_labels(loaded, prompts, labels, batch_size=batch_size)
        assert scored.predicted() == unshared.predicted(), "a shared prefix changed a prediction"
        by_likelihood = label_metrics(gold, scored.predicted(), labels)
        for how, metrics, seconds in (("generated answer", by_answer, generated.seconds),
                                      ("likelihood, no prefix sharing", by_likelihood, unshared.seconds),
                                      ("likelihood of each label", by_likelihood, scored.seconds)):
            versus = f"{reference / seconds:>15.2f}x" if reference else ""
            print(f"{name:<18}{how:<32}{metrics.accuracy:>9.3f}{metrics.unparsed:>9}{seconds:>9.1f}"
                  f"{len(items) / seconds:>8.1f}{versus}")


if __name__ == "__main__":
    main()
