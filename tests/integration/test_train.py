"""Train the tiny model end to end and check what a user gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tunesmith
from tests.conftest import chat_rows, write_jsonl
from tests.integration.helpers import max_difference, tiny_config, weights
from tunesmith.errors import DataError, RunError


def test_lora_run_learns_and_writes_outputs_that_load_anywhere(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=24", "train.eval_every=8", "train.save_every=8")
    result = tunesmith.train(config, show_progress=False)
    run = result.run_dir

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4  # it learned
    assert records[0] == {"step": 0, "val_loss": result.baseline_val_loss, "val_ppl": pytest.approx(records[0]["val_ppl"])}
    assert result.val_loss < result.baseline_val_loss
    for name in ("config.yaml", "manifest.json", "loss.png", "adapter/adapter_model.safetensors",
                 "adapter/adapter_config.json", "model/model.safetensors", "model/chat_template.jinja"):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["train"]["examples"] == 36 and manifest["data"]["validation"]["examples"] == 12
    assert manifest["data"]["files"][0]["sha256"] and manifest["versions"]["torch"] == torch.__version__
    assert manifest["results"]["steps"] == 24 and manifest["stop_token_ids"] == [2]

    # The merged model loads with plain transformers and equals base + adapter through peft.
    merged = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter").eval()
    ids = torch.tensor([[1, 9707, 28, 1524, 30, 2]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-4)
    assert merged.generation_config.eos_token_id == 2
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template

    reply = tunesmith.generate(str(run), "Repeat the word blue 2 times.", max_new_tokens=8)
    assert isinstance(reply, str)


def test_full_fine_tuning_changes_every_weight_and_lora_changes_none_of_the_base(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    base = weights(tiny_model_dir / "model.safetensors")
    full = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, "lora.enabled=false", "train.max_steps=3",
                                       name="full"), show_progress=False)
    assert not (full.run_dir / "adapter").exists()
    tuned = weights(full.run_dir / "model" / "model.safetensors")
    unchanged = [k for k in base if torch.equal(base[k], tuned[k])]
    assert unchanged == []

    lora = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=3", "output.save_merged=false",
                                       name="lora"), show_progress=False)
    assert not (lora.run_dir / "model").exists()
    adapter = weights(lora.run_dir / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert weights(tiny_model_dir / "model.safetensors").keys() == base.keys()
    assert max_difference(weights(tiny_model_dir / "model.safetensors"), base) == 0.0


def test_batch_1_x_accumulation_8_equals_batch_8_x_accumulation_1(tmp_path: Path, tiny_model_dir: Path):
    """The loss is averaged over the loss tokens of the whole step, so the split into micro-batches
    does not change the update (rows differ in length, so a per-micro-batch mean would). In fp32:
    bf16 rounds differently for each batch shape, which Adam amplifies for near-zero gradients."""
    data = write_jsonl(tmp_path / "rows.jsonl", chat_rows(32, seed=3))
    runs = {}
    for batch, accumulation in ((8, 1), (1, 8), (2, 4)):
        config = tiny_config(tmp_path, tiny_model_dir, data, f"train.batch_size={batch}",
                             f"train.gradient_accumulation={accumulation}", "train.batching=pad", "train.max_steps=3",
                             "lora.enabled=false", "train.learning_rate=1e-3", "data.validation_split=0", "train.precision=fp32",
                             name=f"b{batch}-a{accumulation}")
        runs[(batch, accumulation)] = weights(tunesmith.train(config, show_progress=False).run_dir / "model" / "model.safetensors")
    update = max_difference(runs[(8, 1)], weights(tiny_model_dir / "model.safetensors"))
    assert update > 1e-3
    # float noise only: a wrongly normalised step moves many weights by about the learning rate
    assert max_difference(runs[(8, 1)], runs[(1, 8)]) < 1e-2 * update
    assert max_difference(runs[(8, 1)], runs[(2, 4)]) < 1e-2 * update


def test_gradient_is_the_per_token_mean_however_the_step_is_split(tiny_model_dir: Path, tokenizer):
    """The same invariant at the level of gradients (Adam's first step hides a scale error)."""
    from transformers import AutoModelForCausalLM

    from tunesmith.data.batches import collate
    from tunesmith.data.examples import Example, Message
    from tunesmith.data.template import analyze_template
    from tunesmith.data.tokenize import tokenize_examples
    from tunesmith.training.loop import train_step
    from tunesmith.training.loss import causal_lm_loss_sum

    rows = chat_rows(6, seed=5)
    examples = [Example("t", i, "chat", messages=tuple(Message(m["role"], m["content"]) for m in r["messages"]))
                for i, r in enumerate(rows)]
    tokenized = tokenize_examples(examples, tokenizer, analyze_template(tokenizer, 2), "assistant")
    assert len({t.n_loss_tokens for t in tokenized}) > 1  # unequal lengths, or the test proves nothing
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def gradient(window: list) -> torch.Tensor:
        model.zero_grad()
        train_step(model, window, causal_lm_loss_sum, torch.device("cpu"), "fp32")
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    whole = gradient([collate(tokenized, [[i] for i in range(6)], 2)])
    split = gradient([collate(tokenized, [[i]], 2) for i in range(6)])
    assert torch.allclose(whole, split, atol=1e-6, rtol=1e-4)
    model.zero_grad()
    for i in range(6):  # the naive way: mean per micro-batch, divided by the number of micro-batches
        (causal_lm_loss_sum(model, collate(tokenized, [[i]], 2)) / tokenized[i].n_loss_tokens / 6).backward()
    naive = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert not torch.allclose(whole, naive, atol=1e-6, rtol=1e-4)


def test_early_stopping_ends_the_run_and_keeps_the_best_weights(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=50", "train.eval_every=2",
                         "train.early_stopping_patience=2", "train.early_stopping_min_delta=100")
    result = tunesmith.train(config, show_progress=False)
    assert result.stopped_early
    assert result.steps == 6  # evaluations at 2 (best), 4 and 6 (no improvement of 100) -> stop
    assert result.best_step == 2


def test_bad_data_stops_before_training_and_keeps_the_old_run(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    good = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=2"), show_progress=False)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "only a question"}]}])
    with pytest.raises(DataError, match="bad.jsonl:1: the conversation does not end with an assistant reply"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, bad, "output.overwrite=true"), show_progress=False)
    assert (good.run_dir / "model" / "model.safetensors").is_file()  # nothing already saved was lost


def test_skip_invalid_trains_on_the_rest_and_reports_the_count(tmp_path: Path, tiny_model_dir: Path, capsys):
    rows = chat_rows(20) + [{"messages": [{"role": "assistant", "content": "x"}]}, "{not json"]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, data, "data.skip_invalid=true", "train.max_steps=1"),
                             show_progress=False)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["data"]["skipped_rows"] == 2
    assert manifest["data"]["train"]["examples"] + manifest["data"]["validation"]["examples"] == 20
    assert "skipped 2 invalid rows" in capsys.readouterr().err


