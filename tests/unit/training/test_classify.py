"""The classification loss reads each example where it ends, whatever its batch; the trained weights
are fp32 under bf16; examples past the model's positions are refused before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.unit.models.classifier_models import TEXTS, read_alone, save_mismatched_pad_model
from tunesmith.config import LoraConfig, RunConfig, build_config
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.tasks import LabelTask
from tunesmith.errors import ConfigError
from tunesmith.models.adapters import make_trainable
from tunesmith.models.load import load_sequence_classifier, resolve_model
from tunesmith.training.classify import (
    CLASSIFY,
    LabelledExample,
    classification_loss,
    collate_labelled,
)

LABELS = ("a", "b", "c")


@pytest.fixture(scope="module")
def mismatched_pad_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    return save_mismatched_pad_model(tmp_path_factory.mktemp("pad-mismatch"), tokenizer)


def labelled(tokenizer, texts: list[str]) -> list[LabelledExample]:
    return [LabelledExample(np.asarray(tokenizer(text)["input_ids"], dtype=np.int32), n % len(LABELS), "t", n)
            for n, text in enumerate(texts)]


@pytest.mark.parametrize("lora", [False, True])
def test_a_batch_loss_is_the_sum_of_its_examples_read_alone_whatever_the_pad_ids(mismatched_pad_dir: Path, tokenizer,
                                                                                 lora: bool):
    """Config pad id 0, batches padded with the tokenizer's 2, texts ending in either."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(mismatched_pad_dir, num_labels=len(LABELS)).eval()
    examples = labelled(tokenizer, TEXTS)
    alone = torch.stack([read_alone(model, e.input_ids.tolist()) for e in examples])
    expected = F.cross_entropy(alone, torch.tensor([e.label_id for e in examples]), reduction="sum")
    if lora:
        model = make_trainable(model, LoraConfig(rank=4, alpha=8, dropout=0.0), task_type="SEQ_CLS")
    data = PreparedData(examples, [], [], task=LabelTask(LABELS, "{text}"))
    loss_sum = classification_loss(RunConfig(), data)
    with torch.no_grad():
        batched = loss_sum(model, collate_labelled(examples, [[n] for n in range(len(examples))], tokenizer.pad_token_id))
        one_by_one = sum(loss_sum(model, collate_labelled(examples, [[n]], tokenizer.pad_token_id)) for n in range(len(examples)))
    torch.testing.assert_close(batched, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(one_by_one, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("lora", [True, False])
def test_every_trained_weight_is_fp32_on_a_bf16_base_and_a_bf16_step_trains_the_head(tiny_model_dir: Path, tokenizer,
                                                                                   lora: bool):
    model = load_sequence_classifier(resolve_model(str(tiny_model_dir)), list(LABELS), pad_token_id=2, dtype=torch.bfloat16)
    model = make_trainable(model, LoraConfig(enabled=lora, rank=4, alpha=8, dropout=0.0), task_type="SEQ_CLS")
    trained = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    heads = [name for name in trained if ".score." in name or name.startswith("score.")]
    assert heads and {name: p.dtype for name, p in trained.items() if p.dtype != torch.float32} == {}
    if lora:  # the frozen base stays in bf16
        assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}

    examples = labelled(tokenizer, TEXTS)
    batch = collate_labelled(examples, [[n] for n in range(len(examples))], tokenizer.pad_token_id)
    loss_sum = classification_loss(RunConfig(), PreparedData(examples, [], [], task=LabelTask(LABELS, "{text}")))
    optimizer = torch.optim.AdamW(trained.values(), lr=1e-3)
    before = {name: trained[name].detach().clone() for name in heads}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_sum(model, batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(before[name], trained[name]) for name in heads)  # an fp32 head takes a 1e-3 step
    assert all(trained[name].dtype == torch.float32 for name in heads)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A 2-layer BERT with 24 positions."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-24")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=24, pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_examples_past_the_models_positions_are_refused_before_training(tiny_bert_dir: Path, tokenizer):
    config = build_config({"model": {"name": str(tiny_bert_dir)}, "data": {"max_length": 64}})
    fits, too_long = labelled(tokenizer, ["short text"]), labelled(tokenizer, [" ".join(["word"] * 30)])
    data = PreparedData(fits, too_long, [], task=LabelTask(("no", "yes"), "{text}"))
    with pytest.raises(ConfigError, match=rf"data.max_length=64 is over the 24 positions {tiny_bert_dir} can read "
                                          r"\(the longest example is 30 tokens\); set data.max_length=24"):
        CLASSIFY.load_model(resolve_model(str(tiny_bert_dir)), config, torch.float32, data)
    # data.max_length above the positions is harmless while every example fits (the default 1024 on MiniLM)
    fitting = PreparedData(fits, fits, [], task=LabelTask(("no", "yes"), "{text}"))
    model = CLASSIFY.load_model(resolve_model(str(tiny_bert_dir)), config, torch.float32, fitting)
    assert model.config.max_position_embeddings == 24
