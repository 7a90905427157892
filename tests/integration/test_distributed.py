"""Data parallelism on CPU (gloo, real processes started by torchrun's agent): N processes with
batch b each train as one process with batch N x b does, to float tolerance."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tunesmith
from tests.conftest import chat_rows, write_jsonl
from tests.integration.helpers import cli_args, max_difference, tiny_config, weights
from tunesmith.training.metrics import read_metrics

# 21 training rows: with 4 rows a micro-batch, each epoch ends with a micro-batch of one row, so the
# second process has nothing of it (and must still join the gradient averaging, adding zero).
# fp32 and a modest learning rate: Adam divides by the root of the squared gradients, which turns
# float noise in near-zero gradients into steps of up to the learning rate.
SETTINGS = ("train.batching=pad", "train.gradient_accumulation=2", "train.max_steps=6", "train.eval_every=3",
            "train.precision=fp32", "train.device=cpu", "train.learning_rate=1e-3",
            "eval.compare=false")  # no evaluation after training (pretrain measures general-text perplexity)


def launch(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """`tunesmith ARGS` in a fresh interpreter, as a user runs it."""
    source = str(Path(tunesmith.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def rows(tmp_path: Path, method: str = "sft") -> tuple[Path, Path]:
    train, validation = chat_rows(21, seed=3), chat_rows(6, seed=4)
    if method == "pretrain":  # documents of plain text
        train, validation = ([{"text": " ".join(m["content"] for m in row["messages"])} for row in part]
                             for part in (train, validation))
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "validation.jsonl", validation)


@pytest.mark.parametrize("method, tuning, batching", [
    ("sft", "lora", "pad"),
    pytest.param("sft", "full", "group_by_length", marks=pytest.mark.slow),  # the default suite's 15 minutes
    pytest.param("pretrain", "lora", "pack", marks=pytest.mark.slow),  # rows of 32 tokens packed from several documents
])
def test_two_processes_with_batch_2_equal_one_process_with_batch_4(tmp_path: Path, tiny_model_dir: Path, method: str,
                                                                   tuning: str, batching: str):
    train, validation = rows(tmp_path, method)
    overrides = [*SETTINGS, f"train.method={method}", f"train.batching={batching}", f"data.validation={validation}",
                 f"lora.enabled={tuning == 'lora'}", "output.save_merged=false", "data.audit=off"]
    if method == "pretrain":
        overrides.append("data.max_length=32")
    one = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=4", name="one"),
                          show_progress=False)
    two = launch([*cli_args(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=2", name="two"), "--nproc", "2"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run folder:") == 1  # rank 0 alone reports
    assert "2 processes (DDP), batch 2 each" in two.stderr
    two_dir = tmp_path / "runs" / "two"

    file = "adapter/adapter_model.safetensors" if tuning == "lora" else "model/model.safetensors"
    one_weights, two_weights = weights(one.run_dir / file), weights(two_dir / file)
    if tuning == "full":
        update = max_difference(one_weights, weights(tiny_model_dir / "model.safetensors"))
    else:  # LoRA's B matrices start at zero
        update = max(float(w.abs().max()) for name, w in one_weights.items() if "lora_B" in name)
    assert update > 1e-3  # it trained
    # float noise only (measured: 6e-8 LoRA, 6e-6 full fine-tuning); a wrongly scaled or wrongly split
    # step moves many weights by about the learning rate
    assert max_difference(one_weights, two_weights) < min(2e-5, 1e-2 * update)

    one_records, two_records = read_metrics(one.run_dir / "metrics.jsonl"), read_metrics(two_dir / "metrics.jsonl")
    assert [r["step"] for r in one_records] == [r["step"] for r in two_records] == [0, 1, 2, 3, 4, 5, 6]
    for a, b in zip(one_records, two_records):
        for key in ("loss", "val_loss", "loss_tokens", "tokens", "epoch"):
            assert (key in a) == (key in b), (a, b)
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)
    assert max(r.get("epoch", 0) for r in one_records) >= 1.5  # past an epoch's end, whose last micro-batch is short
    assert json.loads((two_dir / "manifest.json").read_text())["results"]["steps"] == 6


@pytest.mark.slow
def test_two_machines_of_one_process_each_train_as_one_process_with_their_batch(tmp_path: Path, tiny_model_dir: Path):
    """torchrun's multi-machine line, both "machines" on localhost: 2 nodes x 1 process x batch 2."""
    train, validation = rows(tmp_path)
    overrides = [*SETTINGS, f"data.validation={validation}", "output.save_merged=false", "data.audit=off"]
    one = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=4", name="one"),
                          show_progress=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend",
            "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes", "-m", "tunesmith",
            *cli_args(tmp_path, tiny_model_dir, train, *overrides, "train.batch_size=2", name="nodes")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tunesmith.__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [process.communicate(timeout=240) for process in nodes]
    assert [process.returncode for process in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum(out.count("run folder:") for out, _ in outputs) == 1  # from rank 0, on whichever node it is
    file = "adapter/adapter_model.safetensors"
    assert max_difference(weights(one.run_dir / file), weights(tmp_path / "runs" / "nodes" / file)) < 2e-5


def method_rows(tmp_path: Path, method: str) -> tuple[Path, list[str]]:
    """21 training rows of `method` (with 4 rows a micro-batch, an epoch's last micro-batch holds one,
    so the second process's share of it is empty) and the settings that read them."""
    if method in ("dpo", "simpo"):
        from tests.integration.test_preference import preference_rows

        return write_jsonl(tmp_path / "pairs.jsonl", preference_rows(27)), [
            "data.validation_split=0.2222", *(["preference.loss=simpo", "preference.beta=2.0"] if method == "simpo" else [])]
    if method == "classify":
        from tests.integration.test_eval import write_reviews_csv

        return write_reviews_csv(tmp_path / "reviews.csv", 27, seed=1), [
            "data.columns.text=review_text", "data.columns.label=verdict", "data.validation_split=0.2222"]
    from tests.integration.test_span_methods import write_conll, write_squad

    data = write_conll(tmp_path / "rows.conll", 27, seed=3) if method == "token-classify" else \
        write_squad(tmp_path / "rows.jsonl", 27, seed=3, unanswerable_every=5)
    return data, ["data.validation_split=0.2222", "data.max_length=48", "data.stride=16"]


def without_dropout(model_dir: Path, folder: Path) -> Path:
    """A copy of the model with dropout off: each process draws its own dropout masks, so with
    dropout no two splits of a batch train alike."""
    shutil.copytree(model_dir, folder)
    settings = json.loads((folder / "config.json").read_text())
    settings.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(settings))
    return folder


