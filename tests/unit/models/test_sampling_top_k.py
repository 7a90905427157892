"""Sampling draws from the whole distribution unless a top_k is asked for: transformers would add its
GenerationConfig default (top_k=50) to any model whose generation_config.json does not set one, so
GRPO's and online DPO's samples would come from a cut distribution their log-probabilities are not
measured on. The tiny random model's next-token distribution is nearly flat over 49,152 tokens: 200
first tokens sampled from it are nearly all different, and never more than k with a top-k cut."""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.examples import Message
from tunesmith.models.generate import generate, load_for_generation


def first_tokens(loaded, top_k: int) -> set[int]:
    prompts = [[Message("user", "Say anything.")]] * 200
    return {ids[0] for ids in generate(loaded, prompts, max_new_tokens=1, temperature=1.0, top_k=top_k,
                                       batch_size=100, seed=3).token_ids}


def test_sampling_uses_the_whole_distribution_unless_top_k_is_set(tiny_model_dir: Path):
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")
    assert loaded.model.generation_config.top_k in (None, 50)  # nothing in the model's own config cuts it
    assert len(first_tokens(loaded, top_k=0)) > 100
    assert len(first_tokens(loaded, top_k=20)) <= 20
