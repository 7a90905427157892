"""Imports point one way: base -> data -> models -> graders, training -> eval -> pipeline -> store -> improve
-> the rest (tune, export, jobs, serve, cli).

A module may import its own layer and the layers below it, never one above: data never knows about
models, models never about training, training never about evaluation, evaluation never about the
whole runs built from it (pipeline), a whole run never about the database (store), the store never
about the loop after deployment (improve) that reads it, and nothing below the top imports the root
package. Lazy imports inside functions count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tunesmith

PACKAGE = Path(tunesmith.__file__).parent
BASE = {"errors", "files", "config", "assets", "allocator", "progress", "_version"}
LAYERS = {"data": 1, "models": 2, "graders": 3, "training": 3, "eval": 4, "pipeline": 5, "store": 6, "improve": 7}
TOP = 8


def layer_of(module: str) -> int:
    """The layer of a dotted tunesmith module name."""
    parts = module.split(".")
    if parts == ["tunesmith"]:
        return TOP  # the root package is the public API, above everything
    head = parts[1]
    if head in BASE:
        return 0
    return LAYERS.get(head, TOP)


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "tunesmith"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "tunesmith":
            if node.module == "tunesmith":  # `from tunesmith import x`: x may be a submodule
                found += [(node.lineno, f"tunesmith.{alias.name}") if (PACKAGE / alias.name).exists()
                          or (PACKAGE / f"{alias.name}.py").exists() else (node.lineno, "tunesmith") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        own = layer_of(module)
        for line, imported in imports_of(path):
            if layer_of(imported) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {own}) imports {imported} "
                              f"(layer {layer_of(imported)})")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


METHOD_MODULES = {"sft", "pretrain", "classify", "token_classify", "extractive_qa", "heads", "preference", "online_dpo",
                  "session", "methods", "loop", "resume", "estimate"}


def test_evaluation_uses_no_training_methods_internals():
    """eval may use the shared pieces of training (loss, metrics, rewards), never a method or the loop."""
    found = []
    for path in sorted((PACKAGE / "eval").glob("*.py")):
        for line, imported in imports_of(path):
            parts = imported.split(".")
            if parts[:2] == ["tunesmith", "training"] and len(parts) > 2 and parts[2] in METHOD_MODULES:
                found.append(f"eval/{path.name}:{line} imports {imported}")
    assert not found, "\n".join(found)


def test_the_layer_rule_itself_catches_an_upward_import(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tunesmith.training.session import say\n")
    assert [layer_of(name) for _, name in imports_of(bad)] == [3]
    assert layer_of("tunesmith.data.inspect") == 1 and layer_of("tunesmith") == TOP
    assert (layer_of("tunesmith.eval.compare") < layer_of("tunesmith.pipeline.train") < layer_of("tunesmith.store.db")
            < layer_of("tunesmith.improve.monitor.report") < layer_of("tunesmith.serve.app") == layer_of("tunesmith.cli.app"))


# Among the top-level packages of the service: serve may call jobs and store, jobs may call store,
# and the store knows neither (workers on other machines import it without a server).
SERVICE_ORDER = {"store": 0, "jobs": 1, "serve": 2}


def test_the_store_knows_no_worker_or_server_and_the_worker_no_server():
    upward = []
    for package, rank in SERVICE_ORDER.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for line, imported in imports_of(path):
                parts = imported.split(".")
                if len(parts) > 1 and SERVICE_ORDER.get(parts[1], -1) > rank:
                    upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not upward, "\n".join(upward)
