"""The task-head methods (classify, token-classify, extractive-qa) share their set-up
(training/heads.py); each keeps what differs: which pad id its head's config takes, its batch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.models.classifier_models import save_mismatched_pad_model
from tunesmith.config import RunConfig, build_config
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.spans import IGNORE, Entity, SpanRow, tag_names
from tunesmith.data.tasks import LabelTask
from tunesmith.errors import DataError
from tunesmith.models.load import resolve_model
from tunesmith.training.classify import prepare_labelled_data
from tunesmith.training.extractive_qa import SpanExample, collate_spans
from tunesmith.training.session import get_method
from tunesmith.training.token_classify import TaggedExample, collate_tagged, encode_tagged

HEADS = {"classify": "SEQ_CLS", "token-classify": "TOKEN_CLS", "extractive-qa": "QUESTION_ANS"}


def test_every_head_method_reads_one_example_a_row_by_length_without_a_template():
    for name, task_type in HEADS.items():
        method = get_method(name)
        assert (method.peft_task_type, method.uses_chat_template, method.batching) == (task_type, False, "group_by_length")
        assert method.window_source is None and method.before_fit is None
        assert (method.after_fit is not None) == (name == "extractive-qa")  # the no-answer threshold


@pytest.fixture(scope="module")
def encoder_with_its_own_pad_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A tiny BERT whose config pad id (0) is not its tokenizer's (2)."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert-own-pad")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert tokenizer.pad_token_id == 2
    return folder


def head_data() -> PreparedData:
    return PreparedData([], [], [], task=LabelTask(("a", "b"), "{text}"), record={"tags": tag_names(["LOC"])})


@pytest.mark.parametrize(("name", "pad_id"), [("classify", 0), ("token-classify", 2), ("extractive-qa", 2)])
def test_a_heads_config_takes_the_tokenizers_pad_id_except_an_encoders_sequence_classifier(
        encoder_with_its_own_pad_dir: Path, name: str, pad_id: int):
    """An encoder's sequence head reads the first token, so classify leaves the encoder's pad id as it
    was; the tagging and QA heads get the id batches are padded with."""
    model = get_method(name).load_model(resolve_model(str(encoder_with_its_own_pad_dir)), RunConfig(), torch.float32,
                                        head_data())
    assert model.config.pad_token_id == pad_id
    if name != "extractive-qa":
        assert len(model.config.id2label) == (2 if name == "classify" else 3)  # the label map is in the config


def test_a_causal_lms_score_head_reads_the_tokenizers_pad_id(tmp_path: Path, tokenizer):
    model = get_method("classify").load_model(resolve_model(str(save_mismatched_pad_model(tmp_path / "llama", tokenizer))),
                                              RunConfig(), torch.float32, head_data())
    assert model.config.pad_token_id == 2 and model.config.id2label == {0: "a", 1: "b"}


def label_config(tmp_path: Path, *settings: str) -> RunConfig:
    rows = [["text", "label"]] + [[f"good film {i}", "positive"] for i in range(6)] + [[f"bad film {i}", "negative"] for i in range(6)]
    rows.append(["a very long review " * 8, "positive"])
    data = tmp_path / "rows.csv"
    with open(data, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return build_config({"data": {"train": str(data), "max_length": 16, "validation_split": 0}, "train": {"method": "classify"}},
                        list(settings))


def test_a_text_over_max_length_is_named_with_its_fix_or_cut_with_truncate(tmp_path: Path, tokenizer):
    length = len(tokenizer("a very long review " * 8)["input_ids"])
    with pytest.raises(DataError) as error:
        prepare_labelled_data(label_config(tmp_path), tokenizer, None)
    assert [(p.where.rsplit(":", 1)[1], p.what, p.fix) for p in error.value.problems] == [
        ("14", f"text is {length} tokens, over data.max_length=16", f"raise data.max_length to {length} or set data.truncate=true")]
    cut = prepare_labelled_data(label_config(tmp_path, "data.truncate=true"), tokenizer, None)
    assert len(cut.train) == 13 and max(len(e) for e in cut.train) == 16 and min(len(e) for e in cut.train) < 16


def test_tags_are_cut_with_their_tokens_or_the_row_is_named(tokenizer):
    rows = [SpanRow("f:1", "Wei Chen flew to Lima and then on to Oslo .", (Entity(0, 8, "PER"), Entity(17, 21, "LOC")))]
    tags = tag_names(["LOC", "PER"])
    whole, _ = encode_tagged(rows, tags, tokenizer, 64, False)
    _, problems = encode_tagged(rows, tags, tokenizer, 6, False)
    assert [(p.where, p.what) for p in problems] == [("f:1", f"text is {len(whole[0])} tokens, over data.max_length=6")]
    cut, problems = encode_tagged(rows, tags, tokenizer, 6, True)
    assert not problems and len(cut[0]) == len(cut[0].tag_ids) == 6
    assert cut[0].input_ids.tolist() == whole[0].input_ids[:6].tolist() and cut[0].tag_ids.tolist() == whole[0].tag_ids[:6].tolist()


def test_tag_and_span_batches_are_right_padded_with_their_targets_left_out_of_the_padding():
    tagged = [TaggedExample(np.array([5, 6, 7], dtype=np.int32), np.array([IGNORE, 1, 2]), "t", 1),
              TaggedExample(np.array([8], dtype=np.int32), np.array([0]), "t", 2)]
    batch = collate_tagged(tagged, [[0], [1]], pad_id=9)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 9, 9]] and batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE, 1, 2], [0, IGNORE, IGNORE]]
    assert (batch.n_loss_tokens, batch.n_tokens) == (3, 4) and torch.equal(batch.to("cpu").labels, batch.labels)

    spans = [SpanExample(np.array([5, 6], dtype=np.int32), np.array([0, 1], dtype=np.int32), 1, 1, "t", "1#1"),
             SpanExample(np.array([7, 8, 9], dtype=np.int32), np.array([0, 1, 1], dtype=np.int32), 0, 0, "t", "2#1")]
    batch = collate_spans(spans, [[0], [1]], pad_id=3)
    assert batch.input_ids.tolist() == [[5, 6, 3], [7, 8, 9]] and batch.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.token_type_ids.tolist() == [[0, 1, 0], [0, 1, 1]]
    assert (batch.starts.tolist(), batch.ends.tolist(), batch.n_loss_tokens, batch.n_tokens) == ([1, 0], [1, 0], 2, 5)
    untyped = [SpanExample(e.input_ids, None, e.start, e.end, e.source, e.line) for e in spans]
    assert collate_spans(untyped, [[0], [1]], pad_id=3).token_type_ids is None
