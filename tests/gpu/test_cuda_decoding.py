"""Decoding on CUDA: evaluation's batched `generate` and the server's engine, whose rows for two
adapters of one base share a batch (peft's adapter_names), against each request decoded alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.gpu.tiny import needs_cuda

pytestmark = needs_cuda

PROMPTS = ["Name a colour.", "What is two plus two?", "Say hello in French.", "Which planet is largest?",
           "Give me a word that rhymes with cat, and then a long explanation of why it rhymes.",
           "List three fruits.", "Translate 'good morning' into Spanish, please, and say where it is used.", "Hi"]


def make_adapter_run(folder: Path, base_dir: Path, seed: int) -> Path:
    """A run folder holding a LoRA adapter on `base_dir` with random non-zero weights (as peft saves it)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(folder / "adapter")
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder / "adapter")
    (folder / "manifest.json").write_text(json.dumps({"method": "sft", "base_model": {"spec": str(base_dir)}}))
    return folder


@pytest.fixture(scope="module")
def adapter_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("cuda-adapters")
    return [make_adapter_run(root / name, tiny_model_dir, seed) for name, seed in (("bot-a", 1), ("bot-b", 2))]


def test_batched_greedy_generation_on_cuda_equals_one_at_a_time(tiny_model_dir: Path):
    """Evaluation decodes in fp32 (eval.precision) in left-padded batches: on CUDA every reply is
    the one its prompt gets alone, token for token."""
    from tunesmith.models.generate import generate, load_for_generation

    loaded = load_for_generation(str(tiny_model_dir), device="cuda", precision="fp32")
    assert next(loaded.model.parameters()).device.type == "cuda"
    batched = generate(loaded, PROMPTS, max_new_tokens=24, batch_size=len(PROMPTS))
    alone = generate(loaded, PROMPTS, max_new_tokens=24, batch_size=1)
    assert batched.token_ids == alone.token_ids
    assert batched.texts == alone.texts and sum(len(ids) for ids in alone.token_ids) > len(PROMPTS)


def engine_for(adapter_runs: list[Path], precision: str):
    """The server's models (a base and two adapters on it, on CUDA) and an engine whose thread is
    stopped: the test drives the decoding itself."""
    from tunesmith.serve.engine import Engine
    from tunesmith.serve.models import ServedModels

    models = ServedModels(device="cuda", precision=precision)
    adapters = [models.add_run(run) for run in adapter_runs]
    base = next(s for s in models.served.values() if s.kind == "base")
    engine = Engine(models)
    engine.close()
    return engine, models.backends[base.backend], [*adapters, base]


def rows_for(served: list, prompts: list[str], events: list, max_tokens: int = 16) -> list:
    """Greedy rows, one per (served model, prompt); what they send back lands in `events`."""
    from tunesmith.serve.engine import Row, Sampling

    return [Row(s, s.tokenizer(p, add_special_tokens=False)["input_ids"], Sampling(max_tokens=max_tokens, temperature=0),
                events.append) for s, p in zip(served, prompts)]


def test_two_adapters_in_one_batch_on_cuda_decode_as_each_alone(adapter_runs: list[Path]):
    """Rows for adapter a, adapter b and the bare base, in one fp32 batch on CUDA (prompts of
    different lengths: left padding), each decode the tokens they decode alone; the adapters'
    replies differ, so a row routed through the wrong adapter would show."""
    engine, backend, served = engine_for(adapter_runs, "fp32")
    prompts, events = PROMPTS[4:7], []
    alone = []
    for one, prompt in zip(served, prompts):
        rows = rows_for([one], [prompt], events)
        engine._decode(backend, rows)
        alone.append(rows[0].generated)
    together = rows_for(served, prompts, events)
    engine._decode(backend, together)
    assert [e.error for e in events if e.error is not None] == []
    assert [row.generated for row in together] == alone
    assert len({tuple(tokens) for tokens in alone}) == 3 and all(alone)


@torch.no_grad()
def test_two_adapters_in_one_bf16_batch_on_cuda_give_each_alone_logits(adapter_runs: list[Path]):
    """Served in bf16 (precision auto on a GPU), a mixed batch's prompt logits equal each row's alone
    to bf16 rounding, far closer than the adapters are to one another or to the base."""
    engine, backend, served = engine_for(adapter_runs, "bf16")
    prompts = PROMPTS[4:7]
    together = rows_for(served, prompts, [])
    engine._prepare(backend, together)
    mixed = engine._start(backend, together).logits
    alone = []
    for one, prompt in zip(served, prompts):
        rows = rows_for([one], [prompt], [])
        engine._prepare(backend, rows)
        alone.append(engine._start(backend, rows).logits[0])
    scale = max(float(logits.abs().max()) for logits in alone)
    for index, logits in enumerate(alone):
        assert float((mixed[index] - logits).abs().max()) <= 0.03 * scale, index
    assert float((alone[0] - alone[1]).abs().max()) > 0.2 * scale
    assert float((alone[0] - alone[2]).abs().max()) > 0.2 * scale
