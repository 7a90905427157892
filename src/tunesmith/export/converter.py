"""llama.cpp's own conversion scripts, taken from a registry package, run without building anything.

Why this source: llama.cpp's `convert_hf_to_gguf.py` is what every GGUF on the hub was made with, and
it changes with every new architecture; writing our own would drift from it. The package that ships
it, best kept, is llama-cpp-python's source archive (its `vendor/llama.cpp` is llama.cpp at a pinned
commit, with the matching `gguf-py`). We read the scripts out of that archive once into the cache
(nothing of it is built or installed, no git clone, no compiler) and run them with this Python, in a
subprocess: they put their own `gguf-py` first on their path, so the writer always matches the
converter, and a converter crash cannot take the caller down.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from tunesmith.assets import fetch_package_members
from tunesmith.errors import TunesmithError

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"  # llama.cpp as vendored on 2026-10; its converter knows Llama, Qwen2/3, Gemma 3, Mistral, Phi-3, ...
_ROOT = f"llama_cpp_python-{VERSION}/vendor/llama.cpp"
_MEMBERS = tuple(f"{_ROOT}/{name}" for name in
                 ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py", "LICENSE"))
# What the converter imports beyond torch, transformers and numpy (its requirements file).
_NEEDS = {"sentencepiece": "sentencepiece"}


def converter_dir() -> Path:
    """The folder holding llama.cpp's conversion scripts, fetched once from PyPI."""
    missing = [package for module, package in _NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise TunesmithError(
            f"GGUF export needs {', '.join(missing)} (llama.cpp's converter imports it); "
            "pip install 'tunesmith[export]'"
        )
    paths = fetch_package_members(PACKAGE, VERSION, _MEMBERS, sdist=True)
    return paths[0].parent


def run_script(script: str, args: list[str], *, what: str) -> None:
    """Run one of llama.cpp's Python scripts; a failure is one line with the script's last words."""
    folder = converter_dir()
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "gguf-py"), str(folder)])
    result = subprocess.run([sys.executable, str(folder / script), *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise TunesmithError(f"{what} failed in llama.cpp's {script}: {reason}")


def run_module(module: str, args: list[str], *, what: str) -> None:
    """Run a module of the vendored gguf-py (e.g. gguf.scripts.gguf_new_metadata)."""
    folder = converter_dir()
    env = dict(os.environ, PYTHONPATH=str(folder / "gguf-py"))
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        raise TunesmithError(f"{what} failed in gguf-py's {module}: {lines[-1] if lines else result.returncode}")
