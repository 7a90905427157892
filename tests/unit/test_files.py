"""write_atomic: a process killed at any instant leaves the old file or the new one, never a mix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tunesmith.files import write_atomic, write_json_atomic

WRITER = """
import sys
from tunesmith.files import write_atomic
path = sys.argv[1]
n = 0
while True:
    n += 1
    write_atomic(path, (str(n % 10) * 2_000_000))  # 2 MB of one digit: a torn write shows two digits
    print(n, flush=True)
"""


def test_killed_writer_leaves_a_whole_file(tmp_path: Path):
    target = tmp_path / "state.json"
    write_atomic(target, "0" * 2_000_000)
    for attempt in range(12):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        process.stdout.readline()  # at least one write finished
        time.sleep(0.003 * attempt)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        content = target.read_text()
        assert len(content) == 2_000_000 and len(set(content)) == 1, f"torn file after kill {attempt}"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "state.json"]
    assert all(name.endswith(".partial") for name in leftovers)  # only staging files, never under the real name


def test_json_round_trip_and_no_staging_left(tmp_path: Path):
    path = write_json_atomic(tmp_path / "sub" / "manifest.json", {"é": [1, 2]})
    assert path.read_text(encoding="utf-8") == '{\n "é": [\n  1,\n  2\n ]\n}'
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]
