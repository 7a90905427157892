"""Classification heads read each row at the end of its attention mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.models.classifier_models import (
    TEXTS,
    read_alone,
    save_mismatched_pad_model,
)
from tunesmith.models.classifier import (
    Classifier,
    predict_probabilities,
)


@pytest.fixture(scope="module")
def mismatched_pad_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    return save_mismatched_pad_model(tmp_path_factory.mktemp("pad-mismatch"), tokenizer)


def test_batched_predictions_equal_each_row_read_alone_whatever_the_pad_ids(mismatched_pad_dir: Path, tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(mismatched_pad_dir, num_labels=3).eval()
    assert model.config.pad_token_id == 0 and tokenizer.pad_token_id == 2
    alone = np.stack([torch.softmax(read_alone(model, tokenizer(text)["input_ids"]), -1).numpy() for text in TEXTS])
    batched = predict_probabilities(Classifier(model, tokenizer, ["a", "b", "c"], "tiny"), TEXTS, batch_size=8)
    assert np.ptp(alone, axis=0).max() > 0.05  # the rows read differently: a read at the wrong column would show
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_a_trained_classifier_keeps_its_pad_id_equal_to_its_tokenizers(mismatched_pad_dir: Path, tokenizer, tmp_path: Path):
    """The saved model/ folder reads right-padded batches right in plain transformers too."""
    from transformers import AutoModelForSequenceClassification

    from tunesmith.config import RunConfig
    from tunesmith.data.pipeline import PreparedData
    from tunesmith.data.tasks import LabelTask
    from tunesmith.models.load import resolve_model
    from tunesmith.training.classify import CLASSIFY

    data = PreparedData([], [], [], task=LabelTask(("a", "b", "c"), "{text}"))
    model = CLASSIFY.load_model(resolve_model(str(mismatched_pad_dir)), RunConfig(), torch.float32, data)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    model.save_pretrained(tmp_path / "model")
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    texts = [text for text in TEXTS if not text.endswith(">")]  # the library's head skips a final pad token
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        batched = saved(**batch).logits
    alone = torch.stack([read_alone(saved, tokenizer(text)["input_ids"]) for text in texts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
