"""The graders' offline data, fetched once into the tests' shared cache and linked into each test's own
cache (as the root conftest links the default model): WordNet 3.0 for METEOR, all-MiniLM-L6-v2 for cosine."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_nltk_data() -> Path:
    from tunesmith.graders.wordnet import nltk_data_dir, wordnet_folder

    wordnet_folder()  # in the tests' shared cache (session fixtures run before each test's private cache)
    return nltk_data_dir()


@pytest.fixture(scope="session")
def shared_minilm() -> Path:
    from tunesmith.models.catalog import materialize

    return materialize("all-minilm-l6-v2")


@pytest.fixture()
def grader_data(private_cache: Path, shared_nltk_data: Path, shared_minilm: Path) -> Path:
    """A test's cache with WordNet and MiniLM in it, linked (not copied)."""
    (private_cache / "nltk_data").symlink_to(shared_nltk_data, target_is_directory=True)
    (private_cache / "models" / "all-minilm-l6-v2").symlink_to(shared_minilm, target_is_directory=True)
    return private_cache
