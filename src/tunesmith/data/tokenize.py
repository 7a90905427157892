"""Examples -> token ids with a loss mask, cached so that a second run does not tokenize again.

Each example is rendered once and tokenized once, as one text, so its ids are the ids of the whole
text: what inference tokenizes when the conversation is the history of a later turn. Tokenizing
pieces on their own would not give those ids: a SentencePiece-style tokenizer (Metaspace, as in
Llama-2, Mistral, TinyLlama) puts a `▁` before every text it is given.

The loss mask comes from the characters each token covers. A trained span runs from the end of
generation's prompt (the text inference feeds the model) to the end of the reply and the text that
closes its turn: everything in it is what the model has to write, including a space the template
puts before the reply (Llama-2's ` ` + reply, often a token `▁` of its own). A token is in the loss
when any of its characters lie in a trained span, so a token straddling the end of a span is in it;
a token with no characters of its own counts as the character after it.

No token may cross the end of a generation prompt (or the place an eos id is inserted after a reply),
or the ids before it would not be the ids generation feeds the model. None does for the templates we
know (they end the prompt with a special token, a newline or `[/INST]`). Where one does (a prompt
ending in a space that the tokenizer joins to the reply's first word), that text is cut there and the
pieces tokenized separately, so the prompt's ids stay exactly the ids `encode_prompt` gives.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.assets import cache_dir
from tunesmith.data.examples import Example, Message
from tunesmith.data.template import (
    TemplateInfo,
    Tools,
    assistant_turn_end,
    check_tool_support,
    generation_prompt_end,
    locate_reply,
    render,
)

# Bump when the way examples become tokens changes, so that old cache entries are not reused.
TOKENIZE_VERSION = 3
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


@dataclass(frozen=True)
class Layout:
    """One example as the text to tokenize once, what of it the loss covers, and the ids added to it."""

    text: str
    trained: tuple[tuple[int, int], ...]  # character spans [start, end) of `text` in the loss, in order
    cuts: tuple[int, ...]  # where a prompt ends or an id is inserted: a token crossing one is cut there
    inserts: tuple[tuple[int, int, bool], ...] = ()  # (character offset, token id, in the loss), e.g. eos after a reply
    prefix: tuple[int, ...] = ()  # ids before the text (BOS), never in the loss


def plan_layout(example: Example, tokenizer: Any, info: TemplateInfo, loss_on: str) -> Layout:
    """The example's text, its trained character spans and the token ids that go around it."""
    eos = tokenizer.eos_token_id
    if example.kind == "text":
        text = example.text
        return Layout(text, ((0, len(text)),), (), ((len(text), eos, True),), info.prefix_ids)
    if example.kind == "completion":
        text = example.prompt + example.completion
        start = 0 if loss_on == "all" else len(example.prompt)
        return Layout(text, ((start, len(text)),), (len(example.prompt),), ((len(text), eos, True),), info.prefix_ids)
    return _chat_layout(example.messages, tokenizer, info, loss_on, example.tools)


def _chat_layout(messages: tuple[Message, ...], tokenizer: Any, info: TemplateInfo, loss_on: str,
                 tools: Tools = ()) -> Layout:
    """Each assistant turn is trained from the end of its generation prompt to the end of its turn:
    its reply, or the tool calls the template writes for it (and any text before them). Tool results
    and the tool list are prompt: never in the loss."""
    full = render(tokenizer, messages, tools=tools)
    trained: list[tuple[int, int]] = []
    cuts: list[int] = []
    inserts: list[tuple[int, int, bool]] = []
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        if message.tool_calls:
            prompt_end = generation_prompt_end(tokenizer, messages, index, full, tools)
            end = max(prompt_end, assistant_turn_end(tokenizer, messages, index, full, tools))
        else:
            prompt_end, end = _reply_end(tokenizer, info, messages, index, full, tools)
        cuts.append(prompt_end)
        if message.train:
            trained.append((prompt_end, end))
        if info.append_eos:
            cuts.append(end)
            inserts.append((end, tokenizer.eos_token_id, loss_on == "all" or message.train))
    if loss_on == "all":
        trained = [(0, len(full))]
    return Layout(full, tuple(trained), tuple(cuts), tuple(inserts), _prefix_ids(tokenizer, info, full))


def _reply_end(tokenizer: Any, info: TemplateInfo, messages: tuple[Message, ...], index: int, full: str,
               tools: Tools) -> tuple[int, int]:
    """Where generation's prompt for a plain reply ends, and where the reply and its closing text end."""
    prompt_end, start = locate_reply(tokenizer, messages, index, full, tools)
    content = messages[index].content
    end = start + len(content if full.startswith(content, start) else content.strip())
    if info.turn_end_text and full.startswith(info.turn_end_text, end):
        end += len(info.turn_end_text)
    return prompt_end, end


