"""The models a server answers for: run folders and the base models under them, by name.

Every LoRA run on the same base shares one copy of the base weights: the base is wrapped once in a
peft model and each run's adapter is loaded into it under the run's name, so one forward pass can
serve rows for different adapters and the base (peft's `adapter_names`). Full fine-tunes load as
their own model; classifier runs load their head. At most `max_loaded_adapters` adapters sit in
memory at once: the least recently used one is unloaded and loaded again when asked for.

Loading and unloading touch the model, so they run on the engine's thread (see engine.Engine.call),
never beside a forward pass.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith.errors import ModelError

Kind = Literal["base", "adapter", "model", "classifier", "tagger", "reader"]
GENERATIVE: tuple[Kind, ...] = ("base", "adapter", "model")


@dataclass
class LineageWatch:
    """A run with generations served under one name: which generation answers, and when
    generations.json was last looked at."""

    run_dir: Path
    internal: str  # the Served entry answering now (`alias@genN`)
    generation: int
    stamp: tuple  # generations.json's (inode, mtime ns, size): written by rename, so a new file is a new inode


@dataclass
class Backend:
    """One set of weights in memory, and the adapters loaded into it (least recently used first)."""

    key: str
    model: Any
    context_length: int | None
    adapters: OrderedDict[str, Path] = field(default_factory=OrderedDict)

    @property
    def has_adapters(self) -> bool:
        return hasattr(self.model, "peft_config")


@dataclass
class Served:
    """A name the server answers to."""

    name: str
    kind: Kind
    backend: str  # Backend.key of the weights that answer
    tokenizer: Any = None
    info: Any = None  # data.template.TemplateInfo: the run's stop tokens and BOS rule
    system_prompt: str | None = None  # the one the run was trained with, used when a chat has none
    parent: str | None = None  # an adapter's base model name
    run_dir: Path | None = None
    adapter_dir: Path | None = None
    head: Any = None  # a task head's model: Classifier, Tagger or Reader (models/) for those kinds
    created: int = field(default_factory=lambda: int(time.time()))
    project: str | None = None  # a fine-tuning job's model: answers only its project's keys (None: every key)
    source: str | None = None  # a base or full model: what it was loaded from (catalog name or folder), to fine-tune
    generation: int | None = None  # a run with generations (tunesmith retrain): which one this is
    root_dir: Path | None = None  # ... and the run folder they belong to (what the store records)
    alias: str | None = None  # ... and the name clients use for the current one (this entry is `alias@genN`)

    @property
    def public_name(self) -> str:
        return self.alias or self.name

    def as_model_card(self) -> dict:
        """The entry GET /v1/models lists (OpenAI's Model, plus vLLM's `root` and `parent`)."""
        return {"id": self.public_name, "object": "model", "created": self.created, "owned_by": "tunesmith",
                "root": str(self.run_dir or self.name), "parent": self.parent,
                "kind": self.kind, **({"generation": self.generation} if self.generation is not None else {})}


def model_name(run_dir: Path) -> str:
    return Path(run_dir).resolve().name


def base_name(spec: str) -> str:
    """The name a base model answers to: a catalog name as it is, a folder or file by its name."""
    from tunesmith.models.catalog import CATALOG

    if spec in CATALOG:
        return spec
    path = Path(spec)
    return path.stem if path.suffix == ".gguf" else (path.name if path.name else spec)


class ServedModels:
    """Names -> served models; loads runs, shares bases, keeps the adapter cap."""

    def __init__(self, *, max_loaded_adapters: int = 8, device: str = "auto", precision: str = "auto") -> None:
        if max_loaded_adapters < 1:
            raise ModelError(f"max_loaded_adapters={max_loaded_adapters}: give 1 or more")
        self.max_loaded_adapters = max_loaded_adapters
        self.device = device
        self.precision = precision
        self.served: dict[str, Served] = {}
        self.backends: dict[str, Backend] = {}
        self.lineages: dict[str, LineageWatch] = {}

    # -- looking up -----------------------------------------------------------------------------
    def get(self, name: str) -> Served | None:
        watch = self.lineages.get(name)
        return self.served.get(watch.internal if watch else name)

    def listed(self) -> list[Served]:
        """What GET /v1/models shows: every served name, a run with generations once (its current one)."""
        current = {watch.internal for watch in self.lineages.values()}
        return [s for s in self.served.values() if s.alias is None or s.name in current]

    def cards(self) -> list[dict]:
        return [served.as_model_card() for served in self.listed()]

    def loaded_adapter_count(self) -> int:
        return sum(len(backend.adapters) for backend in self.backends.values())

    # -- adding ---------------------------------------------------------------------------------
    def add_run(self, run_dir: str | Path, name: str | None = None) -> Served:
        """Serve a run folder (or a model folder) under `name` (default: the folder's name); a run
        with generations (tunesmith retrain) answers with its current one."""
        path = Path(run_dir).expanduser()
        if not path.is_dir():
            raise ModelError(f"{run_dir}: no such folder; give a run folder that `tunesmith train` wrote")
        name = name or model_name(path)
        if name in self.served or name in self.lineages:
            raise ModelError(f"{name}: a model of that name is already served; give another name (NAME=FOLDER)")
        from tunesmith.lineage import has_lineage

        if has_lineage(path):
            return self._add_lineage(path, name)
        served = self._add_folder(path, name)
        if served.kind in GENERATIVE and (path / "manifest.json").is_file():
            # generation 0 of a run that may be retrained while served: watch for its generations.json
            served.generation, served.root_dir = 0, path.resolve()
            self.lineages[name] = LineageWatch(path, name, 0, ())
        return served

    def _add_lineage(self, run_dir: Path, alias: str) -> Served:
        from tunesmith.lineage import current_generation, lineage_path

        generation = current_generation(run_dir)
        internal = f"{alias}@gen{generation.number}"
        plain = self.served.get(alias)  # the run as it was served before it had generations: generation 0
        if internal not in self.served and generation.number == 0 and plain is not None and plain.generation == 0:
            internal = alias
        served = self.served.get(internal) or self._add_folder(generation.run_folder, internal)
        served.generation, served.root_dir, served.alias = generation.number, run_dir.resolve(), alias
        if plain is not None and plain.generation == 0:
            plain.alias = alias  # listed only while it is the current generation
        self.lineages[alias] = LineageWatch(run_dir, internal, generation.number, _stamp(lineage_path(run_dir)))
        return served

    def lineage_changed(self, name: str) -> bool:
        """Has the run served as `name` a new generations.json? One stat per request (microseconds,
        against milliseconds of generation), so the request after a promotion is answered by it."""
        watch = self.lineages.get(name)
        if watch is None:
            return False
        from tunesmith.lineage import lineage_path

        return _stamp(lineage_path(watch.run_dir)) != watch.stamp

    def refresh_lineage(self, name: str) -> Served:
        """Answer `name` with its run's current generation (loaded beside the old one, which stays
        until the adapter cap evicts it: rows still decoding with it finish with it). Runs on the
        engine's thread."""
        from tunesmith.lineage import current_generation, lineage_path

        watch = self.lineages[name]
        try:
            if current_generation(watch.run_dir).number == watch.generation:  # e.g. a generation refused by its gate
                watch.stamp = _stamp(lineage_path(watch.run_dir))
                return self.served[watch.internal]
            return self._add_lineage(watch.run_dir, name)  # swaps the watch in one assignment at its end
        except Exception as exc:  # a generation that fails to load leaves the old one answering
            import sys

            watch.stamp = _stamp(lineage_path(watch.run_dir))
            print(f"tunesmith serve: {name}: kept generation {watch.generation}; the new current one failed to "
                  f"load: {exc}", file=sys.stderr)
            return self.served[watch.internal]

    def _add_folder(self, path: Path, name: str) -> Served:
        manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else {}
        method = manifest.get("method")
        if method == "classify":
            return self._add_classifier(path, name)
        if method == "token-classify":
            from tunesmith.models.tagger import load_tagger

            return self._add_head(path, name, "tagger", load_tagger(str(path)))
        if method == "extractive-qa":
            from tunesmith.models.reader import load_reader

            return self._add_head(path, name, "reader", load_reader(str(path)))
        if (path / "adapter" / "adapter_config.json").is_file():
            return self._add_adapter(path, path / "adapter", name)
        if (path / "adapter_config.json").is_file():
            return self._add_adapter(path, path, name)
        return self._add_model(str(path), name, "model", run_dir=path)

    def add_base(self, spec: str, name: str | None = None) -> Served:
        """Serve a base model (catalog name, folder, .gguf) on its own."""
        return self._add_model(spec, name or base_name(spec), "base")

    def _add_model(self, target: str, name: str, kind: Kind, *, run_dir: Path | None = None) -> Served:
        from tunesmith.models.generate import load_for_generation

        loaded = load_for_generation(target, device=self.device, precision=self.precision)
        key = f"{kind}:{Path(target).resolve() if Path(target).exists() else target}"
        self.backends[key] = Backend(key, loaded.model, _context_length(loaded.model))
        served = Served(name, kind, key, loaded.tokenizer, loaded.info, _system_prompt(run_dir), run_dir=run_dir,
                        source=target if kind in ("base", "model") else None)
        self.served[name] = served
        return served

    def _add_adapter(self, run_dir: Path, adapter_dir: Path, name: str) -> Served:
        from tunesmith.data.template import analyze_template, ensure_chat_template
        from tunesmith.models.load import ModelSource, load_tokenizer, resolve_model

        base_spec = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").is_file() else {}
        shown_spec = (manifest.get("base_model") or {}).get("spec") or base_spec
        backend = self._base_backend(resolve_model(base_spec).location, shown_spec)
        tokenizer = load_tokenizer(ModelSource(str(adapter_dir), "folder", str(adapter_dir)))
        tokenizer.padding_side = "left"
        ensure_chat_template(tokenizer, None)
        info = analyze_template(tokenizer, _generation_eos(backend.model))
        parent = next(s.name for s in self.served.values() if s.backend == backend.key and s.kind == "base")
        served = Served(name, "adapter", backend.key, tokenizer, info, _system_prompt(run_dir), parent=parent,
                        run_dir=run_dir, adapter_dir=adapter_dir)
        self.served[name] = served
        self.ensure_adapters(backend, [name])
        return served

    def _base_backend(self, location: str, spec: str) -> Backend:
        """The backend of a base model, loaded (and served under its own name) the first time."""
        key = f"base:{Path(location).resolve()}"
        if key not in self.backends:
            name = base_name(spec)
            if name in self.served:
                name = f"{name}-base"
            number = 2
            while name in self.served:  # generations' bases are all folders called `model`
                name, number = f"{base_name(spec)}-base{number}", number + 1
            served = self._add_model(location, name, "base")
            self.backends[key] = self.backends.pop(served.backend)
            self.backends[key].key = key
            served.backend = key
        return self.backends[key]

    def _add_classifier(self, run_dir: Path, name: str) -> Served:
        from tunesmith.models.classifier import load_classifier

        return self._add_head(run_dir, name, "classifier", load_classifier(str(run_dir)))

    def _add_head(self, run_dir: Path, name: str, kind: Kind, head: Any) -> Served:
        served = Served(name, kind, f"{kind}:{run_dir.resolve()}", head.tokenizer, run_dir=run_dir, head=head)
        self.served[name] = served
        return served

    # -- adapters in memory ---------------------------------------------------------------------
    def ensure_adapters(self, backend: Backend, names: list[str]) -> None:
        """Load the named adapters into their base (unloading the least recently used beyond the cap)
        and mark them used now. Runs on the engine's thread."""
        wanted = [n for n in dict.fromkeys(names) if self.served[n].kind == "adapter"]
        if len(wanted) > self.max_loaded_adapters:
            raise ModelError(f"one batch needs {len(wanted)} adapters, over max_loaded_adapters="
                             f"{self.max_loaded_adapters}")
        for name in wanted:
            if name in backend.adapters:
                backend.adapters.move_to_end(name)
                continue
            while self.loaded_adapter_count() >= self.max_loaded_adapters:
                self._evict(keep=set(wanted))
            self._load_adapter(backend, name)

    def _load_adapter(self, backend: Backend, name: str) -> None:
        adapter_dir = self.served[name].adapter_dir
        if backend.has_adapters and name in backend.model.peft_config:
            pass  # the base's last adapter, kept in the weights when it was unloaded
        elif backend.has_adapters:
            backend.model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
        else:
            from peft import PeftModel

            backend.model = PeftModel.from_pretrained(backend.model, str(adapter_dir), adapter_name=name,
                                                      is_trainable=False).eval()
        backend.adapters[name] = adapter_dir

    def _evict(self, keep: set[str]) -> None:
        """Unload the least recently used adapter outside `keep`, across all bases."""
        oldest = None
        for backend in self.backends.values():
            for name in backend.adapters:
                if name not in keep:
                    oldest = (backend, name)
                    break
            if oldest:
                break
        if oldest is None:
            raise ModelError("every loaded adapter is in use; raise max_loaded_adapters")
        backend, name = oldest
        self._unload_adapter(backend, name)

    def _unload_adapter(self, backend: Backend, name: str) -> None:
        if len(backend.model.peft_config) > 1:
            import warnings

            with warnings.catch_warnings():  # peft notes that another adapter became the active one: each
                warnings.simplefilter("ignore", UserWarning)  # request names its adapter, so none is "active"
                backend.model.delete_adapter(name)
        # the last adapter of a base stays in the weights (peft keeps one); it is only forgotten here
        # and answers nothing: requests name their adapter or "__base__" explicitly
        backend.adapters.pop(name, None)

    def remove(self, name: str) -> Served:
        """Stop serving an adapter run (vLLM's unload_lora_adapter). Runs on the engine's thread."""
        served = self.get(name)
        if served is None or served.kind != "adapter":
            raise KeyError(name)
        self.lineages.pop(name, None)
        name = served.name
        backend = self.backends[served.backend]
        if name in backend.adapters:
            self._unload_adapter(backend, name)
        del self.served[name]
        return served


def _stamp(path: Path) -> tuple:
    try:
        stat = path.stat()
    except OSError:
        return ()
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _context_length(model: Any) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "max_position_embeddings", None)


def _generation_eos(model: Any) -> Any:
    config = getattr(model, "generation_config", None)
    return getattr(config, "eos_token_id", None)


def _system_prompt(run_dir: Path | None) -> str | None:
    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return None
    from tunesmith.config import load_config

    return load_config(Path(run_dir) / "config.yaml").data.system_prompt
