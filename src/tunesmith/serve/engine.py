"""The engine: one thread that owns the models and decodes concurrent requests together.

Requests wait in a bounded inbox (a full one refuses at once: the server answers 429, never a
backlog). The thread takes the first request, collects the ones that arrive within a short window,
and decodes each base model's rows as one batch with its own KV cache, one token per step for all
rows; rows for different adapters of one base share the batch (peft's `adapter_names`). Requests
that arrive while a batch decodes join it between steps: their prompts are read on their own, then
their cache rows are padded on the left to the batch's length and appended, so a long batch never
holds a new request back until it ends. A row leaves the batch (its cache rows are dropped) at a stop
token, a stop string, its token budget, or when its client goes away.

Rows are left-padded with an attention mask and explicit positions, as transformers' `generate`
does, so a greedy row decodes the same tokens alone or in any batch (a test holds this).

A row may carry a grammar (`Row.constraint`: structured outputs, forced tool calls): its own logits
are masked before its token is chosen; the other rows' logits are never touched, and the mask costs
only the rows that have one (tens of microseconds a token). Log-probabilities stay the model's own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from tunesmith.models.generate import pad_rows
from tunesmith.serve.models import Served, ServedModels
from tunesmith.serve.residency import Backend

COLLECT_SECONDS = 0.01  # how long the first request of a batch waits for others to join it


class QueueFull(Exception):
    """The inbox holds as many requests as it may: the caller answers 429."""


class NeverFits(QueueFull):
    """A request with more rows than the inbox ever holds: retrying cannot help (the caller answers 400)."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0  # OpenAI's default; 0 decodes greedily
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None  # None: no logprobs; 0 or more: the chosen token's and this many others


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass
class Event:
    """What a row sends back: new text (with the tokens that made it), or its end."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" or "length" once the row is done
    completion_tokens: int = 0  # set on the last event
    error: BaseException | None = None


@dataclass
class Row:
    """One choice of one request, on its way through the engine."""

    served: Served
    prompt_ids: list[int]
    sampling: Sampling
    emit: Callable[[Event], None]  # called on the engine's thread; must not block
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the reply already emitted
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    generator: torch.Generator | None = None
    constraint: Any = None  # models.constrained.Constraint: the grammar this row's text must follow


@dataclass
class _Call:
    function: Callable[[], Any]
    future: Future


class Engine:
    """Owns the models' thread; `submit` rows from any thread, `call` functions that touch models."""

    def __init__(self, models: ServedModels, *, max_queue: int = 64, max_batch: int = 16) -> None:
        self.models = models
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.inbox: queue.Queue[Row | _Call | None] = queue.Queue()
        self._pending = 0
        self.stats = {"batches": 0, "rows": 0, "joined_rows": 0, "largest_batch": 0, "cancelled_rows": 0}  # what batching achieved
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tunesmith-engine", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows queued or decoding."""
        return self._pending

    def submit(self, rows: list[Row]) -> None:
        """Queue a request's rows, all or none: QueueFull when they would not fit."""
        if len(rows) > self.max_queue:
            raise NeverFits(f"the request needs {len(rows)} rows (choices) and this server holds at most "
                            f"{self.max_queue} at once (--max-queue)")
        with self._lock:
            if self._pending + len(rows) > self.max_queue:
                raise QueueFull(f"{self._pending} rows are queued or decoding, the most is {self.max_queue}")
            self._pending += len(rows)
        for row in rows:
            self.models.residency.rows_started(row.served)
            self.inbox.put(row)

    def call(self, function: Callable[[], Any]) -> Future:
        """Run `function` on the engine's thread between batches (loading a model, classifying)."""
        future: Future = Future()
        self.inbox.put(_Call(function, future))
        return future

    def close(self) -> None:
        self.inbox.put(None)
        self._thread.join(timeout=30)

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if isinstance(item, _Call):
                _run_call(item)
                continue
            rows, calls = self._collect([item])
            for backend_key in dict.fromkeys(row.served.backend for row in rows):
                group = [row for row in rows if row.served.backend == backend_key]
                for part in self._within_cap(group):
                    self._decode_with_weights(part)
            for call in calls:
                _run_call(call)
            self.models.release_retired()

    def _decode_with_weights(self, rows: list[Row]) -> None:
        """Decode rows of one backend, loading its weights first if the cap let them go."""
        try:
            backend = self.models.backend_for(rows[0].served)
        except Exception as exc:  # these rows' model cannot load: they fail, the others go on
            for row in rows:
                self._finish(row, None, error=exc)
            return
        self._decode(backend, rows)

    def _within_cap(self, rows: list[Row]) -> list[list[Row]]:
        """Rows split into batches that each need at most max_loaded_adapters adapters."""
        cap, parts, names = self.models.max_loaded_adapters, [[]], [set()]
        for row in rows:
            adapter = row.served.adapter_id if row.served.kind == "adapter" else None
            if adapter and adapter not in names[-1] and len(names[-1]) >= cap:
                parts.append([])
                names.append(set())
            parts[-1].append(row)
            if adapter:
                names[-1].add(adapter)
        return parts

    def _collect(self, rows: list[Row], *, wait: float = COLLECT_SECONDS, backend: str | None = None,
                 limit: int | None = None, adapters: set[str] | None = None) -> tuple[list[Row], list[_Call]]:
        """More rows from the inbox, for up to `wait` seconds, until `limit` rows (default
        `max_batch`); with `backend`, only rows for it whose adapter fits beside `adapters` under
        the cap are kept, and any other item is put back."""
        limit = self.max_batch if limit is None else limit
        calls: list[_Call] = []
        others: list[Row | _Call | None] = []
        deadline = time.monotonic() + wait
        while len(rows) < limit:
            try:
                item = self.inbox.get(timeout=max(deadline - time.monotonic(), 0)) if wait else self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Row) and (backend is None or (item.served.backend == backend and _fits(item, adapters, self.models.max_loaded_adapters))):
                rows.append(item)
                if adapters is not None and item.served.kind == "adapter":
                    adapters.add(item.served.adapter_id)
            elif isinstance(item, _Call) and backend is None:
                calls.append(item)
            else:
                others.append(item)
        for item in others:  # back in the inbox for the next batch (order among them kept)
            self.inbox.put(item)
        return rows, calls

    @torch.no_grad()
    def _decode(self, backend: Backend, rows: list[Row]) -> None:
        batch: _Batch | None = None
        try:
            self._prepare(backend, rows)
            batch = self._start(backend, rows)
            self.stats["batches"] += 1
            self.stats["rows"] += len(rows)
            while batch.rows:
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch.rows))
                self._step(batch)
                # An emptied batch is done: its mask and cache still hold the finished rows (select
                # keeps nothing of them), so new rows start a new batch rather than join this one.
                if batch.rows and len(batch.rows) < self.max_batch:
                    self._join(batch, backend)
        except Exception as exc:  # a failed batch answers its rows with the error, the server lives on
            for row in (batch.rows if batch else rows):
                self._finish(row, None, error=exc)

    def _join(self, batch: _Batch, backend: Backend) -> None:
        """Rows for this backend that arrived since the last step join the running batch."""
        adapters = {row.served.adapter_id for row in batch.rows if row.served.kind == "adapter"}
        joining, _ = self._collect([], wait=0, backend=backend.key, limit=self.max_batch - len(batch.rows),
                                   adapters=adapters)
        if not joining:
            return
        try:
            self._prepare(backend, joining, running=batch.rows)
            batch.join(self._start(backend, joining))
            self.stats["rows"] += len(joining)
            self.stats["joined_rows"] += len(joining)
        except Exception as exc:
            for row in joining:
                self._finish(row, None, error=exc)

    def _prepare(self, backend: Backend, rows: list[Row], running: list[Row] = ()) -> None:
        """Load the adapters the rows need (keeping those of the `running` rows) and seed their sampling."""
        if any(row.served.kind == "adapter" for row in rows):
            self.models.residency.ensure_adapters(backend, [row.served for row in [*running, *rows]])
        for row in rows:
            if row.sampling.temperature > 0:
                row.generator = torch.Generator(device=_device(backend.model))
                seed = row.sampling.seed if row.sampling.seed is not None else int.from_bytes(_random_bytes(), "little")
                row.generator.manual_seed(seed % 2**64)  # any integer seed, as torch takes 64 bits

    def _start(self, backend: Backend, rows: list[Row]) -> _Batch:
        """Read the rows' prompts (one forward pass) into a new batch with its cache."""
        from transformers import DynamicCache

        device = _device(backend.model)
        pad_id = rows[0].served.tokenizer.pad_token_id or 0
        input_ids, attention = pad_rows([row.prompt_ids for row in rows], pad_id, left=True)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=backend.model.config)
        batch = _Batch(backend, rows, cache, attention.to(device), attention.sum(-1).to(device))
        output = backend.model(input_ids=input_ids.to(device), attention_mask=batch.attention,
                               position_ids=positions.to(device), past_key_values=cache, use_cache=True,
                               logits_to_keep=1, **batch.adapter_kwargs())
        batch.logits = output.logits[:, -1, :].float()
        return batch

    def _step(self, batch: _Batch) -> None:
        """Choose each row's next token from the last logits, send it, drop finished rows, and run
        the rows left one position further."""
        logits, failed = _constrain(batch.logits, batch.rows)
        chosen, logprobs, not_chosen = _choose(logits, batch.rows, raw=batch.logits)
        failed.update(not_chosen)
        keep = []
        for index, row in enumerate(batch.rows):
            try:
                if index in failed:
                    raise failed[index]
                done = self._advance(row, int(chosen[index]), logprobs[index] if logprobs else None)
            except Exception as exc:  # this row alone fails; the batch's other rows go on
                self._finish(row, None, error=exc)
                done = True
            if not done:
                keep.append(index)
        if len(keep) < len(batch.rows):
            batch.select(keep)
            chosen = chosen[keep]
        if not batch.rows:
            return
        device = batch.attention.device
        batch.attention = torch.cat([batch.attention, torch.ones((len(batch.rows), 1), dtype=batch.attention.dtype, device=device)], dim=1)
        positions = batch.lengths.unsqueeze(1)
        batch.lengths = batch.lengths + 1
        output = batch.backend.model(input_ids=chosen.unsqueeze(1).to(device), attention_mask=batch.attention,
                                     position_ids=positions, past_key_values=batch.cache, use_cache=True,
                                     **batch.adapter_kwargs())
        batch.logits = output.logits[:, -1, :].float()

    def _advance(self, row: Row, token: int, logprob: TokenLogprob | None) -> bool:
        """Add a token to a row and send what is new; True when the row is done."""
        if row.cancelled.is_set():
            self.stats["cancelled_rows"] += 1
            self._finish(row, None)
            return True
        row.generated.append(token)
        if logprob is not None:
            row.pending_logprobs.append(logprob)
        info = row.served.info
        if token in info.stop_token_ids:
            self._finish(row, "stop")
            return True
        if row.constraint is not None:
            row.constraint.advance(token)
        tokenizer = row.served.tokenizer
        text = tokenizer.decode(row.generated, skip_special_tokens=True)
        stops = row.sampling.stop
        cut = min((at for at in (text.find(stop, max(row.sent - len(stop) + 1, 0)) for stop in stops) if at >= 0),
                  default=-1)
        if cut >= 0:
            self._send(row, text[:cut])
            self._finish(row, "stop")
            return True
        if len(row.generated) >= row.sampling.max_tokens:
            self._send(row, text)
            self._finish(row, "length")
            return True
        # hold back an unfinished character, and text that may be the start of a stop string
        safe = len(text) - (max((len(s) for s in stops), default=1) - 1)
        if text.endswith("\ufffd"):
            safe = min(safe, len(text) - 1)
        self._send(row, text[:max(safe, row.sent)])
        return False

    def _send(self, row: Row, text: str) -> None:
        if len(text) > row.sent or row.pending_logprobs:
            row.emit(Event(text[row.sent:], row.pending_logprobs))
            row.sent, row.pending_logprobs = max(len(text), row.sent), []

    def _finish(self, row: Row, reason: str | None, *, error: BaseException | None = None) -> None:
        with self._lock:
            self._pending -= 1
        self.models.residency.row_finished(row.served)
        if row.cancelled.is_set() and error is None:
            return
        row.emit(Event("", row.pending_logprobs, reason or "stop", len(row.generated), error))
        row.pending_logprobs = []


