"""Does the exported file answer the held-out rows as the run does? One run, side by side.

    python benchmarks/export_fidelity.py RUN --data movie-review-polarity:test [--quant f16 --quant q8_0]

Exports RUN to each GGUF type (tunesmith export, with its own check), then answers every held-out
row greedily with the run's own model (fp32) and with each file: through llama.cpp
(llama-cpp-python) when it is installed, and through transformers' GGUF loader (which dequantizes
the file's tensors). Prints accuracy with its 95% interval, the rows whose answer differs from the
run's, and the file size.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from tunesmith.config import EvalConfig
from tunesmith.data.tasks import LabelTask
from tunesmith.eval.compare import evaluate_system
from tunesmith.eval.intervals import mean_gain_interval
from tunesmith.eval.items import load_items
from tunesmith.eval.metrics import map_answer_to_label
from tunesmith.export import export_run
from tunesmith.models.generate import load_for_generation
from tunesmith.pipeline.folder import run_config


def llama_cpp_answers(path: Path, loaded, prompts: list, max_new_tokens: int) -> list[str]:
    """Greedy answers through llama.cpp, prompts encoded exactly as tunesmith encodes them."""
    import llama_cpp

    from tunesmith.data.tokenize import encode_prompt
    from tunesmith.models.generate import _as_messages

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, verbose=False)
    stops = set(loaded.info.stop_token_ids)
    answers = []
    for prompt in prompts:
        ids = encode_prompt(loaded.tokenizer, loaded.info, _as_messages(prompt, None))
        out = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if token in stops or len(out) >= max_new_tokens:
                break
            out.append(token)
            if "\n" in loaded.tokenizer.decode(out).strip("\n") and loaded.tokenizer.decode(out).strip():
                break  # the label tasks' answers end at the first line, as tunesmith's generation does
        text = loaded.tokenizer.decode(out, skip_special_tokens=True)
        answers.append(text.strip().split("\n")[0].strip())
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", required=True)
    parser.add_argument("--quant", action="append", default=None)
    parser.add_argument("--max-rows", type=int, default=None)
    args = parser.parse_args()
    run = Path(args.run)
    quants = args.quant or ["f16", "q8_0"]
    config = run_config(run)
    task = LabelTask.load(run / "task.json")
    items, task = load_items(args.data, config.data, task, config.task, max_rows=args.max_rows)
    labels = list(task.labels)
    settings = EvalConfig(scoring="generate", precision="fp32")
    truth = [item.label for item in items]
    rows = []

    def record(name: str, answers: list[str], predicted: list, seconds: float, size: int | None) -> None:
        correct = [float(p == t) for p, t in zip(predicted, truth)]
        interval = mean_gain_interval([0.0] * len(correct), correct)  # the mean's bootstrap interval
        rows.append((name, interval.estimate, interval.low, interval.high, answers, predicted, seconds, size))

    started = time.perf_counter()
    loaded = load_for_generation(str(run), precision="fp32")
    own = evaluate_system(loaded, "run's model (transformers, fp32)", [i.prompt for i in items], items, labels, settings)
    record(own.name, own.answers, own.predicted, time.perf_counter() - started, None)
    files = {}
    for quant in quants:
        files[quant] = export_run(run, "gguf", quant=quant).files[0]
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False
        print("llama-cpp-python is not installed: the files are read by transformers' GGUF loader only", flush=True)
    for path in files.values():
        if have_llama:
            started = time.perf_counter()
            answers = llama_cpp_answers(path, loaded, [i.prompt for i in items], 40)
            predicted = [map_answer_to_label(a, labels)[0] for a in answers]
            record(f"{path.name} (llama.cpp)", answers, predicted, time.perf_counter() - started, path.stat().st_size)
        started = time.perf_counter()
        from_file = load_for_generation(str(path), precision="fp32")
        result = evaluate_system(from_file, path.name, [i.prompt for i in items], items, labels, settings)
        record(f"{path.name} (transformers GGUF loader)", result.answers, result.predicted,
               time.perf_counter() - started, path.stat().st_size)
        del from_file
        gc.collect()

    print(f"\n{run.name}: {len(items)} rows of {args.data}, greedy\n")
    print(f"{'system':<52} {'accuracy':>8}  {'95% interval':<16} {'answers != run':>14} {'labels != run':>13} "
          f"{'size MB':>8} {'seconds':>8}")
    reference = rows[0]
    for name, accuracy, low, high, answers, predicted, seconds, size in rows:
        answer_diff = sum(a != b for a, b in zip(answers, reference[4]))
        label_diff = sum(a != b for a, b in zip(predicted, reference[5]))
        print(f"{name:<52} {accuracy:>8.3f}  [{low:.3f}, {high:.3f}]   {answer_diff:>14} {label_diff:>13} "
              f"{(size or 0) / 2**20:>8.1f} {seconds:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
