"""Generate replies from a run's model or any base model, in batches (left padding).

Prompts are encoded exactly as training encoded them (same template, same BOS rule), and
generation stops on the tokens the run saved as stop tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.examples import Message
from tunesmith.data.template import TemplateInfo, analyze_template, ensure_chat_template
from tunesmith.data.tokenize import encode_prompt
from tunesmith.errors import ModelError
from tunesmith.models.device import resolve_device, resolve_precision, weights_dtype
from tunesmith.models.load import ModelSource, load_causal_lm, load_tokenizer, resolve_model
from tunesmith.models.processes import ALONE, Share


def pad_rows(rows: list[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one [rows, longest] batch and its attention mask; `left` pads before the tokens
    (generation continues every row from its last column), otherwise after them."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        columns = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, columns] = torch.tensor(ids)
        attention[row, columns] = 1
    return input_ids, attention


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: TemplateInfo
    name: str
    share: Share = ALONE  # the processes that decode with it together (evaluation after a run on several)


def find_model_folder(target: str) -> ModelSource:
    """A run folder's merged model, a run folder's adapter on its base, or any model spec."""
    path = Path(target).expanduser()
    if path.is_dir() and (path / "lineage.json").is_file():  # a chained run: its last stage's model
        final = json.loads((path / "lineage.json").read_text()).get("final_model")
        if not final:
            raise ModelError(f"{target}: the chained run has not finished all its stages; resume it with --resume")
        return ModelSource(target, "folder", str(Path(final).resolve()))
    if path.is_dir() and (path / "manifest.json").is_file():
        if (path / "model" / "config.json").is_file():
            return ModelSource(target, "folder", str((path / "model").resolve()))
        if (path / "adapter" / "adapter_config.json").is_file():
            return ModelSource(target, "folder", str((path / "adapter").resolve()))
        raise ModelError(f"{target}: run folder has no model/ or adapter/; the run did not finish, resume it with --resume")
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return ModelSource(target, "folder", str(path.resolve()))
    return resolve_model(target)


def load_for_generation(target: str, *, chat_template: str | None = None, device: str = "auto",
                        precision: str = "auto", share: Share = ALONE) -> LoadedModel:
    """Tokenizer, template and weights for inference; bf16 weights where the device computes bf16 natively."""
    torch_device = resolve_device(device)
    dtype = weights_dtype(resolve_precision(precision, torch_device), frozen_base=True)
    source = find_model_folder(target)
    tokenizer = load_tokenizer(source)
    tokenizer.padding_side = "left"
    ensure_chat_template(tokenizer, chat_template)
    adapter_config = Path(source.location) / "adapter_config.json"
    if source.is_local and adapter_config.is_file():
        from peft import PeftModel

        base_name = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        base = load_causal_lm(resolve_model(base_name), dtype=dtype)
        model = PeftModel.from_pretrained(base, source.location)
    else:
        model = load_causal_lm(source, dtype=dtype)
    info = analyze_template(tokenizer, model.generation_config.eos_token_id)
    model.to(torch_device).eval()
    return LoadedModel(model, tokenizer, info, target, share)


Prompt = str | list[Message]


@dataclass
class Generated:
    texts: list[str]
    new_tokens: int  # generated tokens, up to and including each reply's stop token
    seconds: float
    token_ids: list[list[int]] = field(default_factory=list)  # each reply's tokens, with its stop token if it stopped
    finish_reasons: list[str] = field(default_factory=list)  # "stop" (a stop token) or "length" (cut at max_new_tokens)


def generate_replies(loaded: LoadedModel, prompts: list[Prompt], **kwargs: Any) -> list[str]:
    """One reply per prompt (a user message, or a whole conversation ending with a user turn)."""
    return generate(loaded, prompts, **kwargs).texts


@torch.no_grad()
def generate(loaded: LoadedModel, prompts: list[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, top_k: int = 0, batch_size: int = 8, system_prompt: str | None = None, seed: int = 0,
             stop_at_newline: bool = False, progress: Callable[[int], None] | None = None,
             tools: Sequence[dict[str, Any]] = (), grammar: str | None = None) -> Generated:
    """Replies in batches of similar prompt lengths, left-padded; greedy unless temperature > 0.

    Sampling draws from the whole distribution at `temperature`, cut by `top_p` and, when above 0,
    `top_k`: transformers would otherwise add its own top_k=50 (GenerationConfig's default) to every
    model whose generation_config.json does not set one.

    `stop_at_newline` also ends a reply at its first line break after some text (a one-line answer,
    such as a label, is complete there; the text returned is cut at the break).
    `progress` is told the number of rows of each batch as it finishes.
    `tools` (OpenAI's function declarations) go into every prompt as the chat template writes them;
    `grammar` (models/constrained.py) holds every reply to it, as the server's structured outputs do.

    Greedy decoding is shared out over `loaded.share`'s processes, batch by batch; sampled decoding
    is not (its random stream runs through the batches in order), so each process samples all."""
    started = time.perf_counter()
    encoded = [encode_prompt(loaded.tokenizer, loaded.info, _as_messages(p, system_prompt), tools) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    share = loaded.share if temperature == 0 else ALONE
    device = next(loaded.model.parameters()).device
    pad_id = loaded.tokenizer.pad_token_id
    stop_ids = set(loaded.info.stop_token_ids)
    replies: dict[int, tuple[str, list[int], str]] = {}  # row -> (text, token ids, finish reason)
    torch.manual_seed(seed)
    for chunk in share.take(batches):
        input_ids, attention = pad_rows([encoded[i] for i in chunk], pad_id, left=True)
        width = input_ids.shape[1]
        output = loaded.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
            do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None, top_k=top_k if temperature > 0 else None,
            eos_token_id=list(stop_ids), pad_token_id=pad_id,
            stopping_criteria=[_FirstLineDone(loaded.tokenizer, width)] if stop_at_newline else None,
            logits_processor=_constrained(loaded, grammar, len(chunk), width),
        )
        for row, index in enumerate(chunk):
            generated = output[row, width:].tolist()
            length = next((n + 1 for n, token in enumerate(generated) if token in stop_ids), len(generated))
            text = loaded.tokenizer.decode(generated[:length], skip_special_tokens=True)
            line_done = stop_at_newline and _first_line_end(text) is not None
            if line_done:
                length = _tokens_through_first_line(loaded.tokenizer, generated[:length])
                text = text[:_first_line_end(text)]
            finish = "stop" if line_done or (length and generated[length - 1] in stop_ids) else "length"
            replies[index] = (text.strip(), generated[:length], finish)
        if progress is not None:
            progress(len(chunk))
    replies = share.gather(replies)
    rows = [replies[i] for i in range(len(encoded))]
    return Generated([r[0] for r in rows], sum(len(r[1]) for r in rows), time.perf_counter() - started,
                     [r[1] for r in rows], [r[2] for r in rows])


def _constrained(loaded: LoadedModel, grammar: str | None, rows: int, prompt_width: int) -> Any:
    if grammar is None:
        return None
    from transformers import LogitsProcessorList

    from tunesmith.models.constrained import ConstrainedLogits, Constraint

    constraints = [Constraint(grammar, loaded.tokenizer, loaded.info.stop_token_ids) for _ in range(rows)]
    return LogitsProcessorList([ConstrainedLogits(constraints, prompt_width)])


def _first_line_end(text: str) -> int | None:
    """Where the first line with some text ends (the index of its line break), or None."""
    stripped = len(text) - len(text.lstrip())
    position = text.find("\n", stripped)
    return position if position > stripped else None


def _tokens_through_first_line(tokenizer: Any, ids: list[int]) -> int:
    """How many of `ids` it takes to reach the end of the first line of text."""
    for count in range(1, len(ids) + 1):
        if _first_line_end(tokenizer.decode(ids[:count], skip_special_tokens=True)) is not None:
            return count
    return len(ids)


class _FirstLineDone:
    """A stopping criterion (transformers' StoppingCriteria protocol): a row is done once its reply
    has a line break after some text."""

    def __init__(self, tokenizer: Any, prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([_first_line_end(text) is not None for text in texts], device=input_ids.device)


def _as_messages(prompt: Prompt, system_prompt: str | None) -> list[Message]:
    messages = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
    if system_prompt and messages[0].role != "system":
        messages.insert(0, Message("system", system_prompt))
    return messages