@dataclass
class _Batch:
    """Rows decoding together on one backend, their KV cache and attention mask."""

    backend: Backend
    rows: list[Row]
    cache: Any
    attention: torch.Tensor  # [rows, positions so far]: 0 over each row's left padding
    lengths: torch.Tensor  # [rows]: real tokens so far (the next token's position)
    logits: torch.Tensor | None = None

    def adapter_kwargs(self) -> dict:
        """Which adapter each row runs through ("__base__": none), when the base carries adapters."""
        if not self.backend.has_adapters:
            return {}
        return {"adapter_names": [row.served.adapter_id if row.served.kind == "adapter" else "__base__"
                                  for row in self.rows]}

    def select(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long, device=self.attention.device)
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            return
        self.cache.reorder_cache(index)
        self.attention = self.attention[index]
        self.lengths = self.lengths[index]
        self.logits = self.logits[index] if self.logits is not None else None
        # columns every remaining row pads are dead weight: drop them from the mask and the cache
        first = int((self.attention.cumsum(-1) == 0).sum(-1).min())
        if first:
            self.attention = self.attention[:, first:]
            _trim_cache_left(self.cache, first)

    def join(self, other: _Batch) -> None:
        """Append another batch's rows (same backend), padding the shorter cache on the left."""
        width, other_width = self.attention.shape[1], other.attention.shape[1]
        if other_width < width:
            other.attention = _pad_left(other.attention, width - other_width)
            _pad_cache_left(other.cache, width - other_width)
        elif width < other_width:
            self.attention = _pad_left(self.attention, other_width - width)
            _pad_cache_left(self.cache, other_width - width)
        _concat_caches(self.cache, other.cache)
        self.rows = self.rows + other.rows
        self.attention = torch.cat([self.attention, other.attention])
        self.lengths = torch.cat([self.lengths, other.lengths])
        self.logits = torch.cat([self.logits, other.logits])


