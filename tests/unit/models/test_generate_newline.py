"""Stopping at the end of the first line: the answer is the first line of the unstopped answer."""

from __future__ import annotations

from pathlib import Path

from tunesmith.models.generate import generate, load_for_generation

PROMPTS = ["List three colours, one per line.", "Write a short poem about the sea.",
           "Give me a numbered list of three fruits.", "Name a fruit and then, on a new line, a vegetable."]


def test_stop_at_newline_returns_the_first_line_and_batches_like_one_at_a_time(smollm2_dir: Path):
    loaded = load_for_generation(str(smollm2_dir), precision="fp32")
    full = generate(loaded, PROMPTS, max_new_tokens=40, batch_size=4)
    assert sum("\n" in text for text in full.texts) >= 3  # the prompts do draw several lines
    stopped = generate(loaded, PROMPTS, max_new_tokens=40, batch_size=4, stop_at_newline=True)
    alone = generate(loaded, PROMPTS, max_new_tokens=40, batch_size=1, stop_at_newline=True)
    assert stopped.texts == alone.texts
    for whole, first in zip(full.texts, stopped.texts):
        assert "\n" not in first and first == whole.strip().split("\n")[0].strip()
    assert stopped.new_tokens < full.new_tokens
    assert all(reason == "stop" for text, reason in zip(full.texts, stopped.finish_reasons) if "\n" in text.strip())
