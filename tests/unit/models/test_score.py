"""Likelihood scoring: the cached, batched path equals the model's own full forward, row by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tunesmith.data.examples import Message
from tunesmith.data.tokenize import encode_prompt
from tunesmith.models.generate import load_for_generation
from tunesmith.models.score import answer_ids, score_labels

LABELS = ["negative", "positive", "very positive indeed"]  # one- and multi-token answers
PROMPTS = [(Message("user", "Classify: a warm, funny film"),),
           (Message("system", "Be brief."), Message("user", "Classify this long and winding review of a dull film " * 3)),
           (Message("user", "Classify: meh"),)]


def _full_forward(loaded, prompt, label) -> float:
    prompt_ids = encode_prompt(loaded.tokenizer, loaded.info, list(prompt))
    answer = answer_ids(loaded, label)
    ids = torch.tensor([prompt_ids + answer])
    with torch.no_grad():
        log_probs = torch.log_softmax(loaded.model(input_ids=ids).logits[0].float(), dim=-1)
    return float(sum(log_probs[len(prompt_ids) - 1 + n, token] for n, token in enumerate(answer)))


def test_batched_cached_scores_equal_the_full_forward_of_each_row(tiny_model_dir: Path):
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")
    batched = score_labels(loaded, PROMPTS, LABELS, batch_size=3)
    alone = score_labels(loaded, PROMPTS, LABELS, batch_size=1)
    expected = np.array([[_full_forward(loaded, p, label) for label in LABELS] for p in PROMPTS])
    assert np.allclose(batched.log_probs, expected, atol=1e-4)
    assert np.allclose(alone.log_probs, expected, atol=1e-4)
    assert list(batched.token_counts) == [len(answer_ids(loaded, label)) for label in LABELS]


def test_the_answer_is_the_label_and_the_end_of_turn_as_training_teaches_it(tiny_model_dir: Path):
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")
    ids = answer_ids(loaded, "positive")
    assert loaded.tokenizer.decode(ids) == "positive<|im_end|>" and ids[-1] in loaded.info.stop_token_ids


def test_scoring_picks_the_label_a_model_is_made_to_prefer(tiny_model_dir: Path):
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")
    for favourite, other in (("negative", "positive"), ("positive", "negative")):
        token = answer_ids(loaded, favourite)[0]

        def prefer(module, inputs, output, token=token):
            output[..., token] += 30.0  # the head's logit for the favourite's first token, at every position
            return output

        hook = loaded.model.get_output_embeddings().register_forward_hook(prefer)
        try:
            scores = score_labels(loaded, PROMPTS, [other, favourite])
        finally:
            hook.remove()
        assert scores.predicted() == [favourite] * len(PROMPTS)


def test_length_normalization_can_change_the_decision():
    from tunesmith.models.score import LabelScores

    scores = LabelScores(["a", "a b c"], np.array([[-2.0, -3.0]]), np.array([1.0, 3.0]), 0.0)
    assert scores.predicted() == ["a"] and scores.predicted(normalized=True) == ["a b c"]


def test_a_shared_prefix_runs_once_and_scores_equal_the_full_forward(tiny_model_dir: Path):
    """Prompts after the same block of shots (fixed few-shot): the block's pass is shared, each row's
    own tail is left-padded after it (padding in the middle), and every score equals the full
    forward of that row alone; a row with another prefix in the same batch falls back to no sharing."""
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")
    shots = (Message("system", "Label the review."), Message("user", "Review: a joy from start to end"),
             Message("assistant", "positive"), Message("user", "Review: two hours I will never get back"),
             Message("assistant", "negative"))
    tails = ["Review: fine", "Review: an overlong, tiresome and muddled sequel", "Review: loved it",
             "Review: the cast is wonderful but the plot is thin and the ending is rushed", "Review: no"]
    prompts = [shots + (Message("user", tail),) for tail in tails] + [PROMPTS[0]]
    calls = []
    hook = loaded.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                                  with_kwargs=True)
    try:
        shared = score_labels(loaded, prompts, LABELS, batch_size=5)
    finally:
        hook.remove()
    unshared = score_labels(loaded, prompts, LABELS, batch_size=5, share_prefix=False)
    expected = np.array([[_full_forward(loaded, p, label) for label in LABELS] for p in prompts])
    assert np.allclose(shared.log_probs, expected, atol=1e-4)
    assert np.allclose(unshared.log_probs, expected, atol=1e-4)
    block = len(encode_prompt(loaded.tokenizer, loaded.info, list(shots)))
    assert any(shape[0] == 1 and shape[1] >= block - 8 for shape in calls)  # the shots ran once, alone
    assert max(shape[1] for shape in calls if shape[0] == 5) < block  # the batch of five ran only its tails