def _fits(row: Row, adapters: set[str] | None, cap: int) -> bool:
    if adapters is None or row.served.kind != "adapter" or row.served.adapter_id in adapters:
        return True
    return len(adapters) < cap


def _layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        raise RuntimeError("this model's cache cannot be merged; rows join only new batches")
    return layers


def _pad_left(attention: torch.Tensor, columns: int) -> torch.Tensor:
    return torch.cat([torch.zeros((attention.shape[0], columns), dtype=attention.dtype, device=attention.device),
                      attention], dim=1)


def _pad_cache_left(cache: Any, columns: int) -> None:
    for layer in _layers(cache):
        for name in ("keys", "values"):
            tensor = getattr(layer, name)
            padding = tensor.new_zeros((*tensor.shape[:2], columns, *tensor.shape[3:]))
            setattr(layer, name, torch.cat([padding, tensor], dim=2))


def _trim_cache_left(cache: Any, columns: int) -> None:
    for layer in _layers(cache):
        layer.keys, layer.values = layer.keys[:, :, columns:], layer.values[:, :, columns:]


def _concat_caches(cache: Any, other: Any) -> None:
    for layer, other_layer in zip(_layers(cache), _layers(other), strict=True):
        layer.keys = torch.cat([layer.keys, other_layer.keys])
        layer.values = torch.cat([layer.values, other_layer.values])


