"""What the workbench's routes do: check an uploaded file as a job would (row validation, the data
audit, the rows as the model sees them), estimate a job before it runs, export a finished job's run.
Each builds the job's RunConfig with the jobs API's own functions (jobs/settings.py), so a check,
an estimate and the job that follows read the same settings; paths on the server never reach the
client (the job's files are named by their ids)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, DataError
from tunesmith.jobs.settings import JobFiles, JobSettingsError, hyperparameters_of, run_config
from tunesmith.serve.errors import APIError
from tunesmith.serve.jobs.schemas import CreateJobRequest
from tunesmith.serve.jobs.service import JobsService, file_names
from tunesmith.store.tables import FileRow, JobRow
from tunesmith.store.uploads import link_upload

PREVIEW_ROWS = 3
ESTIMATE_SECONDS = 900  # the probe loads the model and takes 5 steps: minutes on a large model, seconds on a tiny one
EXPORT_SECONDS = 3600
EXPORT_FORMATS = ("gguf", "ollama", "gguf-lora", "onnx")  # vllm's is a copy of the adapter: the API has it already
# one estimate and one export at a time: each loads a model in a process of its own beside the server's
_estimating, _exporting = threading.Semaphore(1), threading.Semaphore(1)


@dataclass
class JobDraft:
    """A job as it would be created, its files linked into a scratch folder."""

    config: Any  # RunConfig
    folder: Path
    files: dict[str, FileRow]  # name in the folder -> the upload
    model: str  # the base as the client named it
    base_spec: str  # where it is on the server (a folder, for a served base)

    def public(self, text: str) -> str:
        """`text` with the scratch folder's paths replaced by the files' ids, and a served base's
        folder by its name."""
        if self.base_spec != self.model and ("/" in self.base_spec or "\\" in self.base_spec):
            text = text.replace(self.base_spec, self.model)
        for name, row in self.files.items():
            text = text.replace(str(self.folder / name), row.id)
        return text.replace(str(self.folder), "the job's folder")

    def public_json(self, value: Any) -> Any:
        return json.loads(self.public(json.dumps(value)))


def project_job(jobs: JobsService, project: str | None, job_id: str) -> JobRow:
    row = jobs.store.get_job(project, job_id)
    if row is None:
        raise APIError(404, f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id",
                       code="fine_tuning_job_not_found")
    return row


@contextlib.contextmanager
def drafted(jobs: JobsService, body: CreateJobRequest, project: str | None, models: Any) -> Iterator[JobDraft]:
    """The RunConfig `body` would train, with its files linked into a scratch folder for the block."""
    settings = dict(body.tunesmith or {})
    base_spec, files = jobs.job_inputs(body, project, models)  # the jobs API's own rules for what may be trained
    method = body.method.model_dump(exclude_none=True) if body.method else {"type": "supervised"}
    legacy = body.hyperparameters.model_dump(exclude_none=True) if body.hyperparameters else None
    scratch = jobs.root / "console"
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=scratch, prefix="draft-")).resolve()
    try:
        named = file_names(files)
        for name, row in named.items():
            if not link_upload(jobs.store, jobs.blobs, row, folder / name):
                raise APIError(404, f"no such file: {row.id} (deleted just now)", param="training_file",
                               code="file_not_found")
        try:
            config = run_config(base_spec, method, hyperparameters_of(method, legacy), settings, body.seed or 0,
                                JobFiles.in_folder(folder, list(named)), str(folder))
        except JobSettingsError as exc:
            raise APIError(400, str(exc), param=exc.param, code="invalid_value") from exc
        except ConfigError as exc:
            raise APIError(400, f"tunesmith settings: {exc}", param="tunesmith", code="invalid_value") from exc
        yield JobDraft(config, folder, named, body.model, base_spec)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- checking a file ------------------------------------------------------------------------------
def check_files(draft: JobDraft, rows: int = PREVIEW_ROWS) -> dict:
    """What the worker would say of the job's files, every bad line listed; the audit; a preview."""
    validation = [_validate(draft, name) for name in draft.files if not name.startswith("test_file")]
    return {"object": "console.file_check", "validation": validation, "audit": _audit(draft),
            "preview": _preview(draft, rows) if all(v["ok"] for v in validation) else None}


def _validate(draft: JobDraft, name: str) -> dict:
    from tunesmith.pipeline.checks import validate_data

    row = draft.files[name]
    try:
        summary = validate_data(str(draft.folder / name), draft.config)
    except DataError as exc:
        problems = [{"line": _line(p.where), "what": draft.public(p.what), "fix": draft.public(getattr(p, "fix", "") or "")}
                    for p in exc.problems if hasattr(p, "where")]
        return {"file": row.id, "filename": row.filename, "ok": False, "summary": draft.public(exc.summary),
                "problems": problems}
    return {"file": row.id, "filename": row.filename, "ok": True, "summary": draft.public(summary), "problems": []}


def _line(where: str) -> int | None:
    line = where.rsplit(":", 1)[-1]
    return int(line) if line.isdigit() else None


def _audit(draft: JobDraft) -> dict | None:
    """The data audit the worker runs before training (leakage against the validation and test files)."""
    config = draft.config
    if config.data.audit == "off" or config.train.method in ("token-classify", "extractive-qa"):
        return None
    from tunesmith.data.audit import run_audit

    held_out = [Path(p) for p in (config.data.validation, config.eval.test) if p]
    report = run_audit(Path(config.data.train), config.data, held_out)
    return draft.public_json({"clean": report.clean, "lines": report.summary_lines(examples=3), **report.as_dict()})


