"""Constrained decoding: a grammar built from a JSON schema or from declared tools, and a matcher per
row that masks the logits so that only text the grammar allows can be written.

The grammars and their matchers are llguidance's (guidance-ai/llguidance, MIT; a structured-output
backend of vLLM, SGLang and llama.cpp). Chosen after trying the four maintained candidates, each
installed as a wheel (no compiler), on this project's test tokenizer (SmolLM2, 49,152 tokens), one CPU
core: the cost of one token's mask while a 7-field JSON document is forced through the matcher (median /
p90), the schema's compile time, and 16 JSON-schema features each checked by 30 random walks under the
mask, every finished text validated with jsonschema:

  llguidance 1.9.1          19 / 75 us     1-9 ms  a 3 MB wheel, no dependencies; 15 features exact, the 16th
                                                   (uniqueItems) refused with its name, as `not` and `if` are
  xgrammar 0.2.9             4 / 12 us      11 ms  16 exact, but its wheel requires triton (286 MB) even on CPU
  outlines-core 0.2.14       4 / 97 us     152 ms  silently ignores minimum/maximum (30 of 30 walks under
                                                   {"minimum": 10, "maximum": 20} left the range) and maxProperties
  lm-format-enforcer 0.11.3  476 / 1496 us   1 ms  its transformers integration does not import under
                                                   transformers 5 (a module it imports was removed)

llguidance is small, exact, and says no: a keyword it cannot enforce is an error the server answers
with a 400 naming it, never an output that quietly fails the schema. Its 19 us a token is far below a
forward pass. Its Lark grammars embed JSON schemas (`%json {...}`), which the tool-call blocks need.

JSON is written as `json.dumps` and the chat templates (`tojson`) write it: `", "` and `": "`, no
other whitespace, so a model is held to the text it was trained on and cannot pad it forever.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tunesmith.errors import ModelError
from tunesmith.models.tool_calls import CLOSE, OPEN

JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}  # OpenAI: parameters left out
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for function names

_LOCK = threading.Lock()
_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # HF tokenizer -> {stop ids: LLTokenizer}


class GrammarError(ValueError):
    """A schema or grammar that cannot constrain decoding; `where` names the part of the input."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf  # noqa: F401  (from_tokenizer)
    except ImportError as exc:
        raise ModelError("constrained decoding (response_format, tool_choice required or named) needs the "
                         "llguidance package: pip install 'llguidance>=1.0'") from exc
    return llguidance


def check_schema(schema: Any, where: str) -> None:
    """A JSON schema that is valid (its draft's meta-schema) and that the grammar can enforce."""
    from jsonschema import exceptions, validators

    if not isinstance(schema, dict):
        raise GrammarError(where, f"a JSON schema is an object, not {type(schema).__name__}")
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as error:
        raise GrammarError(where, f"not a valid JSON schema: {error.message}") from None
    problem = _llguidance().LLMatcher.validate_grammar(json_grammar(schema))
    if problem:
        raise GrammarError(where, f"cannot be enforced ({_reason(problem)}); leave that keyword out")


def _reason(problem: str) -> str:
    """llguidance's message without the grammar source it quotes."""
    found = re.search(r"failed to compile JSON schema: ([^\n]*)", problem)
    return (found.group(1) if found else problem.strip().splitlines()[0]).strip()


def _embedded(schema: dict) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_STYLE})


def json_grammar(schema: dict | None) -> str:
    """JSON text that the schema accepts (any JSON object without one: OpenAI's json_object)."""
    return f"start: {_embedded({'type': 'object'} if schema is None else schema)}\n"


def tool_call_grammar(tools: Sequence[dict], *, parallel: bool = True, or_json: dict | None = None) -> str:
    """One `<tool_call>` block (or several, a line apart, with `parallel`) calling one of `tools`
    (OpenAI's declarations) with arguments their `parameters` schema accepts, written as the chat
    templates write them; with `or_json`, a JSON reply that schema accepts instead."""
    bodies = [_literal(f'{{"name": {json.dumps(tool["function"]["name"])}, "arguments": ')
              + f" {_embedded(tool['function'].get('parameters') or NO_ARGUMENTS)} " + _literal("}")
              for tool in tools]
    calls = 'call ("\\n" call)*' if parallel else "call"
    start = f"{calls} | {_embedded(or_json)}" if or_json is not None else calls
    return (f"start: {start}\n"
            f"call: {_literal(OPEN + chr(10))} body {_literal(chr(10) + CLOSE)}\n"
            f"body: {' | '.join(bodies)}\n")


def _literal(text: str) -> str:
    return json.dumps(text)  # a Lark string literal takes JSON's escapes


def _ll_tokenizer(tokenizer: Any, stop_ids: tuple[int, ...]) -> Any:
    """llguidance's view of a Hugging Face tokenizer (about a second to build: built once, kept with it)."""
    llguidance = _llguidance()
    with _LOCK:
        built = _TOKENIZERS.setdefault(tokenizer, {})
        if stop_ids not in built:
            try:
                built[stop_ids] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer), eos_token=list(stop_ids))
            except ValueError as exc:  # a slow (Python) tokenizer
                raise ModelError(f"constrained decoding needs a fast tokenizer: {exc}") from exc
        return built[stop_ids]


class Constraint:
    """One row's matcher: which tokens may come next, and the tokens the row took. A stop token is
    allowed exactly where the grammar may end."""

    def __init__(self, grammar: str, tokenizer: Any, stop_ids: Sequence[int]) -> None:
        llguidance = _llguidance()
        self.stop_ids = frozenset(stop_ids)
        self._tokenizer = _ll_tokenizer(tokenizer, tuple(sorted(self.stop_ids)))
        self._matcher = llguidance.LLMatcher(self._tokenizer, grammar)
        if self._matcher.is_error():
            raise GrammarError("grammar", self._matcher.get_error())
        self.vocab_size = len(tokenizer)
        self._bits = np.zeros((self.vocab_size + 31) // 32, dtype=np.int32)

    def allowed(self) -> torch.Tensor:
        """A bool [vocab] mask of the tokens that may come next."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self._matcher.is_error():
            raise RuntimeError(f"constrained decoding failed: {self._matcher.get_error()}")
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:self.vocab_size]
        return torch.from_numpy(bits.astype(bool))

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits ([vocab or wider], in place) of every token the grammar forbids to -inf."""
        allowed = self.allowed().to(logits.device)
        logits[:self.vocab_size].masked_fill_(~allowed, float("-inf"))
        logits[self.vocab_size:] = float("-inf")  # embedding rows past the tokenizer: no token at all

    def advance(self, token: int) -> None:
        if token in self.stop_ids:
            return
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"constrained decoding failed: token {token} is not allowed here "
                               f"({self._matcher.get_error()})")


class ConstrainedLogits:
    """transformers' LogitsProcessor for `generate`: each row of the batch under its own matcher."""

    def __init__(self, constraints: list[Constraint], prompt_width: int) -> None:
        self.constraints, self.prompt_width = constraints, prompt_width
        self.done = [False] * len(constraints)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row, constraint in enumerate(self.constraints):
            if input_ids.shape[1] > self.prompt_width and not self.done[row]:
                token = int(input_ids[row, -1])
                self.done[row] = token in constraint.stop_ids
                constraint.advance(token)
            if not self.done[row]:
                constraint.mask(scores[row])
        return scores
