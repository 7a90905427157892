"""The models a server answers for: run folders and the base models under them, by name.

Every LoRA run on the same base shares one copy of the base weights: the base is wrapped once in a
peft model and each run's adapter is loaded into it under the run's name, so one forward pass can
serve rows for different adapters and the base (peft's `adapter_names`). Full fine-tunes load as
their own model; classifier, tagger and reader runs load their head. What sits in memory, under
which caps, is residency.py's: an entry registered here may have its weights out of memory, and
they load again when a request names it.

Loading and unloading touch the model, so they run on the engine's thread (see engine.Engine.call),
never beside a forward pass. An entry is registered only once its weights loaded: a folder that
cannot load leaves nothing behind.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith.errors import ModelError
from tunesmith.serve.residency import Backend, Residency, unload_adapter

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
    project: str | None = None  # the project every generation answers to (None: every key)


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
    context_length: int | None = None  # the model's positions (prompt + answer), known while unloaded too
    adapter_id: str | None = None  # an adapter's name inside peft (internal: public names may hold a `.`)
    retired: bool = False  # a replaced generation: freed once its last rows finish

    @property
    def public_name(self) -> str:
        return self.alias or self.name

    def as_model_card(self) -> dict:
        """The entry GET /v1/models lists (OpenAI's Model, plus vLLM's `root` and `parent`): names
        only, never a path on the server."""
        return {"id": self.public_name, "object": "model", "created": self.created, "owned_by": self.project or "tunesmith",
                "root": self.parent or self.public_name, "parent": self.parent,
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

    def __init__(self, *, max_loaded_adapters: int = 8, max_loaded_models: int = 4, device: str = "auto",
                 precision: str = "auto") -> None:
        self.residency = Residency(max_loaded_adapters, max_loaded_models)
        self.device = device
        self.precision = precision
        self.served: dict[str, Served] = {}
        self.lineages: dict[str, LineageWatch] = {}
        self._adapter_ids = itertools.count(1)

    @property
    def backends(self) -> dict[str, Backend]:
        return self.residency.backends

    @property
    def max_loaded_adapters(self) -> int:
        return self.residency.max_loaded_adapters

    # -- looking up -----------------------------------------------------------------------------
    def get(self, name: str) -> Served | None:
        watch = self.lineages.get(name)
        return self.served.get(watch.internal if watch else name)

    def listed(self) -> list[Served]:
        """What GET /v1/models shows: every served name, a run with generations once (its current one)."""
        current = {watch.internal for watch in self.lineages.values()}
        return [s for s in self.served.values() if not s.retired and (s.alias is None or s.name in current)]

    def cards(self) -> list[dict]:
        return [served.as_model_card() for served in self.listed()]

    def loaded_adapter_count(self) -> int:
        return self.residency.loaded_adapter_count()

    # -- adding ---------------------------------------------------------------------------------
    def add_run(self, run_dir: str | Path, name: str | None = None, project: str | None = None) -> Served:
        """Serve a run folder (or a model folder) under `name` (default: the folder's name), for
        `project`'s keys only when one is given (set before the name is registered, so no request
        ever sees it unwalled); a run with generations (tunesmith retrain) answers with its current one."""
        path = Path(run_dir).expanduser()
        if not path.is_dir():
            raise ModelError(f"{run_dir}: no such folder; give a run folder that `tunesmith train` wrote")
        name = name or model_name(path)
        if name in self.served or name in self.lineages:
            raise ModelError(f"{name}: a model of that name is already served; give another name (NAME=FOLDER)")
        from tunesmith.improve.lineage import has_lineage

        if has_lineage(path):
            return self._add_lineage(path, name, project)
        served = self._add_folder(path, name, project)
        if served.kind in GENERATIVE and (path / "manifest.json").is_file():
            # generation 0 of a run that may be retrained while served: watch for its generations.json
            served.generation, served.root_dir = 0, path.resolve()
            self.lineages[name] = LineageWatch(path, name, 0, (), project)
        return served

    def _add_lineage(self, run_dir: Path, alias: str, project: str | None) -> Served:
        from tunesmith.improve.lineage import current_generation, lineage_path

        generation = current_generation(run_dir)
        internal = f"{alias}@gen{generation.number}"
        plain = self.served.get(alias)  # the run as it was served before it had generations: generation 0
        if internal not in self.served and generation.number == 0 and plain is not None and plain.generation == 0:
            internal = alias
        served = self.served.get(internal) or self._add_folder(generation.run_folder, internal, project)
        served.generation, served.root_dir, served.alias = generation.number, run_dir.resolve(), alias
        served.retired = False  # a rollback to a generation whose last rows were still decoding
        if plain is not None and plain.generation == 0:
            plain.alias = alias  # listed only while it is the current generation
        self.lineages[alias] = LineageWatch(run_dir, internal, generation.number, _stamp(lineage_path(run_dir)),
                                            project)
        return served

    def lineage_changed(self, name: str) -> bool:
        """Has the run served as `name` a new generations.json? One stat per request (microseconds,
        against milliseconds of generation), so the request after a promotion is answered by it."""
        watch = self.lineages.get(name)
        if watch is None:
            return False
        from tunesmith.improve.lineage import lineage_path

        return _stamp(lineage_path(watch.run_dir)) != watch.stamp

    def refresh_lineage(self, name: str) -> Served:
        """Answer `name` with its run's current generation, loaded beside the old one; the old
        one's weights are freed once its last rows finish (release_retired). Runs on the engine's
        thread."""
        from tunesmith.improve.lineage import current_generation, lineage_path

        watch = self.lineages[name]
        previous = watch.internal
        try:
            if current_generation(watch.run_dir).number == watch.generation:  # e.g. a generation refused by its gate
                watch.stamp = _stamp(lineage_path(watch.run_dir))
                return self.served[watch.internal]
            served = self._add_lineage(watch.run_dir, name, watch.project)  # swaps the watch in one assignment at its end
        except Exception as exc:  # a generation that fails to load leaves the old one answering
            import sys

            watch.stamp = _stamp(lineage_path(watch.run_dir))
            print(f"tunesmith serve: {name}: kept generation {watch.generation}; the new current one failed to "
                  f"load: {exc}", file=sys.stderr)
            return self.served[watch.internal]
        if previous != served.name and previous in self.served:
            self.served[previous].retired = True
            self.release_retired()
        return served

    def release_retired(self) -> None:
        """Free the weights of replaced generations that no row decodes with any more. Runs on the
        engine's thread (after each batch, and when a generation is replaced)."""
        for served in [s for s in self.served.values() if s.retired and not self.residency.busy(s)]:
            self._forget(served)

    def _forget(self, served: Served) -> None:
        """Stop serving an entry and free what it alone holds in memory."""
        if served.kind == "adapter":
            unload_adapter(self.backends[served.backend], served.adapter_id)
        else:
            self.residency.drop_weights(served)
        del self.served[served.name]

    def _add_folder(self, path: Path, name: str, project: str | None) -> Served:
        manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else {}
        kind = HEAD_KINDS.get(manifest.get("method"))
        if kind is not None:
            return self._add_head(path, name, kind, project)
        if (path / "adapter" / "adapter_config.json").is_file():
            return self._add_adapter(path, path / "adapter", name, project)
        if (path / "adapter_config.json").is_file():
            return self._add_adapter(path, path, name, project)
        return self._add_model(str(path), name, "model", run_dir=path, project=project)

    def add_base(self, spec: str, name: str | None = None) -> Served:
        """Serve a base model (catalog name, folder, .gguf) on its own."""
        return self._add_model(spec, name or base_name(spec), "base")

    def _add_model(self, target: str, name: str, kind: Kind, *, run_dir: Path | None = None,
                   project: str | None = None) -> Served:
        from tunesmith.models.generate import load_for_generation

        loaded = load_for_generation(target, device=self.device, precision=self.precision)
        key = f"{kind}:{Path(target).resolve() if Path(target).exists() else target}"
        self.backends[key] = Backend(key, loaded.model, _context_length(loaded.model))
        served = Served(name, kind, key, loaded.tokenizer, loaded.info, _system_prompt(run_dir), run_dir=run_dir,
                        source=target if kind in ("base", "model") else None,
                        context_length=self.backends[key].context_length, project=project)
        self.served[name] = served
        self.residency.touch(served)
        return served

    def _add_adapter(self, run_dir: Path, adapter_dir: Path, name: str, project: str | None) -> Served:
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
                        run_dir=run_dir, adapter_dir=adapter_dir, adapter_id=f"adapter_{next(self._adapter_ids)}",
                        context_length=backend.context_length, project=project)
        self.residency.ensure_adapters(backend, [served])  # registered only once it loaded
        self.served[name] = served
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

    def _add_head(self, run_dir: Path, name: str, kind: Kind, project: str | None) -> Served:
        head = _load_head(kind, run_dir)
        served = Served(name, kind, f"{kind}:{run_dir.resolve()}", head.tokenizer, run_dir=run_dir, head=head,
                        project=project)
        self.served[name] = served
        self.residency.touch(served)
        return served

    # -- weights in memory (the engine's thread) ------------------------------------------------
    def backend_for(self, served: Served) -> Backend:
        """The weights a generative entry decodes with, loaded again if the cap let them go."""
        if served.kind == "model" and served.backend not in self.backends:
            from tunesmith.models.generate import load_for_generation

            loaded = load_for_generation(served.source, device=self.device, precision=self.precision)
            self.backends[served.backend] = Backend(served.backend, loaded.model, _context_length(loaded.model))
        self.residency.touch(served)
        return self.backends[served.backend]

    def head_of(self, served: Served) -> Any:
        """A classifier's, tagger's or reader's head, loaded again if the cap let it go."""
        if served.head is None:
            served.head = _load_head(served.kind, served.run_dir)
        self.residency.touch(served)
        return served.head

    def remove(self, name: str) -> Served:
        """Stop serving an adapter run (vLLM's unload_lora_adapter). Runs on the engine's thread."""
        served = self.get(name)
        if served is None or served.kind != "adapter":
            raise KeyError(name)
        self.lineages.pop(name, None)
        self._forget(served)
        return served


HEAD_KINDS: dict[str | None, Kind] = {"classify": "classifier", "token-classify": "tagger", "extractive-qa": "reader"}


def _load_head(kind: Kind, run_dir: Path) -> Any:
    if kind == "classifier":
        from tunesmith.models.classifier import load_classifier

        return load_classifier(str(run_dir))
    if kind == "tagger":
        from tunesmith.models.tagger import load_tagger

        return load_tagger(str(run_dir))
    from tunesmith.models.reader import load_reader

    return load_reader(str(run_dir))


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
