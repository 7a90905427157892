"""The tagging and QA losses against transformers' own heads, and batched equal to unbatched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.config import RunConfig
from tunesmith.data.qa import Answer, QARow
from tunesmith.data.spans import Entity, SpanRow, tag_names
from tunesmith.training.extractive_qa import collate_spans, encode_windows, span_loss
from tunesmith.training.token_classify import collate_tagged, encode_tagged, tagging_loss


@pytest.fixture(scope="module")
def wordpiece(tiny_wordpiece_bert_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_wordpiece_bert_dir)


def tagged_examples(tokenizer):
    rows = [SpanRow("f:1", "Wei Chen flew to Lima .", (Entity(0, 8, "PER"), Entity(17, 21, "LOC"))),
            SpanRow("f:2", "Unbelievably , Acme Corporation hired Anna Berg yesterday in Oslo .",
                    (Entity(15, 31, "ORG"), Entity(38, 47, "PER"), Entity(61, 65, "LOC")))]
    examples, problems = encode_tagged(rows, tag_names(["LOC", "ORG", "PER"]), tokenizer, 64, False)
    assert not problems
    return examples


def test_the_tagging_loss_is_transformers_token_classification_loss(tiny_wordpiece_bert_dir: Path, wordpiece):
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_wordpiece_bert_dir, num_labels=7).eval()
    examples = tagged_examples(wordpiece)
    batch = collate_tagged(examples, [[0], [1]], wordpiece.pad_token_id)
    with torch.no_grad():
        ours = tagging_loss(RunConfig(), None)(model, batch) / batch.n_loss_tokens
        theirs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    # the first sub-token of each word is labelled; later sub-tokens ("Unbelievably" has several) and
    # the special tokens are not
    assert batch.n_loss_tokens == 6 + 11 < int(batch.attention_mask.sum()) - 4


def qa_examples(tokenizer):
    context = "The old mill stands by the river. " * 6 + "Mara lives in Vesk and bakes bread."
    rows = [QARow("f:1", "1", "Where does Mara live?", context, (Answer("Vesk", context.index("Vesk")),)),
            QARow("f:2", "2", "Who bakes?", "Mara bakes bread.", (Answer("Mara", 0),)),
            QARow("f:3", "3", "Where was Mara born?", "Mara bakes bread.", ())]
    return encode_windows(rows, tokenizer, 40, 12)


@torch.no_grad()
def test_the_qa_loss_is_transformers_question_answering_loss_and_padding_changes_nothing(tiny_wordpiece_bert_dir: Path, wordpiece):
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_wordpiece_bert_dir).eval()
    examples = qa_examples(wordpiece)
    assert len(examples) > 3 and any(e.start > 0 for e in examples) and examples[-1].start == 0
    loss = span_loss(RunConfig(), None)
    for number in range(len(examples)):  # alone (no padding): exactly the head's own loss
        alone = collate_spans(examples, [[number]], wordpiece.pad_token_id)
        theirs = model(input_ids=alone.input_ids, attention_mask=alone.attention_mask, token_type_ids=alone.token_type_ids,
                       start_positions=alone.starts, end_positions=alone.ends).loss
        assert float(loss(model, alone)) == pytest.approx(float(theirs), rel=1e-5)
    together = collate_spans(examples, [[n] for n in range(len(examples))], wordpiece.pad_token_id)
    each = sum(float(loss(model, collate_spans(examples, [[n]], wordpiece.pad_token_id))) for n in range(len(examples)))
    assert float(loss(model, together)) == pytest.approx(each, rel=1e-5)  # padded columns never read


def test_qa_windows_carry_segment_ids_and_validation_is_held_out_by_question(tmp_path: Path, wordpiece):
    import json

    from tunesmith.config import build_config
    from tunesmith.training.extractive_qa import prepare_qa_data

    contexts = [f"Story {n}. " + "Filler words go here again and again. " * 8 + "Mara lives in Vesk." for n in range(20)]
    rows = [{"id": str(n), "context": contexts[n], "question": f"Where does Mara live {n}?",
             "answers": {"text": ["Vesk"], "answer_start": [contexts[n].index("Vesk")]}} for n in range(20)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = build_config({"data": {"train": str(data), "max_length": 48, "stride": 16, "validation_split": 0.25},
                           "train": {"method": "extractive-qa"}})
    prepared = prepare_qa_data(config, wordpiece, None)
    assert all(e.type_ids is not None and e.type_ids[-2] == 1 for e in prepared.train)
    questions = {e.where.split("#")[0] for e in prepared.train}, {e.where.split("#")[0] for e in prepared.validation}
    assert len(questions[1]) == 5 and not questions[0] & questions[1]  # every window of a question on one side
    assert len(prepared.train) > len(questions[0])  # long contexts gave several windows per question
    assert np.all([e.n_loss_tokens == 1 for e in prepared.train])


def test_the_stride_is_checked_only_for_extractive_qa():
    from tunesmith.config import build_config
    from tunesmith.errors import ConfigError

    build_config({"data": {"max_length": 64}})  # stride 128 is no concern of an SFT run
    with pytest.raises(ConfigError, match="data.stride=128 must be 0 or more and under half of data.max_length=64"):
        build_config({"data": {"max_length": 64}, "train": {"method": "extractive-qa"}})


def test_entities_a_tokenizer_cannot_tag_exactly_are_named_in_one_warning(tokenizer):
    # SmolLM2 keeps "++" one token: only its first "+" can carry a tag, so "C++" would come back as "C+";
    # "Macy's" ("'s" is one token) round-trips and is not named
    rows = [SpanRow("f:1", "She writes C++ at Macy's .", (Entity(11, 14, "MISC"), Entity(18, 24, "ORG"))),
            SpanRow("f:2", "Macy's hired Anna .", (Entity(0, 6, "ORG"), Entity(13, 17, "PER")))]
    with pytest.warns(UserWarning, match=r"1 entit.* f:1 'C\+\+' would come back as 'C\+'") as caught:
        examples, problems = encode_tagged(rows, tag_names(["MISC", "ORG", "PER"]), tokenizer, 64, False)
    assert len(caught) == 1 and not problems and len(examples) == 2
