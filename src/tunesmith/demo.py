"""The main job: fine-tune the default model on the Alpaca demo data and show what changed.

Held-out instructions are answered by the base model, the model is fine-tuned with LoRA for a few
minutes, and the same instructions are answered again, next to the reference answers and the
validation loss before and after.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

from tunesmith.config import build_config
from tunesmith.data.catalog import dataset_path
from tunesmith.train.metrics import perplexity

HELD_OUT = 48  # the last rows of the file: never trained on, used for validation and the answers shown
SHOWN = 2


def run_demo(*, steps: int = 24, output_dir: str = "runs") -> Path:
    from tunesmith.eval.generate import generate_replies, load_for_generation
    from tunesmith.train import sft

    started = time.time()
    rows = [json.loads(line) for line in dataset_path("alpaca-demo").read_text().splitlines()]
    data_dir = Path(output_dir) / "demo-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    train_file, validation_file = data_dir / "alpaca-train.jsonl", data_dir / "alpaca-heldout.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows[:-HELD_OUT]))
    validation_file.write_text("".join(json.dumps(r) + "\n" for r in rows[-HELD_OUT:]))
    shown = rows[-HELD_OUT:][:SHOWN]
    prompts = [f"{r['instruction']}\n\n{r['input']}" if r["input"] else r["instruction"] for r in shown]

    config = build_config({
        "data": {"train": str(train_file), "validation": str(validation_file), "max_length": 512, "skip_invalid": True},
        "train": {"max_steps": steps, "batch_size": 4, "gradient_accumulation": 2, "eval_every": 8, "save_every": 8},
        "output": {"dir": output_dir, "name": "demo-alpaca-smollm2-lora", "overwrite": True},
    })
    print(f"== tunesmith demo: LoRA fine-tuning of {config.model.name} on the Alpaca demo data ({steps} steps)\n", flush=True)
    base = load_for_generation(config.model.name)
    before = generate_replies(base, prompts, max_new_tokens=96)
    del base
    result = sft.run(config)
    after = generate_replies(load_for_generation(str(result.run_dir)), prompts, max_new_tokens=96)

    print("\n== what changed")
    if result.baseline_val_loss is not None and result.val_loss is not None:
        print(f"validation loss on {HELD_OUT} held-out rows: {result.baseline_val_loss:.3f} before -> {result.val_loss:.3f} after "
              f"(perplexity {perplexity(result.baseline_val_loss):.2f} -> {perplexity(result.val_loss):.2f})")
    for row, prompt, old, new in zip(shown, prompts, before, after):
        print(f"\n>>> {prompt}")
        print(_block("reference", row["output"]))
        print(_block("before", old))
        print(_block("after", new))
    print(f"\nrun folder: {result.run_dir} (adapter/, model/, metrics.jsonl, loss.png, manifest.json)")
    print(f"training: {result.steps} steps at {result.tokens_per_s:.0f} tokens/s, peak memory {result.peak_memory_mb:.0f} MB; "
          f"demo wall time {time.time() - started:.0f} s")
    print(f"try it:  tunesmith chat {result.run_dir}")
    return result.run_dir


def _block(label: str, text: str, width: int = 100) -> str:
    body = textwrap.shorten(" ".join(text.split()), width=400, placeholder=" ...")
    wrapped = textwrap.fill(body, width=width, initial_indent=f"  {label:>9}: ", subsequent_indent=" " * 13)
    return wrapped
