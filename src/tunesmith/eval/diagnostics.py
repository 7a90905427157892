"""Overfitting and forgetting, in words a user can act on."""

from __future__ import annotations

from typing import Any


def overfitting_notes(records: list[dict[str, Any]]) -> list[str]:
    """Read the run's metrics: did validation loss rise while training loss kept falling?"""
    evals = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if not train:
        return []
    window = max(1, len(train) // 10)
    final_train = sum(loss for _, loss in train[-window:]) / window
    notes = []
    if len(evals) < 2:
        return ["Too few validation evaluations to judge overfitting; set train.eval_every lower."]
    best_step, best_val = min(evals, key=lambda e: e[1])
    last_step, last_val = evals[-1]
    notes.append(f"Final training loss {final_train:.3f}, validation loss {last_val:.3f}: gap {last_val - final_train:+.3f}.")
    if last_val > best_val * 1.01 and last_step > best_step:
        train_at_best = _mean_train_near(train, best_step, window)
        notes.append(
            f"Overfitting: validation loss rose from {best_val:.3f} (step {best_step}) to {last_val:.3f} (step {last_step}) "
            f"while training loss went from {train_at_best:.3f} to {final_train:.3f}. The saved model uses the weights of "
            f"step {best_step}; train fewer steps, lower the learning rate, or add data "
            "(train.early_stopping_patience stops such runs early)."
        )
    else:
        notes.append(f"No sign of overfitting: validation loss is at or near its lowest ({best_val:.3f}, step {best_step}).")
    return notes


def forgetting_note(forgetting: dict[str, Any] | None) -> str | None:
    if not forgetting:
        return None
    ratio = forgetting["ratio"]
    verdict = ("little was forgotten" if ratio < 1.05 else "some general ability was lost" if ratio < 1.25
               else "much general ability was lost: try LoRA, a lower learning rate, fewer steps, or mixing general data in")
    return (f"Perplexity on {forgetting['documents']} documents of general text ({forgetting['source']}): "
            f"{forgetting['ppl_before']:.2f} before, {forgetting['ppl_after']:.2f} after (x{ratio:.3f}); {verdict}.")


def _mean_train_near(train: list[tuple[int, float]], step: int, window: int) -> float:
    before = [loss for s, loss in train if s <= step][-window:]
    return sum(before) / len(before) if before else float("nan")