@pytest.mark.parametrize("method, tuning", [
    ("dpo", "lora"),  # the reference: the model with its adapter off, filled as pairs are first seen
    pytest.param("dpo", "full", marks=pytest.mark.slow),  # the reference table: each process computes its share
    pytest.param("simpo", "lora", marks=pytest.mark.slow),  # no reference; length-normalised log-probabilities
    pytest.param("classify", "lora", marks=pytest.mark.slow),
    pytest.param("classify", "full", marks=pytest.mark.slow),
    pytest.param("token-classify", "lora", marks=pytest.mark.slow),
    pytest.param("extractive-qa", "lora", marks=pytest.mark.slow),
])
def test_every_method_on_two_processes_with_batch_2_equals_one_process_with_batch_4(
        tmp_path: Path, request: pytest.FixtureRequest, method: str, tuning: str):
    """Pairs and labelled examples are counted over all processes as loss tokens are: the loss of a
    step is the mean over its pairs (its examples), whichever process holds them."""
    data, settings = method_rows(tmp_path, method)
    if method in ("token-classify", "extractive-qa"):
        model_dir = without_dropout(request.getfixturevalue("tiny_wordpiece_bert_dir"), tmp_path / "bert")
    else:
        model_dir = request.getfixturevalue("tiny_model_dir")
    overrides = [*SETTINGS, *settings, f"train.method={'dpo' if method == 'simpo' else method}", f"lora.enabled={tuning == 'lora'}",
                 "output.save_merged=false", "data.audit=off"]
    one = tunesmith.train(tiny_config(tmp_path, model_dir, data, *overrides, "train.batch_size=4", name="one"),
                          show_progress=False)
    two = launch([*cli_args(tmp_path, model_dir, data, *overrides, "train.batch_size=2", name="two"), "--nproc", "2"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes (DDP), batch 2 each" in two.stderr
    two_dir = tmp_path / "runs" / "two"

    file = "adapter/adapter_model.safetensors" if tuning == "lora" else "model/model.safetensors"
    one_weights, two_weights = weights(one.run_dir / file), weights(two_dir / file)
    if tuning == "full":
        start = weights(model_dir / "model.safetensors")
        update = max(float((one_weights[k].float() - start[k].float()).abs().max()) for k in one_weights if k in start)
    else:  # LoRA's B matrices start at zero
        update = max(float(w.abs().max()) for name, w in one_weights.items() if "lora_B" in name)
    assert update > 1e-3  # it trained
    # The span head's bias has a zero gradient in exact arithmetic (a softmax over positions ignores
    # a constant): Adam divides its rounding noise by its own root and steps by the learning rate.
    compared = [k for k in one_weights if not k.endswith("qa_outputs.bias")]
    differences = torch.cat([(one_weights[k].float() - two_weights[k].float()).abs().flatten() for k in compared])
    off = float((differences > 2e-5).float().mean())
    print(f"{method} {tuning}: largest weight difference {float(differences.max()):.2g} ({off:.1e} of the weights "
          f"over 2e-5), largest update {update:.2g}")
    # float noise (measured: dpo LoRA 3e-7, classify 2e-6 and 4e-6, token-classify 3e-8, extractive-qa
    # 2e-6; dpo full fine-tuning 3e-5 in one weight of 3.2 million, the rest under 1.1e-5); a wrongly scaled
    # or wrongly split step moves most weights by about the learning rate
    assert off < 1e-4 and float(differences.max()) < 0.1 * update

    one_records, two_records = read_metrics(one.run_dir / "metrics.jsonl"), read_metrics(two_dir / "metrics.jsonl")
    assert [r["step"] for r in one_records] == [r["step"] for r in two_records] == [0, 1, 2, 3, 4, 5, 6]
    for a, b in zip(one_records, two_records):
        for key in ("loss", "val_loss", "loss_tokens", "tokens", "epoch", "reward_accuracy", "drift"):
            assert (key in a) == (key in b), (a, b)
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)
    assert max(r.get("epoch", 0) for r in one_records) >= 1.5  # past an epoch's end, whose last micro-batch is short


@pytest.mark.parametrize("task", [
    "label",  # greedy answers mapped to labels, and each label's likelihood
    pytest.param("generation", marks=pytest.mark.slow),  # free-text answers and the references' perplexity
    pytest.param("classify", marks=pytest.mark.slow),  # a classification head's probabilities
])
def test_evaluation_after_training_on_two_processes_equals_one_process_on_the_same_weights(
        tmp_path: Path, tiny_model_dir: Path, task: str):
    """Each process decodes every other batch of the held-out rows; rank 0 writes what one process writes."""
    from tests.integration.test_eval import write_reviews_csv
    from tunesmith.pipeline.evaluate import evaluate_classifier_run, evaluate_run
    from tunesmith.pipeline.folder import run_config

    if task == "generation":
        train, _ = rows(tmp_path)
        test = write_jsonl(tmp_path / "test.jsonl", chat_rows(12, seed=5))
        columns = []
    else:
        train, test = write_reviews_csv(tmp_path / "reviews.csv", 24, seed=1), write_reviews_csv(tmp_path / "test.csv", 12, seed=2)
        columns = ["data.columns.text=review_text", "data.columns.label=verdict"]
    method = "classify" if task == "classify" else "sft"
    overrides = [*SETTINGS, *columns, f"train.method={method}", "train.max_steps=2", f"eval.test={test}",
                 "eval.compare=false", "eval.batch_size=3", "eval.max_new_tokens=12", "eval.precision=fp32",
                 "data.audit=off", "train.batch_size=2"]
    two = launch([*cli_args(tmp_path, tiny_model_dir, train, *overrides, name="two"), "--nproc", "2"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert f"evaluation: the rows of {test} shared out over 2 processes" in two.stderr
    run = tmp_path / "runs" / "two"
    shared = {name: (run / "eval" / name).read_text() for name in ("predictions.jsonl", "comparison.json")}

    config = run_config(run)  # the same weights, evaluated again by this one process
    (evaluate_classifier_run if task == "classify" else evaluate_run)(run, str(test), config.eval)
    alone = {name: (run / "eval" / name).read_text() for name in shared}
    assert shared["predictions.jsonl"] == alone["predictions.jsonl"]  # every row's answer, in the rows' order
    predictions = [json.loads(line) for line in alone["predictions.jsonl"].splitlines()]
    assert len(predictions) == 12
    timing = ("seconds", "tokens_per_s", "likelihood_seconds")
    systems = [{name: {k: v for k, v in figures.items() if k not in timing} for name, figures in
                json.loads(text)["systems"].items()} for text in (shared["comparison.json"], alone["comparison.json"])]
    if task == "generation":  # a mean over batches summed in another order
        ppl = [figures["fine-tuned"].pop("reference_ppl") for figures in systems]
        assert ppl[0] == pytest.approx(ppl[1], rel=1e-6)
    assert systems[0] == systems[1]


def test_a_method_that_cannot_train_on_several_processes_is_refused_before_any_starts(tmp_path: Path,
                                                                                     tiny_model_dir: Path):
    train, _ = rows(tmp_path)
    result = launch([*cli_args(tmp_path, tiny_model_dir, train, "train.method=online-dpo", name="online"),
                     "--nproc", "2"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1:] == [
        "error: train.method=online-dpo does not train on several processes: each round samples its pairs from the "
        "model as it trains, and processes sampling their shares would neither sample what one process samples nor "
        "agree on a round's micro-batches; run it as one process, without --nproc or torchrun"]


# Loaded by every process of the run (PYTHONPATH): rank 1 fails as its model loads, while rank 0
# goes on to wait for it in the first collective operation.
FAIL_ON_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    import tunesmith.training.session as session

    def fail(*args, **kwargs):
        raise RuntimeError("the disk is full")

    session.trainable_model = fail
"""


def test_an_error_on_one_rank_reaches_the_user_as_one_line_naming_it(tmp_path: Path, tiny_model_dir: Path):
    train, _ = rows(tmp_path)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_ON_RANK_1)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])
    try:
        result = launch([*cli_args(tmp_path, tiny_model_dir, train, "data.audit=off", name="fails"), "--nproc", "2"])
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: rank 1: tunesmith train failed: RuntimeError: the disk is full; run it again with --debug "
                      "for the full trace, and report it if the cause is not in your input"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
