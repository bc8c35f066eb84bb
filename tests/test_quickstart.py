"""docs/quickstart.py, the script a researcher starts from, runs as documented and draws its figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_quickstart_script_runs_a_small_sweep_and_writes_its_figure(tmp_path):
    out = tmp_path / "q.png"
    done = subprocess.run(
        [
            sys.executable,
            "docs/quickstart.py",
            "--events",
            "2000",
            "--seeds",
            "2",
            "--rates",
            "0",
            "0.4",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("0.0 ", "0.4 "))]
    assert [row[0] for row in rows] == ["0.0", "0.4"] and all(row[3] == "2" for row in rows)  # rho, mean, std, count
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_one_clear_line():
    for args, expected in (
        (["--events", "0"], "--events and --seeds: expected integers >= 1, got 0 and 4"),
        (["--events", "3", "--seeds", "1", "--rates", "1.5"], "attack.rate: expected a number <= 1"),
    ):
        done = subprocess.run(
            [sys.executable, "docs/quickstart.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
