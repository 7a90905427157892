"""The output head gets a contiguous input: transformers' generate slices the hidden states to the
last position (logits_to_keep=1), and PyTorch's CPU matmul is ~180x slower on that strided slice in
bf16 (models/device.contiguous_output_head). The copy must change no number."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.data.examples import Message
from tunesmith.models.generate import generate, load_for_generation

PROMPTS = [[Message("user", "Count to three.")], [Message("user", "Name a colour, please, any colour you like.")]]


def test_generate_hands_the_head_a_strided_slice_and_the_head_sees_it_contiguous(tiny_model_dir: Path):
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")
    head = loaded.model.get_output_embeddings()
    seen: list[tuple[bool, tuple[int, ...]]] = []
    raw: list[bool] = []
    head.register_forward_pre_hook(lambda module, args: raw.append(args[0].is_contiguous()), prepend=True)
    head.register_forward_hook(lambda module, args, output: seen.append((args[0].is_contiguous(), tuple(args[0].shape))))
    hooked = generate(loaded, PROMPTS, max_new_tokens=4, batch_size=2)
    assert seen[0][1][1] == 1  # the prefill asks for the last position only
    assert raw[0] is False  # transformers passes a slice of the prompt's hidden states (what the hook is for)
    assert all(contiguous for contiguous, _ in seen)
    head._forward_pre_hooks.clear()  # without the copy: the same answers, token for token
    plain = generate(loaded, PROMPTS, max_new_tokens=4, batch_size=2)
    assert plain.token_ids == hooked.token_ids


def test_the_copy_gives_the_same_logits_in_bf16():
    head = torch.nn.Linear(64, 1000, bias=False).to(torch.bfloat16)
    hidden = torch.randn(3, 7, 64, dtype=torch.bfloat16)
    sliced = hidden[:, -1:, :]
    assert not sliced.is_contiguous()
    assert torch.equal(head(sliced), head(sliced.contiguous()))
