"""Which stored rows drift reads, and which turn of them."""

from __future__ import annotations

import pytest

pytest.importorskip("sqlalchemy", reason="the store needs the serve extra (pip install -e .[serve])")

from tunesmith.improve.monitor.prompts import last_user_text, lengths, live_rows  # noqa: E402
from tunesmith.store.tables import CompletionRow  # noqa: E402


def test_the_last_user_turn_is_the_prompt():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]
    assert last_user_text(chat) == "second"
    parts = [{"role": "user", "content": [{"type": "text", "text": "look at"}, {"type": "text", "text": "this"}]}]
    assert last_user_text(parts) == "look at this"
    assert last_user_text([{"role": "system", "content": "only a system turn"}]) is None


def test_drift_reads_answered_chat_rows_only():
    def row(number: int, **fields) -> CompletionRow:
        return CompletionRow(id=f"c{number}", **{"endpoint": "chat", "error": None,
                                                 "messages": [{"role": "user", "content": "hi"}], **fields})

    rows = [row(1), row(2, error="generation failed"), row(3, endpoint="completions"),
            row(4, messages=[{"role": "system", "content": "x"}])]
    assert [r.id for r in live_rows(rows)] == ["c1"]


def test_lengths_without_a_tokenizer_are_words():
    assert lengths(["two words", "it's three-ish words", ""], None) == [2, 5, 0]
