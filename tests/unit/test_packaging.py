"""What the package promises matches what its dependencies need, and labels say what the weights are."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import metadata, requires
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def _floor(specifier: str) -> Version:
    return min(Version(s.version) for s in SpecifierSet(specifier) if s.operator in (">=", ">"))


def test_python_and_torch_floors_are_at_least_what_transformers_needs():
    ours_python = _floor(PYPROJECT["project"]["requires-python"])
    assert ours_python >= _floor(metadata("transformers")["Requires-Python"])
    torch_needed = [r for r in requires("transformers") if re.match(r"torch\s*[><=]", r)]
    assert torch_needed, "transformers no longer names a torch floor; check this test"
    needed = max(_floor(r.split(";")[0].removeprefix("torch")) for r in torch_needed)
    ours_torch = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert _floor(ours_torch.removeprefix("torch")) >= needed


def test_the_default_model_is_labelled_as_the_dequantized_q4_1_gguf(capsys):
    from tunesmith.cli import main
    from tunesmith.models.catalog import CATALOG

    assert "Q4_1 GGUF dequantized" in CATALOG["smollm2-135m-instruct"].label
    main(["models"])
    assert "weights: Q4_1 GGUF dequantized to fp32" in capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "Q4_1" in readme.split("## Fine-tune")[0]  # said where the default model is first named
