"""What of the served models sits in memory: each base's LoRA adapters and the full fine-tunes and
task heads, each set under its own least-recently-used cap, and the weights of a generation that
was replaced, freed once its last rows finish.

Everything here touches weights, so it runs on the engine's thread (engine.Engine.call and the
decoding loop), never beside a forward pass. A served entry stays registered while its weights are
out of memory: the next request that names it loads them again.

An adapter's name inside peft is an internal id (`adapter_3`), never the name clients use: peft
puts adapter names into module paths, where a `.` (a job suffix `v1.2`, a base called
`Qwen2.5-0.5B`) breaks loading.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tunesmith.errors import ModelError


class Served(Protocol):
    """What residency reads of a served entry (serve/models.py's Served)."""

    name: str
    kind: str
    backend: str
    adapter_id: str | None
    adapter_dir: Path | None
    head: Any

EVICTABLE = ("model", "classifier", "tagger", "reader")  # loaded from a run folder, loaded again on demand


@dataclass
class Backend:
    """One set of weights in memory, and the adapters loaded into it (least recently used first,
    by internal adapter id)."""

    key: str
    model: Any
    context_length: int | None
    adapters: OrderedDict[str, Path] = field(default_factory=OrderedDict)

    @property
    def has_adapters(self) -> bool:
        return hasattr(self.model, "peft_config")


class Residency:
    """The caps, the least-recently-used orders, and the rows in flight per served entry."""

    def __init__(self, max_loaded_adapters: int, max_loaded_models: int) -> None:
        for name, value in (("max_loaded_adapters", max_loaded_adapters), ("max_loaded_models", max_loaded_models)):
            if value < 1:
                raise ModelError(f"{name}={value}: give 1 or more")
        self.max_loaded_adapters = max_loaded_adapters
        self.max_loaded_models = max_loaded_models
        self.backends: dict[str, Backend] = {}
        self.models: OrderedDict[str, Served] = OrderedDict()  # evictable entries in memory, by internal name
        self.in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- rows in flight (any thread) ----------------------------------------------------------------
    def rows_started(self, served: Served, rows: int = 1) -> None:
        with self._lock:
            self.in_flight[served.name] += rows

    def row_finished(self, served: Served) -> None:
        with self._lock:
            self.in_flight[served.name] -= 1
            if self.in_flight[served.name] <= 0:
                del self.in_flight[served.name]

    def busy(self, served: Served) -> bool:
        with self._lock:
            return self.in_flight.get(served.name, 0) > 0

    def loaded_adapter_count(self) -> int:
        return sum(len(backend.adapters) for backend in self.backends.values())

    # -- adapters -------------------------------------------------------------------------------
    def ensure_adapters(self, backend: Backend, wanted: list[Served]) -> None:
        """Load the adapters `wanted` needs into their base (unloading the least recently used
        beyond the cap) and mark them used now."""
        adapters = list({s.adapter_id: s for s in wanted if s.kind == "adapter"}.values())
        if len(adapters) > self.max_loaded_adapters:
            raise ModelError(f"one batch needs {len(adapters)} adapters, over max_loaded_adapters="
                             f"{self.max_loaded_adapters}")
        keep = {s.adapter_id for s in adapters}
        for served in adapters:
            if served.adapter_id in backend.adapters:
                backend.adapters.move_to_end(served.adapter_id)
                continue
            while self.loaded_adapter_count() >= self.max_loaded_adapters:
                self._evict_adapter(keep)
            _load_adapter(backend, served)

    def _evict_adapter(self, keep: set[str]) -> None:
        """Unload the least recently used adapter outside `keep`, across all bases."""
        for backend in self.backends.values():
            for adapter_id in backend.adapters:
                if adapter_id not in keep:
                    unload_adapter(backend, adapter_id)
                    return
        raise ModelError("every loaded adapter is in use; raise max_loaded_adapters")

    # -- full fine-tunes and task heads ---------------------------------------------------------
    def touch(self, served: Served) -> None:
        """`served` (in memory now) was used: newest in its order; the oldest others beyond the
        cap leave memory, unless rows are decoding with them."""
        if served.kind not in EVICTABLE:
            return
        self.models[served.name] = served
        self.models.move_to_end(served.name)
        for other in list(self.models.values()):
            if len(self.models) <= self.max_loaded_models:
                break
            if other is not served and not self.busy(other):
                self.drop_weights(other)

    def drop_weights(self, served: Served) -> None:
        """Free a full fine-tune's or a head's weights (its entry stays, and loads again on demand)."""
        self.models.pop(served.name, None)
        if served.kind == "model":
            self.backends.pop(served.backend, None)
        elif served.kind in EVICTABLE:
            served.head = None


def _load_adapter(backend: Backend, served: Served) -> None:
    adapter_id = served.adapter_id
    if backend.has_adapters and adapter_id in backend.model.peft_config:
        pass  # the base's last adapter, kept in the weights when it was unloaded
    elif backend.has_adapters:
        backend.model.load_adapter(str(served.adapter_dir), adapter_name=adapter_id, is_trainable=False)
    else:
        from peft import PeftModel

        backend.model = PeftModel.from_pretrained(backend.model, str(served.adapter_dir), adapter_name=adapter_id,
                                                  is_trainable=False).eval()
    backend.adapters[adapter_id] = served.adapter_dir
    for stale in [name for name in backend.model.peft_config if name not in backend.adapters]:
        unload_adapter(backend, stale)  # one kept only because peft keeps a last adapter: free it now


def unload_adapter(backend: Backend, adapter_id: str) -> None:
    if backend.has_adapters and adapter_id in backend.model.peft_config and len(backend.model.peft_config) > 1:
        import warnings

        with warnings.catch_warnings():  # peft notes that another adapter became the active one: each
            warnings.simplefilter("ignore", UserWarning)  # request names its adapter, so none is "active"
            backend.model.delete_adapter(adapter_id)
    # the last adapter of a base stays in the weights (peft keeps one); it is only forgotten here
    # and answers nothing: requests name their adapter or "__base__" explicitly
    backend.adapters.pop(adapter_id, None)
