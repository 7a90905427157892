"""The worker: a loop that claims a job from the store, works on it, and claims the next.

A job waiting in `validating_files` gets its rows checked (the same validation as `tunesmith data
validate`, then the data audit); a bad file fails the job, naming its first bad lines. A `queued`
job trains as `tunesmith train CONFIG` in a subprocess (a hard cancel kills it, its memory goes
with it, and its crash is not the worker's); while it runs the worker heartbeats, turns each new
line of the run's metrics.jsonl into an event and each new checkpoint folder into a checkpoint,
and watches for a cancel or a pause. A job whose worker died (no heartbeat for lease_seconds) is
claimed by the next worker and continues with `--resume` from its last checkpoint; steps already
reported are not reported twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import JobsConfig, RunConfig, dump_config
from tunesmith.errors import DataError, TunesmithError
from tunesmith.files import write_atomic
from tunesmith.jobs.settings import JobFiles, fine_tuned_name, run_config
from tunesmith.store.blobs import Blobs
from tunesmith.store.db import Store, now, open_store, shown_url
from tunesmith.store.tables import JobRow
from tunesmith.store.uploads import add_upload
from tunesmith.training.fence import Fence

BAD_LINES_SHOWN = 5


@dataclass
class Reported:
    """What of a running job is already in the store."""

    last_step: int
    checkpoint_steps: set[int] = field(default_factory=set)


class Worker:
    def __init__(self, config: JobsConfig, store: Store | None = None, worker_id: str | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.database_url)
        self.root = Path(config.jobs_dir)
        self.blobs = Blobs(self.root / "files")
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def run(self, stop: threading.Event | None = None) -> None:
        """Work until `stop` is set (or forever)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                worked = self.work_once()
            except Exception as exc:  # the store was unreachable, say: the job's lease runs out and it is
                # taken over (by this worker too) from its last checkpoint; the worker itself carries on
                print(f"tunesmith worker {self.worker_id}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                worked = False
            if not worked:
                stop.wait(self.config.poll_seconds)

    def work_once(self) -> bool:
        """Claim one job and work on it; False when there was none."""
        job = self.store.claim(self.worker_id, self.config.lease_seconds)
        if job is None:
            return False
        if job.status == "validating_files":
            self.validate(job)
        elif job.status == "running":
            self.train(job)
        return True

    # -- paths and settings ---------------------------------------------------------------------
    def job_dir(self, job: JobRow) -> Path:
        return self.root / "jobs" / job.id

    def run_config(self, job: JobRow) -> tuple[RunConfig, JobFiles]:
        files = JobFiles.in_folder(self.job_dir(job).resolve() / "files", job.settings.get("_files", []))
        config = run_config(job.base_spec, job.method, job.settings.get("_hyperparameters", {}), job.settings,
                            job.seed, files, str(self.job_dir(job).resolve()),
                            allow_python_graders=self.config.allow_python_graders)
        return config, files

    # -- validating -----------------------------------------------------------------------------
    def validate(self, job: JobRow) -> None:
        """Check the job's rows and audit them in a child process, heartbeating meanwhile: whatever
        the check does with a row (a long regex holds the GIL), this process keeps the lease, so no
        other worker claims the job while it is being checked."""
        try:
            config, files = self.run_config(job)
            events = self._validate_in_child(job, config, files)
        except JobFailed as exc:
            self._fail(job, ("validating_files",), exc.error)
            return
        except LostJob:
            return
        except Exception as exc:  # the settings no longer build (an upgrade): the job cannot run here
            self._fail(job, ("validating_files",), {"code": "validation_error", "param": None,
                                                    "message": f"{type(exc).__name__}: {exc}"})
            return
        events = [{**event, "message": self.public_text(job, event["message"])} for event in events]
        self.store.update_held(job.id, self.worker_id, ("validating_files",), status="queued", worker_id=None,
                               heartbeat_at=None, events=events)

    def _validate_in_child(self, job: JobRow, config: RunConfig, files: JobFiles) -> list[dict]:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks inherited
        receiving, sending = context.Pipe(duplex=False)
        ids = FileIds(job.training_file, job.validation_file)
        child = context.Process(target=_validation_child, args=(config, files, ids, sending), daemon=True)
        child.start()
        sending.close()
        deadline = time.monotonic() + self.config.validation_seconds
        try:
            while not receiving.poll(self.config.poll_seconds):
                row = self.store.heartbeat(job.id, self.worker_id)
                if row is None or row.status != "validating_files":  # taken over, or cancelled
                    raise LostJob()
                if not child.is_alive():
                    raise JobFailed({"code": "validation_error", "param": None, "message": (
                        f"the process checking the files stopped (exit status {child.exitcode})")})
                if time.monotonic() > deadline:
                    raise JobFailed({"code": "validation_error", "param": None, "message": (
                        f"checking the files took longer than {self.config.validation_seconds:g} s")})
            outcome, value = receiving.recv()
        finally:
            if child.is_alive():
                child.kill()
            child.join()
        if outcome == "failed":
            raise JobFailed(value)
        return value

    # -- training -------------------------------------------------------------------------------
    def train(self, job: JobRow) -> None:
        folder = self.job_dir(job)
        try:
            config, _ = self.run_config(job)
        except Exception as exc:  # settings that built when the job was created no longer do (an upgrade)
            self._fail(job, ("running",), {"code": "server_error", "param": None,
                                           "message": f"{type(exc).__name__}: {exc}"})
            return
        run_dir = folder / "run"
        from tunesmith.training.checkpoint import latest_checkpoint

        resume = latest_checkpoint(run_dir / "checkpoints") is not None
        config_path = write_atomic(folder / "config.yaml", dump_config(config))
        # this claim's token, before the training starts: a trainer of an earlier claim stops at its next write
        lease = Fence(folder.resolve() / "lease", f"{self.worker_id}#{job.attempts}")
        write_atomic(lease.lease_file, lease.token)
        command = [sys.executable, "-m", "tunesmith.cli", "train", str(config_path), "--no-progress"]
        if resume:
            command.append("--resume")
            self.store.add_event(job.id, f"Continuing from checkpoint {latest_checkpoint(run_dir / 'checkpoints').name}")
        reported = Reported(job.last_event_step, self.store.checkpoint_steps(job.id))
        name = fine_tuned_name(job.model, job.suffix, job.id)
        with open(folder / "train.log", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_parent,
                                       env={**os.environ, **lease.environment()})
            try:
                outcome = self._watch(job, process, run_dir, reported, name)
            except BaseException:  # never leave a training running that nobody reports on
                _kill(process)
                raise
        if outcome != "exited":
            return
        self._report(job, run_dir, reported, name)
        if process.returncode == 0:
            self._succeed(job, run_dir, name)
        else:
            self._fail(job, ("running",), {"code": "training_failed", "param": None,
                                           "message": last_error(folder / "train.log", process.returncode)})

    def _watch(self, job: JobRow, process: subprocess.Popen, run_dir: Path, reported: Reported, name: str) -> str:
        """Until the training exits ("exited") or the job is cancelled, paused or lost (the process
        is killed)."""
        while True:
            try:
                process.wait(timeout=self.config.poll_seconds)
                return "exited"
            except subprocess.TimeoutExpired:
                pass
            row = self.store.heartbeat(job.id, self.worker_id)
            if row is None or row.status != "running":  # taken over, or cancelled
                _kill(process)
                return "stopped"
            if row.pause_requested:
                _kill(process)
                self._report(job, run_dir, reported, name)
                self.store.update_held(job.id, self.worker_id, ("running",), status="paused", worker_id=None,
                                       heartbeat_at=None, pause_requested=False, events=[{"message": (
                                           f"Fine-tuning job paused after step {reported.last_step}; it continues "
                                           "from its last checkpoint when resumed")}])
                return "paused"
            self._report(job, run_dir, reported, name)

    def _report(self, job: JobRow, run_dir: Path, reported: Reported, name: str) -> None:
        """New steps and checkpoints of the run into the store, in one transaction with the
        job's reported step (so a restart neither loses nor repeats them)."""
        from tunesmith.training.checkpoint import list_checkpoints
        from tunesmith.training.metrics import read_metrics

        records = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl") if "step" in r}
        events, checkpoints = [], []
        last = reported.last_step
        for step in sorted(s for s in records if s > reported.last_step):
            record = records[step]
            if not {"loss", "val_loss", "reward_mean", "val_reward_mean"} & set(record):
                continue
            events.append(metrics_event(record))
            last = step
        new_steps = []
        for folder in list_checkpoints(run_dir / "checkpoints"):
            step = int(folder.name.split("-")[1])
            if step in reported.checkpoint_steps or step > last:
                continue
            record = records.get(step, {})
            metrics = {"step": float(step), "train_loss": record.get("loss"), "valid_loss": record.get("val_loss"),
                       "full_valid_loss": record.get("val_loss")}
            metrics.update({key: value for key, value in reward_figures(record).items()
                            if key in ("train_reward_mean", "valid_reward_mean")})
            checkpoints.append({"step_number": step, "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}",
                                "metrics": metrics})
            events.append({"message": f"Checkpoint created at step {step}", "data": {"step": step}})
            new_steps.append(step)
        if not events:
            return
        if self.store.update_held(job.id, self.worker_id, ("running",), events=events, checkpoints=checkpoints,
                                  last_event_step=last):
            reported.last_step = last
            reported.checkpoint_steps.update(new_steps)

    def _succeed(self, job: JobRow, run_dir: Path, name: str) -> None:
        from tunesmith.training.checkpoint import latest_checkpoint

        checkpoint = latest_checkpoint(run_dir / "checkpoints")
        tokens = json.loads((checkpoint / "state.json").read_text()).get("tokens_seen") if checkpoint else None
        results = self._results_file(job, run_dir)
        self.store.update_held(job.id, self.worker_id, ("running",), status="succeeded", fine_tuned_model=name,
                               finished_at=now(), trained_tokens=tokens, result_files=[results],
                               run_dir=str(run_dir.resolve()), events=[
                                   {"message": f"New fine-tuned model created: {name}"},
                                   {"message": "The job has successfully completed"}])

    def _results_file(self, job: JobRow, run_dir: Path) -> str:
        """OpenAI's result file: step_metrics.csv, an upload of purpose fine-tune-results."""
        from tunesmith.training.metrics import read_metrics

        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["step", "train_loss", "valid_loss", "learning_rate", "tokens"])
        for record in read_metrics(run_dir / "metrics.jsonl"):
            if record.get("step"):
                writer.writerow([record["step"], record.get("loss", ""), record.get("val_loss", ""),
                                 record.get("lr", ""), record.get("tokens", "")])
        return add_upload(self.store, self.blobs, job.project, "step_metrics.csv", "fine-tune-results",
                          io.BytesIO(text.getvalue().encode()), max_bytes=1 << 40).id

    def public_text(self, job: JobRow, text: str) -> str:
        """A message as a client may read it: the job's files by their ids, its base model by the
        name the client gave, and no path on the server."""
        folder = self.job_dir(job).resolve()
        ids = {"training_file": job.training_file, "validation_file": job.validation_file,
               "test_file": (job.settings or {}).get("test_file")}
        for name in job.settings.get("_files", []) if job.settings else []:
            if ids.get(Path(name).stem):
                text = text.replace(str(folder / "files" / name), ids[Path(name).stem])
        replacements = [(str(folder), "the job's folder"), (str(self.root.resolve()), "the jobs folder")]
        if job.base_spec != job.model and ("/" in job.base_spec or "\\" in job.base_spec):  # a folder on the server
            replacements.insert(0, (job.base_spec, job.model))
        for path, shown in replacements:
            text = text.replace(path, shown)
        return text

    def _fail(self, job: JobRow, statuses: tuple[str, ...], error: dict) -> None:
        error = {**error, "message": self.public_text(job, error["message"])}
        self.store.update_held(job.id, self.worker_id, statuses, status="failed", error=error, finished_at=now(),
                               events=[{"message": f"Fine-tuning job failed: {error['message']}", "level": "error"}])


