"""Keeping what the server answers (`tunesmith serve --store`): one row per chat completion, written
after the answer is sent, off the event loop; personal data scrubbed at write time on request;
rows past the retention deleted as new ones arrive."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from tunesmith.serve.auth import creating_project
from tunesmith.serve.errors import APIError
from tunesmith.serve.models import Served
from tunesmith.store.completions import Completions
from tunesmith.store.tables import CompletionRow

PURGE_EVERY_SECONDS = 3600.0


@dataclass
class Recorder:
    """The server's store of completions, and how it writes them."""

    completions: Completions
    scrub_pii: bool = False
    retention_days: float | None = None
    _last_purge: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, **fields: Any) -> CompletionRow:
        scrubbed = 0
        if self.scrub_pii:
            fields, scrubbed = _scrubbed(fields)
        row = self.completions.add(**fields, scrubbed=scrubbed)
        self.purge_if_due()
        return row

    def purge_if_due(self) -> int:
        if self.retention_days is None:
            return 0
        with self._lock:
            if time.monotonic() - self._last_purge < PURGE_EVERY_SECONDS and self._last_purge:
                return 0
            self._last_purge = time.monotonic()
        return self.completions.purge(self.retention_days * 86400)


def recorder_of(request: Request) -> Recorder | None:
    return request.app.state.recorder


def wants_store(request: Request, body: Any) -> bool:
    """Store this request? With --store, yes unless it says `store: false` (OpenAI's field); a
    request that asks for `store: true` on a server without a store is refused, not ignored."""
    asked = (body.model_extra or {}).get("store")
    if recorder_of(request) is None:
        if asked:
            raise APIError(400, "this server keeps no completions; start it with `tunesmith serve --store`",
                           param="store", code="store_unavailable")
        return False
    return asked is not False


def params_of(body: Any) -> dict:
    return {"temperature": body.temperature, "top_p": body.top_p, "max_tokens": body.token_budget(), "n": body.n,
            "seed": body.seed, "stop": list(body.stop_strings()) or None}


async def record(request: Request, *, completion_id: str, served: Served, messages: list[dict], choices: list[dict],
                 body: Any, prompt_tokens: int, completion_tokens: int, started: float,
                 error: str | None = None) -> None:
    """Write one completion (or a failed request) to the store, off the event loop."""
    recorder = recorder_of(request)
    metadata = (body.model_extra or {}).get("metadata")
    fields = dict(id=completion_id, project=creating_project(request), model=body.model, kind=served.kind,
                  run_dir=str(Path(served.root_dir or served.run_dir).resolve()) if served.run_dir else None, generation=served.generation,
                  endpoint="chat", messages=messages, answer=choices[0]["text"] if choices else None, choices=choices,
                  params=params_of(body), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  latency_ms=round((time.perf_counter() - started) * 1000, 2),
                  metadata_=metadata if isinstance(metadata, dict) else None, error=error)
    await asyncio.to_thread(recorder.write, **fields)


def _scrubbed(fields: dict) -> tuple[dict, int]:
    from tunesmith.data.audit.pii import scrub

    replaced = 0

    def clean(text: str | None) -> str | None:
        nonlocal replaced
        if not text:
            return text
        text, found = scrub(text)
        replaced += len(found)
        return text

    fields = dict(fields)
    fields["messages"] = [{**m, "content": clean(m.get("content"))} for m in fields["messages"]]
    fields["choices"] = [{**c, "text": clean(c.get("text"))} for c in fields["choices"]]
    fields["answer"] = clean(fields["answer"])
    return fields, replaced


def completion_object(row: CompletionRow, feedback: list | None = None) -> dict:
    """A stored completion as OpenAI's ChatCompletion (with its `metadata`), plus tunesmith's own
    fields: what answered (the run folder's name, `run`, never its path on the server; its
    `generation`), the latency, and the feedback so far."""
    return {
        "id": row.id, "object": "chat.completion", "created": row.created_at, "model": row.model,
        "choices": [{"index": c["index"], "message": {"role": "assistant", "content": c["text"], "refusal": None},
                     "logprobs": None, "finish_reason": c.get("finish_reason")} for c in row.choices],
        "usage": {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
                  "total_tokens": row.prompt_tokens + row.completion_tokens},
        "metadata": row.metadata_, "request_id": row.id,
        "tunesmith": {"run": Path(row.run_dir).name if row.run_dir else None, "generation": row.generation, "latency_ms": row.latency_ms,
                      "params": row.params, "scrubbed": row.scrubbed,
                      "feedback": [feedback_object(f) for f in feedback or []]},
    }


def feedback_object(row: Any) -> dict:
    return {"id": row.id, "object": "chat.completion.feedback", "completion_id": row.completion_id,
            "created_at": row.created_at, "score": row.score, "comment": row.comment, "correction": row.correction}
