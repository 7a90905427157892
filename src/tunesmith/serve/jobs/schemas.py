"""OpenAI's fine-tuning objects, read from the installed SDK's types (openai.types.fine_tuning):
the create request, FineTuningJob, FineTuningJobEvent and FineTuningJobCheckpoint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from tunesmith.serve.bodies import RequestBody
from tunesmith.store.tables import CheckpointRow, EventRow, JobRow

Auto = Literal["auto"]


class Hyperparameters(RequestBody):
    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | int | None = None
    batch_size: Auto | int | None = None
    learning_rate_multiplier: Auto | float | None = None
    beta: Auto | float | None = None


class MethodConfig(RequestBody):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters | None = None


class Method(RequestBody):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodConfig | None = None
    dpo: MethodConfig | None = None
    reinforcement: dict[str, Any] | None = None


class CreateJobRequest(RequestBody):
    """POST /v1/fine_tuning/jobs. `tunesmith` (sent with the SDK's extra_body) holds tunesmith's own
    settings: sections lora/train/data/task/preference/eval, `method` (a supervised job may train
    classify, pretrain, ...) and `test_file` (an uploaded file evaluated after training)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=256)
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)  # the store's 64-bit column, and what numpy's seeding takes
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    tunesmith: dict[str, Any] | None = None


def job_object(row: JobRow) -> dict:
    method = dict(row.method)
    kind = method.get("type", "supervised")
    hyperparameters = (method.get(kind) or {}).get("hyperparameters") or {}
    return {
        "id": row.id, "object": "fine_tuning.job", "created_at": row.created_at, "error": row.error,
        "fine_tuned_model": row.fine_tuned_model, "finished_at": row.finished_at,
        "hyperparameters": {k: hyperparameters.get(k) for k in ("batch_size", "learning_rate_multiplier", "n_epochs")},
        "model": row.model, "organization_id": row.project, "result_files": list(row.result_files or []), "seed": row.seed, "status": row.status, "trained_tokens": row.trained_tokens,
        "training_file": row.training_file, "validation_file": row.validation_file, "estimated_finish": None,
        "integrations": [], "metadata": row.metadata_, "method": method, "suffix": row.suffix,
        "user_provided_suffix": row.suffix,
    }


def event_object(row: EventRow) -> dict:
    return {"id": row.id, "object": "fine_tuning.job.event", "created_at": row.created_at, "level": row.level,
            "message": row.message, "data": row.data or {}, "type": row.type}


def checkpoint_object(row: CheckpointRow) -> dict:
    return {"id": row.id, "object": "fine_tuning.job.checkpoint", "created_at": row.created_at,
            "fine_tuned_model_checkpoint": row.fine_tuned_model_checkpoint, "fine_tuning_job_id": row.job_id,
            "metrics": row.metrics, "step_number": row.step_number}