def _constrain(logits: torch.Tensor, rows: list[Row]) -> tuple[torch.Tensor, dict[int, Exception]]:
    """The logits with each constrained row's forbidden tokens at -inf (a copy; the same tensor when
    no row has a grammar), and the rows whose grammar failed, with the error."""
    constrained = [index for index, row in enumerate(rows) if row.constraint is not None]
    if not constrained:
        return logits, {}
    masked, failed = logits.clone(), {}
    for index in constrained:
        try:
            rows[index].constraint.mask(masked[index])
        except Exception as exc:
            failed[index] = exc
    return masked, failed


def _choose(logits: torch.Tensor, rows: list[Row], raw: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, list[TokenLogprob | None] | None, dict[int, Exception]]:
    """Each row's next token (greedy, or sampled with its temperature, top-p and generator) and,
    when any row asked, its log-probability under the model (`raw`: the logits before any grammar)
    with the most likely alternatives; a row whose choice failed is in the third value with its
    error, and the others are unaffected."""
    chosen = logits.argmax(dim=-1)
    failed: dict[int, Exception] = {}
    for index, row in enumerate(rows):
        if row.sampling.temperature > 0:
            try:
                chosen[index] = _sample(logits[index], row.sampling, row.generator)
            except Exception as exc:
                failed[index] = exc
    if not any(row.sampling.top_logprobs is not None for row in rows):
        return chosen.cpu(), None, failed
    log_probs = torch.log_softmax(logits if raw is None else raw, dim=-1)
    found: list[TokenLogprob | None] = []
    for index, row in enumerate(rows):
        wanted = row.sampling.top_logprobs
        if wanted is None or index in failed:
            found.append(None)
            continue
        try:
            found.append(_logprob(row, log_probs[index], int(chosen[index]), wanted))
        except Exception as exc:
            failed[index] = exc
            found.append(None)
    return chosen.cpu(), found, failed


