"""Serving throughput: tunesmith serve at concurrency 1, 4 and 16, against the same requests sent one at
a time through transformers' `generate`, and against `transformers serve` on the same model.

    python benchmarks/serve_throughput.py [--requests 32] [--max-tokens 64] [--skip-transformers-serve]

Every system answers the same Alpaca prompts as chats, greedily, up to --max-tokens new tokens, with
the default model (SmolLM2-135M-Instruct) in fp32 on the CPU. Both servers run on 127.0.0.1 and are
driven by the official `openai` client from a pool of threads (one per concurrent request). Printed:
generated tokens per second over the whole run, p50/p95 latency of a request, tokens/s against the
one-at-a-time baseline, and how many answers equal the baseline's (greedy: they should all).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODEL = "smollm2-135m-instruct"


def one_at_a_time(model_dir: str, prompts: list[str], max_tokens: int) -> tuple[list[str], list[float], int, float]:
    """transformers' generate, one request after another (the user's own loop)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers, latencies, tokens = [], [], 0
    started = time.perf_counter()
    for prompt in prompts:
        begun = time.perf_counter()
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
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
    args = parser.parse_args()

    import torch

    from tunesmith.config import ServeConfig, build_config
    from tunesmith.eval.items import load_items
    from tunesmith.models.load import resolve_model
    from tunesmith.serve.app import create_app, free_port, running
    from tunesmith.serve.models import ServedModels

    items, _ = load_items("alpaca-demo", build_config({}).data, None, max_rows=args.requests)
    prompts = [item.prompt if isinstance(item.prompt, str) else item.prompt[-1].content for item in items]
    model_dir = resolve_model(MODEL).location
    print(f"{MODEL}, {len(prompts)} Alpaca chats, greedy, up to {args.max_tokens} new tokens, fp32, "
          f"{torch.get_num_threads()} threads\n")
    rows = []
    baseline = one_at_a_time(model_dir, prompts, args.max_tokens)
    rows.append(("transformers generate, one at a time", 1, *baseline))

    models = ServedModels(precision="fp32")
    name = models.add_base(model_dir, MODEL).name
    app = create_app(models, ServeConfig(max_queue=256, max_batch=16, max_tokens=args.max_tokens))
    with running(app) as base_url:
        for concurrency in args.concurrency:
            rows.append(("tunesmith serve", concurrency, *drive(base_url, name, prompts, args.max_tokens, concurrency)))
        print(f"tunesmith engine: {app.state.engine.stats}\n")

    if not args.skip_transformers_serve:
        port = free_port()
        try:
            process = transformers_serve(model_dir, port)
        except RuntimeError as exc:
            print(f"transformers serve: not measured ({exc})\n")
        else:
            try:
                for concurrency in args.concurrency:
                    rows.append(("transformers serve", concurrency,
                                 *drive(f"http://127.0.0.1:{port}/v1", model_dir, prompts, args.max_tokens, concurrency)))
            finally:
                process.terminate()
                process.wait(timeout=30)

    base_rate = baseline[2] / baseline[3]
    print(f"{'system':<38}{'conc.':>6}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'p50 s':>8}{'p95 s':>8}"
          f"{'vs 1-at-a-time':>16}{'same answers':>14}")
    for system, concurrency, answers, latencies, tokens, seconds in rows:
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        same = sum(a == b for a, b in zip(answers, baseline[0]))
        print(f"{system:<38}{concurrency:>6}{tokens:>8}{seconds:>9.1f}{tokens / seconds:>10.1f}"
              f"{statistics.median(latencies):>8.2f}{p95:>8.2f}{tokens / seconds / base_rate:>15.2f}x"
              f"{f'{same}/{len(prompts)}':>14}")


if __name__ == "__main__":
    main()
