"""What the loss sees, token by token: the text views `tunesmith data inspect` prints.

The command itself (which needs the model's tokenizer and a training method's rules) is in
tunesmith/pipeline/checks.py; this module only draws tokenized examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tunesmith.data.tokenize import TokenizedExample

GREEN, GREY, RESET = "\033[32;1m", "\033[2m", "\033[0m"


def length_stats(examples: list[TokenizedExample], max_length: int) -> str:
    if not examples:
        return "no usable examples"
    lengths = np.array([len(e) for e in examples])
    loss = sum(e.n_loss_tokens for e in examples)
    p50, p95 = np.percentile(lengths, [50, 95])
    return (f"tokens per example: min {lengths.min()}, median {p50:.0f}, 95th percentile {p95:.0f}, max {lengths.max()} "
            f"(data.max_length={max_length}); {loss} of {lengths.sum()} tokens "
            f"({100 * loss / lengths.sum():.0f}%) are in the loss")


def show_inline(example: TokenizedExample, tokenizer: Any, color: bool) -> str:
    """The example as text, with the loss-covered spans marked."""
    parts: list[str] = []
    start = 0
    mask = example.loss_mask
    while start < len(mask):
        end = start
        while end < len(mask) and mask[end] == mask[start]:
            end += 1
        text = tokenizer.decode(example.input_ids[start:end].tolist(), skip_special_tokens=False)
        if color:
            parts.append(f"{GREEN if mask[start] else GREY}{text}{RESET}")
        else:
            parts.append(f"[[{text}]]" if mask[start] else text)
        start = end
    return "".join(parts)


def show_table(example: TokenizedExample, tokenizer: Any) -> str:
    """One line per token: its id, whether the loss sees it, the vocabulary piece (SentencePiece's
    leading `▁` shows there, where decoding one token alone would drop it) and its decoded text."""
    rows = [f"{'#':>5}  {'id':>6}  loss  {'piece':<16}  text"]
    pieces = tokenizer.convert_ids_to_tokens(example.input_ids.tolist())
    for index, (token_id, in_loss) in enumerate(zip(example.input_ids.tolist(), example.loss_mask.tolist())):
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        rows.append(f"{index:>5}  {token_id:>6}  {'yes ' if in_loss else ' .  '}  {pieces[index]!s:<16}  {text!r}")
    return "\n".join(rows)
