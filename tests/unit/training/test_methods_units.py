import numpy as np
import pytest
import torch

from tunesmith.data.batches import collate, plan_epoch
from tunesmith.data.tokenize import TokenizedExample
from tunesmith.training.classify import LabelledExample, class_weights, collate_labelled
from tunesmith.training.pretrain import split_into_blocks


def document(length: int, start: int = 100) -> TokenizedExample:
    mask = np.ones(length, dtype=bool)
    mask[0] = False
    return TokenizedExample(np.arange(start, start + length, dtype=np.int32), mask, "doc", start)


def test_long_documents_are_cut_at_block_length_and_no_piece_predicts_across_a_cut():
    pieces = split_into_blocks([document(23), document(5, start=500)], block=10)
    assert [len(p) for p in pieces] == [10, 10, 3, 5]
    assert np.concatenate([p.input_ids for p in pieces[:3]]).tolist() == list(range(100, 123))
    assert all(not p.loss_mask[0] and p.loss_mask[1:].all() for p in pieces)


def test_packed_documents_restart_positions_and_never_predict_one_from_another():
    pieces = split_into_blocks([document(7), document(4, start=300), document(6, start=600)], block=8)
    plans = plan_epoch([len(p) for p in pieces], "pack", batch_size=1, max_length=12, seed=0, epoch=0)
    assert any(len(row) > 1 for plan in plans for row in plan)
    for plan in plans:
        batch = collate(pieces, plan, pad_id=0)
        positions = batch.position_ids if batch.position_ids is not None else torch.arange(batch.input_ids.shape[1]).expand_as(batch.input_ids)
        for row, indices in zip(range(len(plan)), plan):
            starts = np.cumsum([0] + [len(pieces[i]) for i in indices])[:-1]
            for start in starts:
                assert positions[row, start] == 0
                assert batch.labels[row, start] == -100  # the first token of a document is not a target
            assert sum(len(pieces[i]) for i in indices) <= 12


def test_balanced_class_weights_follow_the_scikit_learn_formula():
    examples = [LabelledExample(np.array([1, 2], dtype=np.int32), label, "t", n) for n, label in enumerate([0, 0, 0, 1])]
    weights = class_weights(examples, 3)
    assert weights.tolist() == pytest.approx([4 / (3 * 3), 4 / (3 * 1), 4 / (3 * 1)])


def test_labelled_batches_are_right_padded_with_an_attention_mask():
    examples = [LabelledExample(np.array([5, 6, 7], dtype=np.int32), 1, "t", 1), LabelledExample(np.array([8], dtype=np.int32), 0, "t", 2)]
    batch = collate_labelled(examples, [[0], [1]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [1, 0] and batch.n_loss_tokens == 2 and batch.n_tokens == 4
    assert torch.equal(batch.to("cpu").labels, batch.labels)