class LostJob(Exception):
    """This worker no longer holds the job (another took it over, or it was cancelled)."""


@dataclass(frozen=True)
class FileIds:
    """The ids a job's files answer to, for messages (the file paths themselves are the server's)."""

    training_file: str
    validation_file: str | None


def _validation_child(config: RunConfig, files: JobFiles, ids: FileIds, sending: Any) -> None:
    """In the child: the events of a good check, or the error of a failed one, sent back once."""
    try:
        outcome = ("ok", validation_events(config, files, ids))
    except JobFailed as exc:
        outcome = ("failed", exc.error)
    except Exception as exc:  # the model or its tokenizer would not load: the job cannot run here
        outcome = ("failed", {"code": "validation_error", "param": None, "message": f"{type(exc).__name__}: {exc}"})
    sending.send(outcome)
    sending.close()


class JobFailed(Exception):
    def __init__(self, error: dict) -> None:
        super().__init__(error["message"])
        self.error = error


def validation_events(config: RunConfig, files: JobFiles, job: FileIds | JobRow) -> list[dict]:
    """Check the job's files row by row, then audit them; JobFailed for a bad file (or, with
    data.audit=strict, any audit finding). Returns the events to report."""
    from tunesmith.pipeline.checks import validate_data

    checked = [("training_file", files.train, job.training_file), ("validation_file", files.validation,
                                                                   job.validation_file)]
    events = []
    for param, path, file_id in checked:
        if path is None:
            continue
        try:
            summary = validate_data(path, config)
        except DataError as exc:
            raise JobFailed({"code": f"invalid_{param}", "param": param,
                             "message": bad_lines_message(exc, file_id, param)}) from exc
        events.append({"message": f"{param} {file_id}: " + summary.splitlines()[0].split(": ", 1)[-1]})
    events += audit_events(config, files, job)
    events.append({"message": "Files validated, moving job to queued state"})
    return events


