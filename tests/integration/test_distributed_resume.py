"""A run on 2 processes whose launcher is killed with SIGKILL stops, its ranks with it, and resumed
on 2 ends with the weights of one never interrupted; a resume on another number of processes keeps a step's rows or is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tunesmith
from tests.integration.helpers import cli_args, max_difference, tiny_config, weights
from tests.integration.test_distributed import launch, rows

# LoRA dropout: each process draws its own masks, so the resumed ranks must each get their own
# random state back (their streams differ: their rows, and so the masks drawn, differ in size).
SETTINGS = ("train.batching=pad", "train.max_steps=30", "train.save_every=5", "train.keep_checkpoints=2",
            "train.eval_every=15", "train.precision=fp32", "train.device=cpu", "lora.dropout=0.1",
            "output.save_merged=false", "data.audit=off", "eval.compare=false")
ADAPTER = "adapter/adapter_model.safetensors"


def losses_by_step(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: torchrun starts each rank in a session of its own, so killing the
    launcher's process group would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(int(stat.parent.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def kill_when(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """SIGKILL the launcher as soon as `path` exists; its ranks must stop with it (they are told by
    the kernel: PR_SET_PDEATHSIG), not train on into the run folder a resume then shares."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.002)
    ranks = descendants(process.pid)
    assert ranks, "no rank was running"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while (alive := [rank for rank in ranks if _running(rank)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    for rank in alive:  # leave nothing running, then fail
        os.kill(rank, signal.SIGKILL)
    assert not alive, f"ranks {alive} outlived their launcher"


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, parent pid, ...; empty once it has ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Neither gone nor a zombie (an orphan's parent, pid 1 here, may never reap it)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def start(args: list[str]) -> subprocess.Popen:
    source = str(Path(tunesmith.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "tunesmith.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def test_two_processes_killed_and_resumed_end_as_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path):
    train, validation = rows(tmp_path)
    overrides = [*SETTINGS, f"data.validation={validation}", "train.batch_size=2"]
    reference = launch([*cli_args(tmp_path, tiny_model_dir, train, *overrides, name="reference"), "--nproc", "2"])
    assert reference.returncode == 0, reference.stderr[-3000:]

    args = [*cli_args(tmp_path, tiny_model_dir, train, *overrides, name="killed"), "--nproc", "2"]
    run = tmp_path / "runs" / "killed"
    process = start(args)
    checkpoint = run / "checkpoints" / "step-0000005"
    kill_when(checkpoint, process)
    assert not (run / "manifest.json").exists()  # it really died mid-run
    assert max(losses_by_step(run)) < 30
    assert sorted(p.name for p in checkpoint.glob("rng*")) == ["rng-rank-1.safetensors", "rng.safetensors"]
    # the ranks' generators differ here, so a rank given the other's would draw other masks
    assert not torch.equal(weights(checkpoint / "rng.safetensors")["torch"],
                           weights(checkpoint / "rng-rank-1.safetensors")["torch"])

    resumed = launch([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step-0000005" in resumed.stderr  # killed within milliseconds of its writing
    difference = max_difference(weights(tmp_path / "runs" / "reference" / ADAPTER), weights(run / ADAPTER))
    assert difference < 1e-6, difference  # measured: 0.0 (0.126 when rank 1 gets rank 0's random state)
    reference_losses, resumed_losses = losses_by_step(tmp_path / "runs" / "reference"), losses_by_step(run)
    assert sorted(resumed_losses) == list(range(1, 31))
    assert all(abs(reference_losses[s] - resumed_losses[s]) < 1e-5 for s in reference_losses)


def test_one_process_resumes_on_two_with_half_the_batch(tmp_path: Path, tiny_model_dir: Path):
    """1 x 4 rows a micro-batch for 6 steps; then its step-6 checkpoint removed and the run resumed
    from step 3 on 2 processes x 2: the same weights, to float tolerance."""
    train, validation = rows(tmp_path)
    overrides = [*SETTINGS, f"data.validation={validation}", "lora.dropout=0.0", "train.max_steps=6",
                 "train.eval_every=3", "train.save_every=3", "train.learning_rate=1e-3"]
    whole = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=4", name="moved"),
                            show_progress=False)
    uninterrupted = weights(whole.run_dir / ADAPTER)
    shutil.rmtree(whole.run_dir / "checkpoints" / "step-0000006")  # as if it had died after step 5

    args = [*cli_args(tmp_path, tiny_model_dir, train, *overrides, name="moved"), "--nproc", "2", "--resume"]
    refused = launch([*args, "--set", "train.batch_size=4"])  # 2 x 4 rows: refused before any process starts
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "this run's steps have 4 rows a micro-batch (1 process x train.batch_size=4), resuming with 2 x 4 would have 8; "
        "resume with --nproc 1 and train.batch_size=4, or set train.batch_size=2 so that 2 x 2 = 4")
    resumed = launch([*args, "--set", "train.batch_size=2"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the run of 1 process on 2 processes, batch 2 each: the same 4 rows a micro-batch" in resumed.stderr
    update = max(float(w.abs().max()) for name, w in uninterrupted.items() if "lora_B" in name)
    difference = max_difference(uninterrupted, weights(whole.run_dir / ADAPTER))
    assert update > 1e-3 and difference < min(2e-5, 1e-2 * update), difference  # measured: 7e-9 (update 3.5e-3)


@pytest.mark.slow  # two launches of 2 processes: 29 s on 2 idle cores, 100 s on busy ones; the default suite's budget
def test_fsdp_on_two_processes_trains_as_one_process_and_resumes_from_its_shards(tmp_path: Path, tiny_model_dir: Path):
    """Full fine-tuning sharded with FSDP2 (2 x batch 2) against one process with batch 4; then its
    step-6 checkpoint removed and the run resumed from the sharded step-3 one, on 2 processes and on 1."""
    train, validation = rows(tmp_path)
    overrides = [*SETTINGS, f"data.validation={validation}", "lora.enabled=false", "lora.dropout=0.0", "train.max_steps=6",
                 "train.eval_every=3", "train.save_every=3", "train.learning_rate=1e-3", "train.gradient_accumulation=2"]
    one = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=4", name="one"),
                          show_progress=False)
    args = [*cli_args(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=2", "distributed.strategy=fsdp",
                      name="fsdp"), "--nproc", "2"]
    sharded = launch(args)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "2 processes (FSDP), batch 2 each" in sharded.stderr
    run = tmp_path / "runs" / "fsdp"
    assert (run / "checkpoints" / "step-0000003" / "sharded" / ".metadata").is_file()
    assert not (run / "checkpoints" / "step-0000003" / "trainable.safetensors").exists()
    one_weights, fsdp_weights = weights(one.run_dir / "model/model.safetensors"), weights(run / "model/model.safetensors")
    update = max_difference(one_weights, weights(tiny_model_dir / "model.safetensors"))
    difference = max_difference(one_weights, fsdp_weights)
    print(f"fsdp vs one process: {difference:.3g} (update {update:.3g})")
    assert update > 1e-3 and difference < min(2e-5, 1e-2 * update), difference

    shutil.rmtree(run / "checkpoints" / "step-0000006")
    resumed = launch([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step-0000003" in resumed.stderr
    again = max_difference(fsdp_weights, weights(run / "model/model.safetensors"))
    print(f"fsdp resumed vs uninterrupted: {again:.3g}")
    assert again < 1e-6, again

    # the shards resumed by one process with batch 4 (torch.distributed.checkpoint reshards on load)
    shutil.rmtree(run / "checkpoints" / "step-0000006")
    tunesmith.train(tiny_config(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=4",
                                "distributed.strategy=fsdp", name="fsdp"), resume=True, show_progress=False)
    alone = max_difference(fsdp_weights, weights(run / "model/model.safetensors"))
    print(f"fsdp resumed by one process vs uninterrupted: {alone:.3g}")
    assert alone < min(2e-5, 1e-2 * update), alone