def _logprob(row: Row, log_probs: torch.Tensor, token: int, wanted: int) -> TokenLogprob:
    tokenizer = row.served.tokenizer
    top = torch.topk(log_probs, wanted) if wanted else None
    return TokenLogprob(tokenizer.decode([token]), float(log_probs[token]),
                        [(tokenizer.decode([int(t)]), float(v)) for v, t in zip(*top)] if top else [])


NEAR_ZERO_TEMPERATURE = 1e-4  # below it, sampling is greedy decoding (5e-324 is 0 in the logits' fp32)


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    if sampling.temperature < NEAR_ZERO_TEMPERATURE:
        return int(logits.argmax())
    # the largest logit moved to 0 before dividing: no overflow to inf, so softmax never gives nan
    probabilities = torch.softmax((logits - logits.max()) / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = probabilities.sort(descending=True)
        before = ordered.cumsum(-1) - ordered  # mass of the tokens ranked above each one
        cut = before >= sampling.top_p  # keep the smallest head whose mass reaches top_p,
        cut[0] = False  # and always the most likely token (a top_p of 5e-324 is 0 in fp32: it cut them all)
        ordered[cut] = 0.0
        probabilities = torch.zeros_like(probabilities).scatter(0, order, ordered)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def _run_call(call: _Call) -> None:
    if not call.future.set_running_or_notify_cancel():
        return
    try:
        call.future.set_result(call.function())
    except BaseException as exc:  # handed to the caller
        call.future.set_exception(exc)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _random_bytes() -> bytes:
    import os

    return os.urandom(8)
