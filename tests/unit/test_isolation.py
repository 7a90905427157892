"""The tests themselves never write to the user's caches."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import SHARED_CACHE, TEST_CACHE


def test_every_cache_the_tests_use_is_outside_the_users_home_cache(private_cache: Path):
    home_cache = (Path.home() / ".cache").resolve()
    used = [Path(os.environ[name]) for name in ("TUNESMITH_CACHE", "XDG_CACHE_HOME", "HF_HOME", "MPLCONFIGDIR")]
    used += [SHARED_CACHE, (private_cache / "datasets").resolve(), (private_cache / "models").resolve()]
    for path in used:
        assert not path.resolve().is_relative_to(home_cache), path
    assert (private_cache / "datasets").resolve().is_relative_to(TEST_CACHE.resolve())
