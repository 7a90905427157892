"""What the GPU check runs on: the device, the versions that matter, whether tunesmith and the
benchmarks' packages import, and every requirement (tunesmith's, its serve and bench extras', and
theirs in turn) that the installed packages do not meet, so that a failure further on is explained
here. Writes JSON (--json) and prints it; stdlib and `packaging` only, so it runs whatever is missing.

    python benchmarks/gpu/env_check.py --json env.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import json
import platform
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("torch", "triton", "transformers", "peft", "accelerate", "tokenizers", "huggingface-hub", "safetensors",
            "trl", "datasets", "liger-kernel", "pydantic", "fastapi", "openai", "numpy", "pyarrow")
IMPORTS = ("tunesmith", "tunesmith.serve.app", "openai", "trl", "liger_kernel")
EXTRAS = ("serve", "bench")  # the serving benchmark's server, the training benchmark's TRL


def device() -> dict:
    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
             "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        found.update(name=properties.name, memory_gib=round(properties.total_memory / 2**30, 1),
                     capability=f"{properties.major}.{properties.minor}", bf16=torch.cuda.is_bf16_supported())
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        found["driver"] = smi.stdout.strip()
    return found


def versions() -> dict:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def imports() -> dict:
    found = {}
    for module in IMPORTS:
        try:
            importlib.import_module(module)
            found[module] = "ok"
        except Exception as exc:  # what the part that needs it will fail on
            found[module] = f"{type(exc).__name__}: {exc}"[:300]
    return found


def unmet_requirements() -> list[str]:
    """Requirements (transitively, extras left out) that the installed packages do not satisfy."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    queue = [Requirement(text) for text in project["dependencies"]]
    for extra in EXTRAS:
        queue += [Requirement(text) for text in project["optional-dependencies"].get(extra, [])]
    problems, seen = [], set()
    while queue:
        requirement = queue.pop()
        key = (requirement.name.lower().replace("_", "-"), str(requirement.specifier))
        if key in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(key)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement} ({installed} installed)")
        for text in metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            if not needed.marker or needed.marker.evaluate({"extra": ""}):
                queue.append(needed)
    return sorted(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the findings here")
    args = parser.parse_args()
    found = {"device": device(), "versions": versions(), "imports": imports(), "unmet": unmet_requirements()}
    text = json.dumps(found, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
