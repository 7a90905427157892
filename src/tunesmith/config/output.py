"""output, distributed, retrain: where a run lands, how several processes share it, and how a served
run is trained again."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from tunesmith.config.base import Section, setting


class OutputConfig(Section):
    """Where results go and which of them are written."""

    dir: str = setting("runs", "Folder that holds run folders.")
    name: str | None = setting(
        None,
        "Run folder name inside `dir`: one folder name, no path. Unset: `<data name>-<model name>-<method>-<lora|full>`.",
    )
    save_merged: bool = setting(
        True, "Also write the model with the adapter merged in (loads with plain transformers)."
    )
    overwrite: bool = setting(
        False,
        "Replace an earlier run of the same name instead of stopping (use --resume to continue it). The old run "
        "is removed only once the new run's data and model have loaded, and only if tunesmith created it.",
    )
    report_to: list[Literal["tensorboard", "mlflow"]] = setting(
        [],
        "Also log the run to these trackers: the resolved config, per-step metrics under the Hugging Face "
        "integrations' names (train/loss, train/learning_rate, eval/loss), the evaluation table and the report. "
        "tensorboard writes <run folder>/tensorboard/; mlflow uses MLFLOW_TRACKING_URI, else a SQLite store in "
        "output.dir. Each needs its package: pip install 'tunesmith[track]'.",
    )

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str | None) -> str | None:
        if name is not None and (not name or name in (".", "..") or any(c in name for c in "/\\\0")):
            raise ValueError("must be one folder name (no '/', '..' or absolute path); put runs elsewhere with "
                             "output.dir")
        return name


class DistributedConfig(Section):
    """How several processes (`--nproc N`, torchrun) share the training; one process ignores it."""

    strategy: Literal["ddp", "fsdp"] = setting(
        "ddp",
        "ddp: every process holds the whole model and its optimizer, gradients are averaged (fastest when the model "
        "fits on one device). fsdp: PyTorch's FSDP2 shards weights, gradients and AdamW moments across the processes "
        "(each decoder layer and the rest of the model gathered only while in use), for full fine-tuning of a model "
        "that does not fit on one device; checkpoints are sharded (torch.distributed.checkpoint), the final model a "
        "normal Hugging Face folder.",
    )


class RetrainConfig(Section):
    """`tunesmith retrain RUN --data NEW`: a new generation of a served run, promoted only through its gate."""

    replay: float = setting(1.0, "Old training rows replayed per new training row (drawn at random), to limit "
                                 "forgetting; 0: the new rows alone.", ge=0)
    holdout: float = setting(0.2, "Share of the new rows held out: the gate compares the current and the new model "
                                  "on them (never trained on).", gt=0.0, lt=1.0)
    margin: float = setting(0.02, "How much lower the new model may score on the run's test set (eval.test) and still "
                                  "be promoted: the lower end of the 95% interval of the difference must be above "
                                  "-margin; it must also score higher on the held-out new rows.", ge=0)
    seed: int = setting(0, "Seed for the holdout split and the replayed rows.")
