"""Did preference tuning work? Held-out pair accuracy before and after (offline DPO), and the win
rate of the tuned model over the starting model under the same reward (on-policy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.prompts import PromptItem, prepare_prompts
from tunesmith.models.generate import generate, load_for_generation
from tunesmith.training.metrics import read_metrics
from tunesmith.training.rewards import load_reward


def pair_accuracy_summary(run_dir: Path) -> dict[str, Any]:
    """How often the chosen reply wins on held-out pairs, by the implicit DPO reward (ties count half)
    and by length-normalised likelihood: before the first step, and for the weights the run saved
    (the evaluation at the manifest's best_step, the lowest validation loss; not the last step's
    when the run kept earlier weights)."""
    evaluations = {r["step"]: r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "val_reward_accuracy" in r}
    best_step = json.loads((Path(run_dir) / "manifest.json").read_text())["results"]["best_step"]
    if not evaluations or best_step not in evaluations:
        return {}
    first, saved = evaluations[min(evaluations)], evaluations[best_step]
    return {
        "held_out_pairs_step": [first["step"], saved["step"]],
        "reward_accuracy": {"before": first["val_reward_accuracy"], "after": saved["val_reward_accuracy"]},
        "likelihood_accuracy": {"before": first["val_likelihood_accuracy"], "after": saved["val_likelihood_accuracy"]},
        "reward_margin": {"before": first.get("val_reward_margin"), "after": saved.get("val_reward_margin")},
    }


def win_rate(run_dir: Path, config: RunConfig, test: str | None = None) -> dict[str, Any]:
    """Greedy answers of the starting model and of the tuned model to held-out prompts, scored by the
    run's reward: the tuned model wins a prompt when its answer scores higher (a tie counts half)."""
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    tuned = load_for_generation(str(run_dir), precision=config.eval.precision)
    prompts = held_out_prompts(config, tuned, test)
    reward = load_reward(config.preference.reward, trust_code=config.preference.trust_reward_code)
    settings = config.preference
    tuned_answers = generate(tuned, [p.messages for p in prompts], max_new_tokens=settings.max_new_tokens,
                             batch_size=config.eval.batch_size).texts
    template = tuned.tokenizer.chat_template
    del tuned
    base = load_for_generation(manifest["base_model"]["spec"], chat_template=template, precision=config.eval.precision)
    base_answers = generate(base, [p.messages for p in prompts], max_new_tokens=settings.max_new_tokens,
                            batch_size=config.eval.batch_size).texts
    questions, references, wheres = [p.question for p in prompts], [p.reference for p in prompts], [p.where for p in prompts]
    tuned_scores = reward(questions, tuned_answers, references, wheres)
    base_scores = reward(questions, base_answers, references, wheres)
    wins = sum(t > b for t, b in zip(tuned_scores, base_scores))
    ties = sum(t == b for t, b in zip(tuned_scores, base_scores))
    rows = [{"where": p.where, "prompt": p.question, "base": b, "tuned": t, "base_score": bs, "tuned_score": ts}
            for p, b, t, bs, ts in zip(prompts, base_answers, tuned_answers, base_scores, tuned_scores)]
    folder = Path(run_dir) / "eval"
    folder.mkdir(exist_ok=True)
    (folder / "win_rate.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"prompts": len(prompts), "reward": settings.reward, "wins": wins, "ties": ties,
            "losses": len(prompts) - wins - ties, "win_rate": (wins + 0.5 * ties) / max(len(prompts), 1),
            "base_mean_reward": sum(base_scores) / max(len(prompts), 1),
            "tuned_mean_reward": sum(tuned_scores) / max(len(prompts), 1)}


def held_out_prompts(config: RunConfig, loaded: Any, test: str | None) -> list[PromptItem]:
    """The test prompts if given, else the prompts the run held out (the same seeded split, after
    leaving out the same rows training did)."""
    from tunesmith.config import replace

    if test:
        config = replace(config, data=replace(config.data, train=test, validation=None, validation_split=0.0))
        return prepare_prompts(config, loaded.tokenizer, loaded.info).train
    return prepare_prompts(config, loaded.tokenizer, loaded.info, reply_tokens=config.preference.max_new_tokens).validation
