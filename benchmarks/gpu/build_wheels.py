"""Build what the GPU check carries to the GPU machine, where nothing can be fetched, into
benchmarks/gpu/carry/ (ignored by git): the wheels of every package tunesmith, its server, the
serving benchmark's client and the training benchmark's TRL (with datasets and liger-kernel) need
that the machine's image lacks, for its Python 3.12 on x86-64 Linux; and SmolLM2's tokenizer (the
tests' tiny model and the benchmarks' random-weight models use it). Then checks that the whole
that travels (the working tree and carry/) stays under the device tool's 64 MiB.

    .venv/bin/python benchmarks/gpu/build_wheels.py            # prints each wheel, its size, the total

Dependencies are followed from each wheel's metadata. A package the image has is not carried, unless
its known version there misses a requirement (the image's huggingface-hub, 1.33, is older than the
transformers this checkout is tested with needs); transformers and peft are always carried, at the
versions installed here, so the GPU runs the code against the libraries the CPU tests use (and
regex, whose version there is unknown and which transformers checks as it imports). Other
versions are this venv's where it has the package, else the newest that fits. A package published
only as source (rouge-score) is built here into a pure-Python wheel.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / "benchmarks" / "gpu" / "carry"
LIMIT_MIB = 64  # the device tool's limit on the working tree and the carried paths together

# The GPU image's Python packages (.library/device/KINDS.md, read 2026-11-17) and the versions known there.
IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
IMAGE_VERSIONS = {"accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
                  "tokenizers": "0.23.2", "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0",
                  "sentencepiece": "0.2.2", "onnx": "1.23.1", "onnxruntime": "1.30.0"}
# Carried at this venv's versions whatever the image has: transformers and peft, and regex, whose version
# there is not known and below 2025.10.22 stops transformers' import (its runtime version check).
ALWAYS = {"transformers", "peft", "regex"}
OPTIONAL = {"liger-kernel"}  # reported "not installed" by the benchmark when missing
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{n}_x86_64" for n in (17, 24, 26, 27, 28, 31, 34, 35, 36, 38, 39))]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def top_requirements() -> list[Requirement]:
    """tunesmith's dependencies, its serve extra (the serving benchmark's server), the openai client
    (the serving benchmark's), its bench extra (TRL, datasets), liger-kernel and pinned transformers/peft."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = [*project["dependencies"], *project["optional-dependencies"]["serve"],
             *project["optional-dependencies"]["bench"], f"openai=={metadata.version('openai')}", "liger-kernel"]
    texts += [f"{name}=={metadata.version(name)}" for name in sorted(ALWAYS)]
    return [Requirement(text) for text in texts]


def on_image(name: str, requirement: Requirement) -> bool:
    if name in ALWAYS or name not in IMAGE:
        return False
    known = IMAGE_VERSIONS.get(name)
    return known is None or requirement.specifier.contains(known, prereleases=True)


def pinned(name: str, requirement: Requirement) -> str:
    """`name==version` from this venv where it satisfies the requirement, else the requirement itself."""
    try:
        here = metadata.version(name)
    except metadata.PackageNotFoundError:
        return str(Requirement(f"{name}{requirement.specifier}"))
    return f"{name}=={here}" if requirement.specifier.contains(here, prereleases=True) else str(Requirement(f"{name}{requirement.specifier}"))


def fetch(spec: str, folder: Path) -> Path:
    """The wheel for `spec` for the GPU's Python: downloaded, or built here when only a source
    distribution exists (accepted only when the result is pure Python)."""
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob("*.whl"))
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(folder), spec]
    built = subprocess.run(download, capture_output=True, text=True).returncode != 0
    if built:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), spec],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{spec}: no wheel for Python 3.12 on x86-64 Linux, and none built: {done.stderr[-500:]}")
    new = sorted(set(folder.glob("*.whl")) - before)
    if len(new) != 1:
        raise RuntimeError(f"{spec}: expected one new wheel, found {[p.name for p in new]}")
    tags = parse_wheel_filename(new[0].name)[3]
    if built and any(tag.abi != "none" or tag.platform != "any" for tag in tags):
        raise RuntimeError(f"{new[0].name}: built here for this Python, not for the GPU machine's")
    return new[0]


def requirements_of(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(name).decode())
    found = [Requirement(text) for text in meta.get_all("Requires-Dist") or []]
    return [r for r in found if r.marker is None or r.marker.evaluate(TARGET)]


def collect_wheels(folder: Path) -> dict[str, Path]:
    """Every wheel the GPU needs, following dependencies; a missing optional one is left out, said."""
    queue, wheels = top_requirements(), {}
    while queue:
        requirement = queue.pop(0)
        name = canonicalize_name(requirement.name)
        if name in wheels or on_image(name, requirement):
            continue
        try:
            wheels[name] = fetch(pinned(name, requirement), folder)
        except RuntimeError as exc:
            if name not in OPTIONAL:
                raise
            print(f"left out (optional): {exc}", file=sys.stderr)
            continue
        queue += requirements_of(wheels[name])
    return wheels


def copy_tokenizer(folder: Path) -> None:
    from tunesmith.models.catalog import materialize

    source = materialize("smollm2-135m-instruct")
    folder.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, folder / name)


def working_tree_bytes() -> int:
    """What the device tool sends besides the carried paths: tracked and untracked, not ignored, files."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split("\0")
    carried = str(CARRY.relative_to(ROOT)) + "/"
    return sum((ROOT / name).stat().st_size for name in listed
               if name and not name.startswith(carried) and (ROOT / name).is_file())


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    if CARRY.exists():
        shutil.rmtree(CARRY)  # one version of each package: two would stop the install there
    wheels = collect_wheels(CARRY / "wheels")
    copy_tokenizer(CARRY / "tokenizer")
    for wheel in sorted(wheels.values()):
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    carried = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    wheel_bytes = sum(w.stat().st_size for w in wheels.values())
    tree = working_tree_bytes()
    total = (carried + tree) / 2**20
    print(f"{len(wheels)} wheels {wheel_bytes / 2**20:.1f} MiB, tokenizer {(carried - wheel_bytes) / 2**20:.1f} MiB, "
          f"working tree {tree / 2**20:.1f} MiB: {total:.1f} MiB of the {LIMIT_MIB} MiB that may travel")
    if total > LIMIT_MIB:
        sys.exit(f"over the device tool's {LIMIT_MIB} MiB: the run would be refused")


if __name__ == "__main__":
    main()