def _preview(draft: JobDraft, rows: int) -> dict:
    """The first rows rendered through the model's chat template, split into the spans the loss
    sees and those it does not (what `tunesmith data inspect` prints, as data)."""
    if draft.config.train.method != "sft":
        return {"rows": [], "note": f"the preview shows sft rows; for train.method={draft.config.train.method} run "
                                    "`tunesmith data inspect`"}
    from tunesmith.pipeline.checks import _load

    tokenizer, _, template, data = _load(draft.config.data.train, draft.config)
    shown = [{"where": draft.public(example.where), "tokens": len(example), "loss_tokens": int(example.n_loss_tokens),
              "spans": loss_spans(example, tokenizer)} for example in data.examples[:rows]]
    return {"rows": shown, "template": template, "note": None}


def loss_spans(example: Any, tokenizer: Any) -> list[dict]:
    """The example's text in runs of tokens that are all in the loss or all out of it."""
    mask, ids = example.loss_mask.tolist(), example.input_ids.tolist()
    spans, start = [], 0
    while start < len(mask):
        end = start
        while end < len(mask) and mask[end] == mask[start]:
            end += 1
        spans.append({"text": tokenizer.decode(ids[start:end], skip_special_tokens=False), "trained": bool(mask[start])})
        start = end
    return spans


# -- estimating -----------------------------------------------------------------------------------
def estimate(draft: JobDraft) -> dict:
    """`tunesmith train --estimate` on the job's settings and rows, in a process of its own (it
    loads the model and takes a few steps), on this server's machine."""
    from tunesmith.config import dump_config

    if not _estimating.acquire(blocking=False):
        raise APIError(429, "another estimate is running on this server; try again when it finishes",
                       type="rate_limit_error", code="rate_limit_exceeded")
    try:
        config_path = draft.folder / "config.yaml"
        config_path.write_text(dump_config(draft.config))
        done = _run([sys.executable, "-m", "tunesmith.training.estimate", str(config_path)], ESTIMATE_SECONDS, "the estimate")
    finally:
        _estimating.release()
    if done.returncode != 0:
        raise APIError(400, draft.public(_error_line(done.stderr, "the estimate")), param="tunesmith", code="estimate_failed")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"object": "console.estimate", **figures}


def _run(command: list[str], seconds: int, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=seconds, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise APIError(504, f"{what} took longer than {seconds} s and was stopped", type="server_error",
                       code="timeout") from exc


def _error_line(output: str, what: str) -> str:
    errors = [line.removeprefix("error: ") for line in output.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else f"{what} failed; the server's log has the details"


# -- exporting ------------------------------------------------------------------------------------
def exports_dir(jobs: JobsService, job: JobRow) -> Path:
    return jobs.job_dir(job.id) / "exports"


def export_job(jobs: JobsService, job: JobRow, fmt: str, quant: str) -> dict:
    """`tunesmith export` of the job's run, in a process of its own; its export.json (the read-back
    check, and for GGUF the answers compared with the run's) without the server's paths."""
    if fmt not in EXPORT_FORMATS:
        raise APIError(400, f"format={fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}", param="format",
                       code="invalid_value")
    if job.status != "succeeded" or not job.run_dir:
        raise APIError(400, f"{job.id} is {job.status}; only a succeeded job's model can be exported",
                       param="fine_tuning_job_id", code="job_not_finished")
    if not _exporting.acquire(blocking=False):
        raise APIError(429, "another export is running on this server; try again when it finishes",
                       type="rate_limit_error", code="rate_limit_exceeded")
    folder = exports_dir(jobs, job) / (f"{fmt}-{quant}" if fmt in ("gguf", "ollama") else fmt)
    try:
        command = [sys.executable, "-m", "tunesmith.cli", "export", job.run_dir, "--format", fmt, "--quant", quant,
                   "-o", str(folder)]
        done = _run(command, EXPORT_SECONDS, "the export")
    finally:
        _exporting.release()
    if done.returncode != 0:
        message = _error_line(done.stdout + "\n" + done.stderr, "the export")
        raise APIError(400, hide_paths(message, jobs, job), param="format", code="export_failed")
    return read_export(jobs, job, folder)


def read_export(jobs: JobsService, job: JobRow, folder: Path) -> dict:
    record = json.loads((folder / "export.json").read_text())
    files = [Path(path) for path in record.pop("files", [])]
    record.pop("run", None)
    shown = [{"name": path.name, "bytes": path.stat().st_size if path.is_file() else None,
              "download": f"/v1/console/jobs/{job.id}/exports/{folder.name}/{path.name}" if path.is_file() else None}
             for path in files]
    return {"object": "console.export", "id": folder.name, "format": record.pop("format", folder.name.split("-")[0]),
            "files": shown, "check": json.loads(hide_paths(json.dumps(record), jobs, job))}


def hide_paths(text: str, jobs: JobsService, job: JobRow) -> str:
    """`text` as the job's owner may read it: its base model by the name they gave, no server path
    (the worker's rule for its messages, Worker.public_text)."""
    if job.base_spec != job.model and ("/" in job.base_spec or "\\" in job.base_spec):  # a folder on the server
        text = text.replace(str(Path(job.base_spec).resolve()), job.model).replace(job.base_spec, job.model)
    return text.replace(str(jobs.job_dir(job.id).resolve()), "the job's folder").replace(
        str(jobs.root.resolve()), "the jobs folder")
