"""The main job: fine-tune the default model to tell positive from negative movie reviews, and
prove it: the fine-tuned model against the base model zero-shot and 5-shot, on the same 400
held-out reviews that training never saw.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.config import build_config
from tunesmith.training.metrics import perplexity


def demo_config(steps: int, output_dir: str):
    return build_config({
        "data": {"train": "movie-review-polarity:train", "validation_split": 0.03, "max_length": 256},
        "train": {"max_steps": steps, "batch_size": 8, "gradient_accumulation": 1, "learning_rate": 5e-4,
                  "eval_every": 50, "save_every": 50},
        "eval": {"test": "movie-review-polarity:test", "few_shot": 5, "general_rows": 16,
                 "rag": {"corpus": "train", "k": 3}},
        "output": {"dir": output_dir, "name": "demo-movie-reviews-smollm2-lora", "overwrite": True},
    })


def run_demo(*, steps: int = 100, output_dir: str = "runs") -> Path:
    from tunesmith.pipeline.train import train

    started = time.time()
    config = demo_config(steps, output_dir)
    print(f"== tunesmith demo: teach {config.model.name} the sentiment of movie reviews (LoRA, {steps} steps),\n"
          "   then compare it with the base model zero-shot, 5-shot (balanced) and with the 3 nearest training reviews\n"
          "   retrieved into its prompt (RAG), on 400 held-out reviews, each system\n"
          "   scored by its generated answer and by the likelihood of each label, with 95% intervals on every gain\n", flush=True)
    result = train(config)
    comparison = result.comparison
    tuned = comparison.system("fine-tuned")
    print("== what changed")
    for system in comparison.systems:
        likely = (f"   most likely label: accuracy {system.metrics['likelihood_accuracy']:.3f}"
                  if "likelihood_accuracy" in system.metrics else "")
        print(f"  {system.name:18} accuracy {system.metrics['accuracy']:.3f}   macro F1 {system.metrics['macro_f1']:.3f}"
              f"   unparsed answers {system.metrics['unparsed']}{likely}")
    for line in comparison.interval_lines():
        print(f"  95% interval: {line}")
    if result.baseline_val_loss is not None and result.val_loss is not None:
        print(f"  validation loss {result.baseline_val_loss:.3f} -> {result.val_loss:.3f} "
              f"(perplexity {perplexity(result.baseline_val_loss):.2f} -> {perplexity(result.val_loss):.2f})")
    if comparison.forgetting:
        print(f"  general-text perplexity {comparison.forgetting['ppl_before']:.2f} -> {comparison.forgetting['ppl_after']:.2f} "
              f"(x{comparison.forgetting['ratio']:.3f})")
    print(f"\nreport: {result.run_dir / 'report.html'}  |  model: {result.run_dir / 'model'}")
    print(f"fine-tuned accuracy {tuned.metrics['accuracy']:.3f}; demo wall time {time.time() - started:.0f} s")
    print(f"try it:  tunesmith generate {result.run_dir} --prompt \"$(python3 -c 'print(\"Classify the following text. "
          "Answer with one word: negative or positive.\\n\\nText: a warm , funny , engaging film .\")')\"")
    return result.run_dir