def _prefix_ids(tokenizer: Any, info: TemplateInfo, rendered: str) -> tuple[int, ...]:
    """BOS ids to put before a rendered conversation, unless the template already wrote BOS."""
    if tokenizer.bos_token and rendered.startswith(tokenizer.bos_token):
        return ()
    return info.prefix_ids


def encode_prompt(tokenizer: Any, info: TemplateInfo, messages: list[Message], tools: Tools = ()) -> list[int]:
    """Token ids of a conversation followed by the generation prompt, as training tokenized it; with
    `tools` (OpenAI's function schemas), the template's tool block as training wrote it."""
    text = render(tokenizer, messages, add_generation_prompt=True, tools=tools)
    return list(_prefix_ids(tokenizer, info, text)) + tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_examples(examples: list[Example], tokenizer: Any, info: TemplateInfo, loss_on: str) -> list[TokenizedExample]:
    if any(uses_tools(example) for example in examples):
        check_tool_support(tokenizer)
    layouts = [plan_layout(example, tokenizer, info, loss_on) for example in examples]
    encoded = _encode(tokenizer, [layout.text for layout in layouts])
    _retokenize_across_cuts(tokenizer, layouts, encoded)
    return [TokenizedExample(*_with_loss_mask(layout, ids, offsets), example.source, example.line)
            for example, layout, (ids, offsets) in zip(examples, layouts, encoded)]


def uses_tools(example: Example) -> bool:
    """Whether the example declares tools, calls one or carries a tool's result."""
    return bool(example.tools) or any(m.tool_calls or m.role == "tool" for m in example.messages)


def _retokenize_across_cuts(tokenizer: Any, layouts: list[Layout], encoded: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Where a token crosses a cut, tokenize that text again as pieces cut there (in place; rare)."""
    edges: dict[int, list[int]] = {}  # example -> where its pieces start and end
    for index, (layout, (_, offsets)) in enumerate(zip(layouts, encoded)):
        crossed = sorted({cut for cut in layout.cuts if np.any((offsets[:, 0] < cut) & (offsets[:, 1] > cut))})
        if crossed:
            edges[index] = [0, *crossed, len(layout.text)]
    texts = [layouts[index].text[start:end] for index, bounds in edges.items() for start, end in zip(bounds, bounds[1:])]
    pieces = iter(_encode(tokenizer, texts))
    for index, bounds in edges.items():
        parts = [next(pieces) for _ in bounds[1:]]
        encoded[index] = (np.concatenate([ids for ids, _ in parts]),
                          np.concatenate([offsets + start for (_, offsets), start in zip(parts, bounds)]))


def _encode(tokenizer: Any, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ids and character offsets [n, 2] of each text, in batches (the Rust tokenizer runs them in parallel)."""
    encoded: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(texts), _BATCH):
        batch = tokenizer(texts[start:start + _BATCH], add_special_tokens=False, return_offsets_mapping=True,
                          return_attention_mask=False, return_token_type_ids=False)
        lengths = [len(ids) for ids in batch["input_ids"]]
        total = sum(lengths)
        # one flat array per batch: converting thousands of short lists one by one costs more than tokenizing
        ids = np.fromiter(chain.from_iterable(batch["input_ids"]), dtype=np.int32, count=total)
        pairs = chain.from_iterable(chain.from_iterable(batch["offset_mapping"]))
        offsets = np.fromiter(pairs, dtype=np.int64, count=2 * total).reshape(-1, 2)
        bounds = np.cumsum(lengths)[:-1]
        encoded.extend(zip(np.split(ids, bounds), np.split(offsets, bounds)))
    return encoded


def _with_loss_mask(layout: Layout, ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = offsets[:, 0]
    ends = np.maximum(offsets[:, 1], starts + 1)  # a token with no characters counts as the next one
    mask = np.zeros(len(ids), dtype=bool)
    if layout.trained:
        span_starts, span_ends = np.asarray(layout.trained, dtype=np.int64).T
        # spans are in order and disjoint: a token can only overlap the first span ending after its start
        candidate = np.searchsorted(span_ends, starts, side="right")
        inside = candidate < len(span_ends)
        mask[inside] = span_starts[candidate[inside]] < ends[inside]
    if layout.inserts:
        at = np.searchsorted(starts, [offset for offset, _, _ in layout.inserts], side="left")
        ids = np.insert(ids, at, [token for _, token, _ in layout.inserts]).astype(np.int32)
        mask = np.insert(mask, at, [trained for _, _, trained in layout.inserts])
    if layout.prefix:
        ids = np.concatenate([np.asarray(layout.prefix, dtype=np.int32), ids])
        mask = np.concatenate([np.zeros(len(layout.prefix), dtype=bool), mask])
    if len(mask):
        mask[0] = False  # the first token has nothing before it to be predicted from
    return ids, mask


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
        digest.update(json.dumps([example.kind, [(m.as_dict(), m.train) for m in example.messages],
                                  example.prompt, example.completion, example.text, example.tools]).encode())
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