def test_an_existing_run_is_not_overwritten_without_asking(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=1")
    tunesmith.train(config, show_progress=False)
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        tunesmith.train(config, show_progress=False)
    with pytest.raises(RunError, match="cannot resume with different settings .*train.learning_rate"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=1", "train.learning_rate=1e-4"),
                        resume=True, show_progress=False)
    with pytest.raises(RunError, match="no checkpoint to resume from"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, name="never-started"), resume=True, show_progress=False)


def test_overwrite_keeps_the_old_run_when_the_new_model_fails_to_load(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    import shutil

    good = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=1"), show_progress=False)
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")  # tokenizer and config load; the weights do not
    with pytest.raises(tunesmith.TunesmithError):
        tunesmith.train(tiny_config(tmp_path, broken, chat_file, "output.overwrite=true"), show_progress=False)
    assert (good.run_dir / "model" / "model.safetensors").is_file()  # nothing already saved was lost
    assert (good.run_dir / "manifest.json").is_file()


def test_output_outside_the_runs_folder_is_refused_before_anything_is_touched(tmp_path: Path, tiny_model_dir: Path,
                                                                             chat_file: Path):
    from tunesmith.cli import main

    precious = tmp_path / "Documents"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    for name in (str(precious), "../Documents"):
        code = main(["train", "--model", str(tiny_model_dir), "--data", str(chat_file), "--output", name, "--no-progress",
                     "--set", f"output.dir={tmp_path / 'runs'}", "--set", "output.overwrite=true"])
        assert code == 2
    assert (precious / "notes.txt").read_text() == "keep me"
