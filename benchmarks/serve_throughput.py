"""Serving throughput: tunesmith serve at concurrency 1, 4 and 16, against the same requests sent one at
a time through transformers' `generate`, and against `transformers serve` on the same model.

    python benchmarks/serve_throughput.py [--requests 32] [--max-tokens 64] [--skip-transformers-serve]

Every system answers the same Alpaca prompts as chats, greedily, up to --max-tokens new tokens, with
the default model (SmolLM2-135M-Instruct) in fp32 on the CPU. Both servers run on 127.0.0.1 and are
driven by the official `openai` client from a pool of threads (one per concurrent request). Printed:
generated tokens per second over the whole run, p50/p95 latency of a request, tokens/s against the
one-at-a-time baseline, and how many answers equal the baseline's (greedy: they should all).

    python benchmarks/serve_throughput.py --device cuda --precision bf16 --model random:0.5b --prompts synthetic \
        --concurrency 1 16 64 --requests 128 --requests-per-level 16 64 128 --max-batch 64 --baseline-requests 8

The options after the first line are for machines without a model hub or data set to fetch (the GPU
check, benchmarks/gpu/check.sh): `random:SIZE` is a Qwen2.5-shaped model with random weights
(benchmarks/gpu/random_models.py; greedy replies run to --max-tokens), synthetic prompts are plain
words, --requests-per-level sends fewer requests at the low levels, and --baseline-requests times
the one-at-a-time baseline (and compares answers) on the first few prompts only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))

from random_models import RANDOM_PREFIX, SHAPES, synthetic_prompts, tokenizer_folder  # noqa: E402
from random_models import model_folder as random_model_folder  # noqa: E402

MODEL = "smollm2-135m-instruct"


def one_at_a_time(model_dir: str, prompts: list[str], max_tokens: int, device: str = "cpu",
                  precision: str = "fp32") -> tuple[list[str], list[float], int, float]:
    """transformers' generate, one request after another (the user's own loop)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    answers, latencies, tokens = [], [], 0
    started = time.perf_counter()
    for prompt in prompts:
        begun = time.perf_counter()
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(**ids.to(device), max_new_tokens=max_tokens, do_sample=False)
        new = output[0, ids["input_ids"].shape[1]:]
        tokens += len(new)
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
        latencies.append(time.perf_counter() - begun)
    return answers, latencies, tokens, time.perf_counter() - started


