"""The loop after serving, on the default model and a real task:

    python examples/improve_loop.py                 # trains examples/movie-reviews.yaml first if no RUN is given
    python examples/improve_loop.py runs/movie-reviews-lora --drifted 400

1. serve the movie-review run with a store (a real server on 127.0.0.1, driven by the openai client);
2. simulated users send in-distribution reviews, then *drifted* ones: real movie-review sentences
   rewritten the way people post them (mentions, hashtags, links, slang spellings such as
   "gud", "gr8", "u", "flick"); most users give feedback, correcting a wrong label;
3. `tunesmith monitor` reads the store: traffic, latency, feedback, and the drift flag;
4. `tunesmith feedback export --as sft`: the corrections and liked answers as label rows, audited;
5. `tunesmith retrain`: a new generation on them plus replayed training rows, gated on the run's
   test set and on held-out new rows; promoted only if it wins;
6. the same server, without a restart, answers the drifted reviews with the promoted generation.

The reviews are drawn at random from the training split (the run trained on 800 of its 3,600
rows, so most of these it never saw in any form), never from the test split the gate scores.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from tunesmith.config import ServeConfig, load_config
from tunesmith.data.catalog import dataset_path, parse_name
from tunesmith.data.read import read_records
from tunesmith.data.tasks import LabelTask
from tunesmith.improve.feedback import export_feedback
from tunesmith.improve.monitor import write_monitor
from tunesmith.improve.retrain import retrain
from tunesmith.serve.app import create_app, running
from tunesmith.serve.models import ServedModels
from tunesmith.store.completions import Completions
from tunesmith.store.db import open_store, sqlite_url

SLANG = {"good": "gud", "great": "gr8", "you": "u", "your": "ur", "movie": "flick", "film": "flick", "really": "rly",
         "and": "n", "because": "cuz", "the": "da", "love": "luv", "nothing": "nuthin", "people": "ppl", "bad": "baaad",
         "funny": "funnyyy", "boring": "boooring", "best": "bestest", "worst": "worstest", "is": "iz", "are": "r"}
HASHTAGS = ["#movies", "#cinema", "#fridaynight", "#popcorn", "#review", "#watchlist", "#film", "#streaming"]


def drift(text: str, rng: random.Random) -> str:
    """A review as it might be posted: slang spellings, a mention, hashtags, sometimes a link."""
    words = [SLANG.get(word, word) if rng.random() < 0.8 else word for word in text.split()]
    posted = f"@{rng.choice(['moviebuff', 'cinefan22', 'popcorn_queen', 'reelguy'])} " + " ".join(words)
    posted += " " + " ".join(rng.sample(HASHTAGS, 2))
    if rng.random() < 0.5:
        posted += f" https://t.co/{''.join(rng.choices('abcdefghijk0123456789', k=8))}"
    return re.sub(r"\s+", " ", posted)


def review_rows(count: int, skip: int = 0) -> list[tuple[str, str]]:
    """`count` rows of the training split drawn at random (the split is sorted by label), after the
    first `skip` of the same draw."""
    path = dataset_path(*parse_name("movie-review-polarity:train"))
    rows = [(r.data["text"], r.data["label"]) for r in read_records(path)]
    random.Random(1).shuffle(rows)
    return rows[skip:skip + count]


def ask_all(client: openai.OpenAI, model: str, task: LabelTask, texts: list[str]) -> list:
    def ask(text: str):
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": task.prompt(text)}],
                                              temperature=0, max_tokens=4)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, texts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="a movie-review run folder (default: train examples/movie-reviews.yaml)")
    parser.add_argument("--plain", type=int, default=100, help="in-distribution requests first")
    parser.add_argument("--drifted", type=int, default=400, help="drifted requests after them")
    parser.add_argument("--feedback-rate", type=float, default=0.8, help="share of users who give feedback")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="settings for the retrain")
    args = parser.parse_args()

    run = Path(args.run) if args.run else train_main_job()
    task = LabelTask.load(run / "task.json")
    config = load_config(run / "config.yaml")
    overrides = list(args.overrides) + ([] if config.eval.test else ["eval.test=movie-review-polarity:test"])
    rng = random.Random(0)
    plain = review_rows(args.plain)
    drifted = [(drift(text, rng), label) for text, label in review_rows(args.drifted, skip=args.plain)]

    models = ServedModels()
    models.add_run(run, "reviews")
    database = run / "completions.db"
    app = create_app(models, ServeConfig(max_tokens=8, store_url=sqlite_url(database)))
    with running(app) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=300)
        started = time.perf_counter()
        ask_all(client, "reviews", task, [t for t, _ in plain])
        replies = ask_all(client, "reviews", task, [t for t, _ in drifted])
        print(f"{args.plain} plain and {args.drifted} drifted requests in {time.perf_counter() - started:.0f} s")
        before = accuracy(replies, drifted)
        for reply, (_, label) in zip(replies, drifted):
            if rng.random() >= args.feedback_rate:
                continue
            answer = reply.choices[0].message.content.strip().lower()
            body = {"score": 1} if answer == label else {"score": -1, "correction": label}
            client.post(f"/chat/completions/{reply.id}/feedback", cast_to=object, body=body)

        html, _, report = write_monitor(run)
        summary = report.to_json()
        print(f"\nmonitor: {html}\nretrain suggested: {summary['retrain_suggested']}")
        for reason in summary["reasons"]:
            print(f"  {reason}")
        for model in summary["models"]:
            for figure in (model.get("drift") or {}).get("figures", []):
                print(f"  {figure['name']}: {_number(figure['value'])} (baseline {_number(figure['baseline'])}, "
                      f"threshold {figure['threshold']}) {figure['verdict']}")

        exported = export_feedback(run, run / "feedback-sft.jsonl", "sft")
        print(f"\n{exported.summary()}")
        result = retrain(run, str(run / "feedback-sft.jsonl"), overrides)
        print(f"\n{result.table()}\n{result.summary()}")

        again = ask_all(client, "reviews", task, [t for t, _ in drifted[:100]])
        generation = Completions(open_store(sqlite_url(database))).rows()[-1].generation
        print(f"\nthe same server, no restart: generation {generation} answers now; accuracy on the first 100 drifted "
              f"reviews {accuracy(replies[:100], drifted[:100]):.3f} before, {accuracy(again, drifted[:100]):.3f} now "
              f"(these rows include the ones trained on; the gate's held-out rows above do not)")
    print(json.dumps({"drifted_accuracy_before": before, "promoted": result.promoted, "generation": result.generation}))
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def accuracy(replies: list, rows: list[tuple[str, str]]) -> float:
    right = sum(r.choices[0].message.content.strip().lower() == label for r, (_, label) in zip(replies, rows))
    return right / max(len(rows), 1)


def train_main_job() -> Path:
    import tunesmith

    config = load_config(Path(__file__).parent / "movie-reviews.yaml")
    return tunesmith.train(config).run_dir


if __name__ == "__main__":
    sys.exit(main())
