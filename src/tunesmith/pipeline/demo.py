"""The main job: fine-tune the default model to tell positive from negative movie reviews, and
prove it: the fine-tuned model against the base model zero-shot, 5-shot and with retrieval (RAG),
on the same held-out reviews that training never saw (200 of the 400, a seeded sample), every score
and gain with its 95% interval.

Made to reach its table in minutes on 2 CPU cores without native bf16: 30 LoRA steps (the fine-tuned
score held from 100 steps), every system scored by the likelihood of each label (rank
classification, one pass per prompt), the fine-tuned model also generating every answer and each
baseline a seeded sample of 20 (the table shows that the generated answers name the most likely
label), the 5 shots one fixed, balanced draw for every row (their block runs once), retrieval of 2
reviews for the base model only, a 9-token system prompt instead of SmolLM2's default 17, and no
merged copy of the weights written (the adapter serves and generates the same).
"""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.config import build_config
from tunesmith.progress import clear_stages, finished_stages
from tunesmith.training.metrics import perplexity

STEPS = 30
ROWS = 200
SYSTEM_PROMPT = "You classify the sentiment of movie reviews."  # 9 tokens instead of SmolLM2's default 17


def demo_config(steps: int, output_dir: str, rows: int = ROWS):
    return build_config({
        "data": {"train": "movie-review-polarity:train", "validation_split": 0.015, "max_length": 256,
                 "system_prompt": SYSTEM_PROMPT},
        "train": {"max_steps": steps, "batch_size": 8, "gradient_accumulation": 1, "learning_rate": 5e-4,
                  "eval_every": steps, "save_every": steps},
        "eval": {"test": "movie-review-polarity:test", "max_rows": rows, "few_shot": 5, "few_shot_selection": "fixed",
                 "scoring": "likelihood", "generate_sample": 20, "general_rows": 8,
                 "rag": {"corpus": "train", "k": 2}, "rag_systems": "base"},
        "output": {"dir": output_dir, "name": "demo-movie-reviews-smollm2-lora", "overwrite": True, "save_merged": False},
    })


def run_demo(*, steps: int = STEPS, output_dir: str = "runs", rows: int = ROWS) -> Path:
    from tunesmith.pipeline.train import train

    started = time.time()
    clear_stages()
    config = demo_config(steps, output_dir, rows)
    print(f"== tunesmith demo: teach {config.model.name} the sentiment of movie reviews (LoRA, {steps} steps), then\n"
          "   compare it with the base model zero-shot, 5-shot (balanced) and with the 2 nearest training reviews\n"
          f"   in its prompt (RAG), on {rows} held-out reviews, with 95% intervals\n", flush=True)
    result = train(config, show_results=False)
    comparison = result.comparison
    print("\n== time per stage")
    stages = finished_stages()
    for name, seconds in stages:
        print(f"  {name:34} {seconds:6.0f} s")
    total = time.time() - started
    print(f"  {'the rest (audit, loading, saving)':34} {total - sum(s for _, s in stages):6.0f} s")
    print(f"  {'all':34} {total:6.0f} s")
    print(f"\n== what changed ({len(comparison.items)} held-out reviews)\n{comparison.table()}\n\n{comparison.verdict()}")
    extras = []
    if result.baseline_val_loss is not None and result.val_loss is not None:
        extras.append(f"validation perplexity {perplexity(result.baseline_val_loss):.2f} -> {perplexity(result.val_loss):.2f}")
    if comparison.forgetting:
        extras.append(f"general-text perplexity x{comparison.forgetting['ratio']:.3f} (what it forgot)")
    if extras:
        print("; ".join(extras) + ".")
    print(f"\nreport: {result.run_dir / 'report.html'}  |  run folder (adapter, tokenizer, metrics): {result.run_dir}")
    print(f"try it:  tunesmith generate {result.run_dir} --prompt \"$(python3 -c 'print(\"Classify the following text. "
          "Answer with one word: negative or positive.\\n\\nText: a warm , funny , engaging film .\")')\"")
    return result.run_dir
