"""The one rule for trainings side by side on one machine (serve's workers, tune's trials)."""

from __future__ import annotations

import os

from tunesmith.jobs import share_cores


def test_each_of_several_gets_its_share_of_the_cores_and_never_none():
    cores = os.cpu_count() or 1
    for processes in (2, 3, cores, cores + 1, 4 * cores):
        threads = int(share_cores({"PATH": "/bin"}, processes)["OMP_NUM_THREADS"])
        assert threads == max(1, cores // processes) and threads * processes <= max(cores, processes)


def test_one_alone_and_the_users_own_setting_are_left_as_they_are():
    assert share_cores({"PATH": "/bin"}, 1) == {"PATH": "/bin"}
    assert share_cores({"PATH": "/bin"}, 0) == {"PATH": "/bin"}
    assert share_cores({"OMP_NUM_THREADS": "7"}, 4) == {"OMP_NUM_THREADS": "7"}
    mine = {"PATH": "/bin"}
    share_cores(mine, 4)
    assert mine == {"PATH": "/bin"}  # the caller's environment is not changed in place