def audit_events(config: RunConfig, files: JobFiles, job: FileIds | JobRow) -> list[dict]:
    if config.data.audit == "off" or config.train.method in ("token-classify", "extractive-qa"):
        return []
    from tunesmith.data.audit import run_audit

    held_out = [Path(p) for p in (files.validation, files.test) if p]
    report = run_audit(Path(files.train), config.data, held_out)
    lines = [line.replace(str(Path(files.train)), job.training_file) for line in report.summary_lines(examples=2)]
    if config.data.audit == "strict" and not report.clean:
        raise JobFailed({"code": "invalid_training_file", "param": "training_file",
                         "message": "the data audit found problems and tunesmith.data.audit is strict: "
                                    + "; ".join(lines)})
    level = "info" if report.clean else "warn"
    return [{"message": f"Data audit: {line}", "level": level} for line in lines]


def bad_lines_message(error: DataError, file_id: str, param: str) -> str:
    """`<param> <id> has N invalid rows: line 3: ...; line 7: ...` (the first few, by line number)."""
    problems = [p for p in error.problems if hasattr(p, "where")]
    if not problems:
        return f"{param} {file_id}: {error.summary}"
    shown = []
    for problem in problems[:BAD_LINES_SHOWN]:
        line = problem.where.rsplit(":", 1)[-1]
        where = f"line {line}" if line.isdigit() else file_id
        shown.append(f"{where}: {problem.what}" + (f" ({problem.fix})" if problem.fix else ""))
    rows = len({p.where for p in problems})
    more = f"; and {len(problems) - BAD_LINES_SHOWN} more" if len(problems) > BAD_LINES_SHOWN else ""
    return f"{param} {file_id} has {rows} invalid row{'s' * (rows != 1)}: " + "; ".join(shown) + more


