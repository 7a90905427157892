"""The classification loss reads each example where it ends, whatever its batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.unit.models.classifier_models import TEXTS, read_alone, save_mismatched_pad_model
from tunesmith.config import LoraConfig, RunConfig
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.tasks import LabelTask
from tunesmith.models.adapters import make_trainable
from tunesmith.training.classify import (
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
