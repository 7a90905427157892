"""Step records become the metric names the Hugging Face integrations write."""

from __future__ import annotations

from tunesmith.training.tracking import metric_names


def test_step_and_evaluation_records_get_the_hugging_face_names():
    step = {"step": 7, "epoch": 0.5, "lr": 1e-4, "grad_norm": 0.8, "tokens": 512, "loss_tokens": 40,
            "tokens_per_s": 900.0, "loss": 1.25, "val_loss": 1.5, "val_ppl": 4.48, "train_val_gap": 0.25,
            "overfitting": True, "reward_mean": 0.3}
    assert metric_names(step) == {
        "train/epoch": 0.5, "train/learning_rate": 1e-4, "train/grad_norm": 0.8, "train/tokens_per_second": 900.0,
        "train/loss": 1.25, "eval/loss": 1.5, "eval/ppl": 4.48, "eval/train_val_gap": 0.25, "train/reward_mean": 0.3}
    assert metric_names({"step": 0, "val_loss": 2.0}) == {"eval/loss": 2.0}  # the evaluation before the first step
