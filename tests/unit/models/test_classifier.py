"""Classification heads read each row at the end of its attention mask, within the model's positions,
and a folder that holds no classifier is refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.models.classifier_models import (
    TEXTS,
    read_alone,
    save_mismatched_pad_model,
    tiny_llama_config,
)
from tunesmith.errors import ModelError
from tunesmith.models.classifier import (
    Classifier,
    load_classifier,
    position_limit,
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


def tiny_encoder(kind: str, positions: int, tokenizer):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    settings = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=positions, num_labels=2)
    torch.manual_seed(0)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(**settings, pad_token_id=tokenizer.pad_token_id)).eval()
    return RobertaForSequenceClassification(RobertaConfig(**settings, pad_token_id=1)).eval()


@pytest.mark.parametrize("kind, positions, readable", [("bert", 24, 24), ("roberta", 26, 24)])
def test_predictions_stay_within_the_models_positions(kind: str, positions: int, readable: int, tokenizer):
    """BERT reads 24 tokens from 24 positions; RoBERTa counts positions from its pad id + 1, so 26 hold 24."""
    model = tiny_encoder(kind, positions, tokenizer)
    assert position_limit(model) == readable
    long_text = " ".join(["word"] * 100)
    probabilities = predict_probabilities(Classifier(model, tokenizer, ["no", "yes"], "tiny"), [long_text, "short"])
    assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(axis=1), 1)


def test_rotary_positions_set_no_limit(tokenizer):
    from transformers import LlamaForSequenceClassification

    assert position_limit(LlamaForSequenceClassification(tiny_llama_config(tokenizer, pad_token_id=2))) is None


def test_a_folder_without_a_classifier_is_refused_with_the_fix(tiny_model_dir: Path, tmp_path: Path):
    with pytest.raises(ModelError, match=rf"{tiny_model_dir}: holds a LlamaForCausalLM model, not a classification head; "
                                         "give the run folder of a train.method=classify run"):
        load_classifier(str(tiny_model_dir))

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=rf"{broken}: config.json could not be read .*train.method=classify"):
        load_classifier(str(broken))

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ModelError, match=rf"{unknown}: config.json could not be read"):
        load_classifier(str(unknown))

    adapter_only = tmp_path / "run"
    (adapter_only / "adapter").mkdir(parents=True)
    with pytest.raises(ModelError, match="kept only its adapter; train it again with output.save_merged=true"):
        load_classifier(str(adapter_only))


def test_predictions_read_as_many_tokens_as_the_run_trained_on(tmp_path: Path, tokenizer):
    from transformers import LlamaForSequenceClassification

    from tests.unit.models.classifier_models import tiny_llama_config

    run = tmp_path / "run"
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, pad_token_id=2, num_labels=2,
                                                             id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1}))
    model.save_pretrained(run / "model")
    tokenizer.save_pretrained(run / "model")
    (run / "config.yaml").write_text("data:\n  max_length: 6\n")
    classifier = load_classifier(str(run))
    assert classifier.max_length == 6
    shared = "one two three four five six"
    first, second = predict_probabilities(classifier, [shared + " seven", shared + " eight nine ten"])
    assert np.allclose(first, second)  # both cut where training cut them
    longer = predict_probabilities(classifier, [shared + " seven", shared + " eight nine ten"], max_length=64)
    assert not np.allclose(longer[0], longer[1])
