"""Examples -> token ids with a loss mask, cached so that a second run does not tokenize again.

Each example is cut into text segments at the edges of what the loss covers, and every segment is
tokenized on its own: the prompt part is then tokenized exactly as generation will tokenize it, and
no token straddles the edge between prompt and reply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.assets import cache_dir
from tunesmith.data.examples import Example, Message
from tunesmith.data.template import TemplateInfo, render, reply_start

# Bump when the way examples become tokens changes, so that old cache entries are not reused.
TOKENIZE_VERSION = 1
_BATCH = 2048


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: np.ndarray  # int32 [n]
    loss_mask: np.ndarray  # bool [n]: token t is predicted (from t-1) and counts in the loss
    source: str
    line: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def n_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def fingerprint(self) -> bytes:
        return self.input_ids.tobytes() + self.loss_mask.tobytes()


Segment = tuple[str | int, bool]  # text (or one token id) and whether the loss covers it


def plan_segments(example: Example, tokenizer: Any, info: TemplateInfo, loss_on: str) -> list[Segment]:
    """The example as consecutive segments, each marked trained-on or not."""
    if example.kind == "text":
        return [*_prefix(info), (example.text, True), (tokenizer.eos_token_id, True)]
    if example.kind == "completion":
        return [*_prefix(info), (example.prompt, loss_on == "all"), (example.completion, True),
                (tokenizer.eos_token_id, True)]
    return _chat_segments(example.messages, tokenizer, info, loss_on)


def _chat_segments(messages: tuple[Message, ...], tokenizer: Any, info: TemplateInfo, loss_on: str) -> list[Segment]:
    full = render(tokenizer, messages)
    segments: list[Segment] = []
    if info.prefix_ids and not (tokenizer.bos_token and full.startswith(tokenizer.bos_token)):
        segments.extend(_prefix(info))
    position = 0
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        start = reply_start(tokenizer, messages, index, full)
        content = message.content if full.startswith(message.content, start) else message.content.strip()
        end = start + len(content)
        if info.turn_end_text and full.startswith(info.turn_end_text, end):
            end += len(info.turn_end_text)
        trained = loss_on == "all" or message.train
        segments.append((full[position:start], loss_on == "all"))
        segments.append((full[start:end], trained))
        if info.append_eos:
            segments.append((tokenizer.eos_token_id, trained))
        position = end
    segments.append((full[position:], loss_on == "all"))
    return segments


def encode_prompt(tokenizer: Any, info: TemplateInfo, messages: list[Message]) -> list[int]:
    """Token ids of a conversation followed by the generation prompt, as training tokenized it."""
    text = render(tokenizer, messages, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if info.prefix_ids and not (tokenizer.bos_token and text.startswith(tokenizer.bos_token)):
        ids = list(info.prefix_ids) + ids
    return ids


def tokenize_examples(examples: list[Example], tokenizer: Any, info: TemplateInfo, loss_on: str) -> list[TokenizedExample]:
    plans = [[segment for segment in plan_segments(example, tokenizer, info, loss_on) if segment[0] != ""]
             for example in examples]
    texts = [text for plan in plans for text, _ in plan if isinstance(text, str)]
    encoded: list[list[int]] = []
    for start in range(0, len(texts), _BATCH):
        encoded.extend(tokenizer(texts[start:start + _BATCH], add_special_tokens=False)["input_ids"])
    results = []
    cursor = 0
    for example, plan in zip(examples, plans):
        ids: list[int] = []
        mask: list[bool] = []
        for text, trained in plan:
            if isinstance(text, str):
                piece = encoded[cursor]
                cursor += 1
            else:
                piece = [text]
            ids.extend(piece)
            mask.extend([trained] * len(piece))
        if mask:
            mask[0] = False  # the first token has nothing before it to be predicted from
        results.append(TokenizedExample(np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool),
                                        example.source, example.line))
    return results


def _prefix(info: TemplateInfo) -> list[Segment]:
    return [(token, False) for token in info.prefix_ids]


# ------------------------------------------------------------------------------------------ cache


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    payload = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = json.dumps([tokenizer.chat_template, tokenizer.eos_token, tokenizer.bos_token,
                        tokenizer.pad_token, type(tokenizer).__name__])
    return hashlib.sha256((payload + extra).encode()).hexdigest()


def examples_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.kind, [(m.role, m.content, m.train) for m in example.messages],
                                  example.prompt, example.completion, example.text]).encode())
    return digest.hexdigest()


def tokenize_cached(examples: list[Example], tokenizer: Any, info: TemplateInfo, loss_on: str,
                    *, tokenizer_key: str | None = None) -> tuple[list[TokenizedExample], bool]:
    """Tokenized examples and whether they came from the cache."""
    key_source = json.dumps([TOKENIZE_VERSION, tokenizer_key or tokenizer_fingerprint(tokenizer),
                             examples_fingerprint(examples), loss_on, info.turn_end_text, info.append_eos,
                             list(info.prefix_ids)])
    key = hashlib.sha256(key_source.encode()).hexdigest()[:32]
    path = cache_dir() / "tokenized" / f"{key}.npz"
    cached = _load(path, examples)
    if cached is not None:
        return cached, True
    tokenized = tokenize_examples(examples, tokenizer, info, loss_on)
    _save(path, tokenized)
    return tokenized, False


def _save(path: Path, tokenized: list[TokenizedExample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.asarray([len(t) for t in tokenized], dtype=np.int64)
    ids = np.concatenate([t.input_ids for t in tokenized]) if tokenized else np.zeros(0, np.int32)
    mask = np.concatenate([t.loss_mask for t in tokenized]) if tokenized else np.zeros(0, bool)
    staging = path.with_suffix(".partial.npz")
    np.savez(staging, lengths=lengths, ids=ids, mask=mask)
    staging.replace(path)


def _load(path: Path, examples: list[Example]) -> list[TokenizedExample] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            lengths, ids, mask = stored["lengths"], stored["ids"], stored["mask"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is rebuilt, never trusted
    if len(lengths) != len(examples):
        return None
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [TokenizedExample(ids[bounds[i]:bounds[i + 1]], mask[bounds[i]:bounds[i + 1]], ex.source, ex.line)
            for i, ex in enumerate(examples)]