def drive(base_url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int) -> tuple[list[str], list[float], int, float]:
    """Send every prompt as a chat with `concurrency` in flight; answers, latencies, tokens, seconds."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)

    def send(prompt: str) -> tuple[str, float, int]:
        begun = time.perf_counter()
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                               temperature=0, max_tokens=max_tokens)
        return reply.choices[0].message.content.strip(), time.perf_counter() - begun, reply.usage.completion_tokens

    send(prompts[0])  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(send, prompts))
    seconds = time.perf_counter() - started
    return [r[0] for r in results], [r[1] for r in results], sum(r[2] for r in results), seconds


def transformers_serve(model_dir: str, port: int):
    """`transformers serve` with the model preloaded, on 127.0.0.1:port (a subprocess)."""
    command = [str(Path(sys.executable).parent / "transformers"), "serve", model_dir, "--host", "127.0.0.1",
               "--port", str(port), "--dtype", "float32", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited: {process.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError("transformers serve did not start in 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--skip-transformers-serve", action="store_true")
    parser.add_argument("--model", default=MODEL, help=f"a model name or folder, or random:SIZE ({', '.join(SHAPES)}); default {MODEL}")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--prompts", default="alpaca", choices=["alpaca", "synthetic"])
    parser.add_argument("--requests-per-level", type=int, nargs="+", help="requests sent at each concurrency (default: --requests at every level)")
    parser.add_argument("--baseline-requests", type=int, help="prompts the one-at-a-time baseline answers (default: all)")
    parser.add_argument("--max-batch", type=int, default=16, help="the engine's largest batch (tunesmith serve --max-batch)")
    parser.add_argument("--tokenizer", help="with random:SIZE, a folder with SmolLM2's tokenizer (default: the catalog's SmolLM2)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "tunesmith-bench-models"),
                        help="with random:SIZE, where the random-weight model is built once")
    parser.add_argument("--json", help="also write the results as JSON here, after each level")
    args = parser.parse_args()

    import torch

    prompts = read_prompts(args)
    model_dir = model_folder(args)
    where = f"{torch.get_num_threads()} threads" if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"{args.model}, {len(prompts)} {'Alpaca' if args.prompts == 'alpaca' else 'synthetic'} chats, greedy, up to "
          f"{args.max_tokens} new tokens, {args.precision}, {where}\n")
    rows = []
    baseline = one_at_a_time(model_dir, prompts[:args.baseline_requests], args.max_tokens, args.device, args.precision)
    rows.append(("transformers generate, one at a time", 1, *baseline))
    rows += serve_levels(args, model_dir, prompts, rows)
    if not args.skip_transformers_serve:
        rows += transformers_serve_levels(args, model_dir, prompts)
    print_rows(rows, baseline)
    write_json(args, rows, baseline)


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompts == "synthetic":
        return synthetic_prompts(args.requests)
    from tunesmith.config import build_config
    from tunesmith.eval.items import load_items

    items, _ = load_items("alpaca-demo", build_config({}).data, None, max_rows=args.requests)
    return [item.prompt if isinstance(item.prompt, str) else item.prompt[-1].content for item in items]


def model_folder(args: argparse.Namespace) -> str:
    if args.model.startswith(RANDOM_PREFIX):
        size = args.model[len(RANDOM_PREFIX):]
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        return str(random_model_folder(size, cache, tokenizer_folder(args.tokenizer), args.device))
    from tunesmith.models.load import resolve_model

    return resolve_model(args.model).location


def serve_levels(args: argparse.Namespace, model_dir: str, prompts: list[str], rows: list) -> list:
    """tunesmith serve at each concurrency level, on a real socket; JSON written after each level."""
    from tunesmith.config import ServeConfig
    from tunesmith.serve.app import create_app, running
    from tunesmith.serve.models import ServedModels

    models = ServedModels(precision=args.precision, device=args.device)
    name = models.add_base(model_dir, args.model.replace(RANDOM_PREFIX, "random-")).name
    app = create_app(models, ServeConfig(max_queue=256, max_batch=args.max_batch, max_tokens=args.max_tokens))
    levels = []
    with running(app) as base_url:
        for number, concurrency in enumerate(args.concurrency):
            sent = prompts[:args.requests_per_level[number]] if args.requests_per_level else prompts
            levels.append(("tunesmith serve", concurrency, *drive(base_url, name, sent, args.max_tokens, concurrency)))
            write_json(args, rows + levels, rows[0][2:])
        print(f"tunesmith engine: {app.state.engine.stats}\n")
    return levels


def transformers_serve_levels(args: argparse.Namespace, model_dir: str, prompts: list[str]) -> list:
    from tunesmith.serve.app import free_port

    port = free_port()
    try:
        process = transformers_serve(model_dir, port)
    except RuntimeError as exc:
        print(f"transformers serve: not measured ({exc})\n")
        return []
    try:
        return [("transformers serve", concurrency,
                 *drive(f"http://127.0.0.1:{port}/v1", model_dir, prompts, args.max_tokens, concurrency))
                for concurrency in args.concurrency]
    finally:
        process.terminate()
        process.wait(timeout=30)


def level_figures(row: tuple, baseline: tuple) -> dict:
    """One row's figures; answers compared with the baseline's over the prompts both answered."""
    system, concurrency, answers, latencies, tokens, seconds = row
    ordered = sorted(latencies)
    compared = min(len(answers), len(baseline[0]))
    return {"system": system, "concurrency": concurrency, "requests": len(answers), "tokens": tokens,
            "seconds": seconds, "tokens_per_s": tokens / seconds, "p50_s": statistics.median(latencies),
            "p95_s": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "vs_one_at_a_time": tokens / seconds / (baseline[2] / baseline[3]),
            "same_answers": sum(a == b for a, b in zip(answers, baseline[0])), "compared": compared}


def print_rows(rows: list, baseline: tuple) -> None:
    print(f"{'system':<38}{'conc.':>6}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'p50 s':>8}{'p95 s':>8}"
          f"{'vs 1-at-a-time':>16}{'same answers':>14}")
    for row in rows:
        f = level_figures(row, baseline)
        same = f"{f['same_answers']}/{f['compared']}"
        print(f"{f['system']:<38}{f['concurrency']:>6}{f['tokens']:>8}{f['seconds']:>9.1f}{f['tokens_per_s']:>10.1f}"
              f"{f['p50_s']:>8.2f}{f['p95_s']:>8.2f}{f['vs_one_at_a_time']:>15.2f}x{same:>14}")


def write_json(args: argparse.Namespace, rows: list, baseline: tuple) -> None:
    if args.json:
        figures = {"model": args.model, "device": args.device, "precision": args.precision,
                   "max_tokens": args.max_tokens, "rows": [level_figures(row, baseline) for row in rows]}
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