def metrics_event(record: dict[str, Any]) -> dict:
    step = record["step"]
    parts = [f"Step {step}"]
    if "reward_mean" in record:
        parts.append(f"reward mean={record['reward_mean']:.4f}")
    if "val_reward_mean" in record:
        parts.append(f"validation reward mean={record['val_reward_mean']:.4f}")
    if "loss" in record:
        parts.append(f"training loss={record['loss']:.4f}")
    if "val_loss" in record:
        parts.append(f"validation loss={record['val_loss']:.4f}")
    data = {"step": step, "train_loss": record.get("loss"), "valid_loss": record.get("val_loss"),
            "learning_rate": record.get("lr"), "epoch": record.get("epoch"), **reward_figures(record)}
    return {"message": ": ".join([parts[0], ", ".join(parts[1:])]), "type": "metrics",
            "data": {k: v for k, v in data.items() if v is not None}}


# A reinforcement (grpo) step's figures in the event's data, named as OpenAI's metrics are (train_/valid_
# prefixes, as train_loss and valid_loss): the step's rewards, each sub-grader's, the KL to the
# reference and the sampled completions' length in tokens.
REWARD_FIGURES = {"reward_mean": "train_reward_mean", "reward_std": "train_reward_std",
                  "val_reward_mean": "valid_reward_mean", "kl": "train_kl",
                  "completion_length_mean": "train_output_tokens_mean", "clip_fraction": "train_clip_fraction",
                  "ungraded_samples": "train_ungraded_samples"}


def reward_figures(record: dict[str, Any]) -> dict[str, Any]:
    """The reward figures of a metrics.jsonl record; each multi grader's sub-grader's mean reward (a
    record's other `reward_NAME` keys) under `sub_rewards`, as OpenAI's grader run response names them."""
    figures: dict[str, Any] = {shown: record[key] for key, shown in REWARD_FIGURES.items() if key in record}
    sub_rewards = {key.removeprefix("reward_"): value for key, value in record.items()
                   if key.startswith("reward_") and key not in REWARD_FIGURES}
    if sub_rewards:
        figures["sub_rewards"] = sub_rewards
    return figures


def last_error(log: Path, returncode: int) -> str:
    """The training's own one-line error (`error: ...`), else its exit status."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1]
    reason = f"killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    return f"the training process {reason}; its log (train.log in the job's folder on the server) has the details"


def _die_with_parent() -> None:
    """In the training child: die when the worker dies (Linux's PR_SET_PDEATHSIG), so a killed
    worker leaves no training writing into a run folder that the next worker resumes."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_worker(config: JobsConfig, *, stop: threading.Event | None = None) -> None:
    """`tunesmith worker`: work until interrupted."""
    worker = Worker(config)
    print(f"tunesmith worker {worker.worker_id}: taking jobs from {shown_url(config.database_url)}", file=sys.stderr,
          flush=True)
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        pass
    except TunesmithError:
        raise
