"""The main job: fine-tune the default model to tell positive from negative movie reviews, and
prove it: the fine-tuned model against the base model zero-shot, 5-shot and with retrieval (RAG),
on the same 400 held-out reviews that training never saw, every score and gain with its 95% interval.

Made to reach its table in under 10 minutes on 2 CPU cores without native bf16: every system is
scored by the likelihood of each label (rank classification, one pass per prompt), the fine-tuned
model also generates every answer and each baseline a seeded sample of 50 (the table shows that
the generated answers name the most likely label), and the 5 shots are one fixed, balanced draw
for every row, so their block runs once.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.config import build_config
from tunesmith.progress import clear_stages, finished_stages
from tunesmith.training.metrics import perplexity

STEPS = 100


def demo_config(steps: int, output_dir: str):
    return build_config({
        "data": {"train": "movie-review-polarity:train", "validation_split": 0.03, "max_length": 256},
        "train": {"max_steps": steps, "batch_size": 8, "gradient_accumulation": 1, "learning_rate": 5e-4,
                  "eval_every": 50, "save_every": 50},
        "eval": {"test": "movie-review-polarity:test", "few_shot": 5, "few_shot_selection": "fixed",
                 "scoring": "likelihood", "generate_sample": 50, "general_rows": 16,
                 "rag": {"corpus": "train", "k": 3}, "rag_systems": "base"},
        "output": {"dir": output_dir, "name": "demo-movie-reviews-smollm2-lora", "overwrite": True},
    })


def run_demo(*, steps: int = STEPS, output_dir: str = "runs") -> Path:
    from tunesmith.pipeline.train import train

    started = time.time()
    clear_stages()
    config = demo_config(steps, output_dir)
    print(f"== tunesmith demo: teach {config.model.name} the sentiment of movie reviews (LoRA, {steps} steps), then\n"
          "   compare it with the base model zero-shot, 5-shot (balanced) and with the 3 nearest training reviews\n"
          "   in its prompt (RAG), on 400 held-out reviews, with 95% intervals\n", flush=True)
    result = train(config, show_results=False)
    comparison = result.comparison
    print("\n== time per stage")
    stages = finished_stages()
    for name, seconds in stages:
        print(f"  {name:34} {seconds:6.0f} s")
    total = time.time() - started
    print(f"  {'the rest (audit, loading, saving)':34} {total - sum(s for _, s in stages):6.0f} s")
    print(f"  {'all':34} {total:6.0f} s")
    print(f"\n== what changed (400 held-out reviews)\n{comparison.table()}\n\n{comparison.verdict()}")
    extras = []
    if result.baseline_val_loss is not None and result.val_loss is not None:
        extras.append(f"validation perplexity {perplexity(result.baseline_val_loss):.2f} -> {perplexity(result.val_loss):.2f}")
    if comparison.forgetting:
        extras.append(f"general-text perplexity x{comparison.forgetting['ratio']:.3f} (what it forgot)")
    if extras:
        print("; ".join(extras) + ".")
    print(f"\nreport: {result.run_dir / 'report.html'}  |  model: {result.run_dir / 'model'}")
    print(f"try it:  tunesmith generate {result.run_dir} --prompt \"$(python3 -c 'print(\"Classify the following text. "
          "Answer with one word: negative or positive.\\n\\nText: a warm , funny , engaging film .\")')\"")
    return result.run_dir
