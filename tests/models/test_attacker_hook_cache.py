"""The centroid detector's loop comes from numba's disk cache in every process, whatever the attacker's rule.

Each rule is passed to the centroid detector's loop by address, so the
loop's compiled signature names no particular rule (a run without a
white-box attacker passes one that is never called): after one process
has compiled it, a fresh process loads it (a cache hit, no compilation, the
start-up a Kafka learner needs), and another attacker's rule (the boiling
frog's after the greedy centroid shift's) runs the same cached loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import poisonsim
from poisonsim.models import centroid
poisonsim.run(sys.argv[1], overrides=["stream.n_events=3000", "attack.start=500"])
stats = centroid._detector_kernel.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def _loop_cache(scenario: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, f"scenarios/{scenario}"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_fresh_process_loads_the_hooked_loop_from_the_cache_for_any_rule():
    _loop_cache("centroid_shift.toml")  # compiles it if no process has yet
    assert _loop_cache("centroid_shift.toml") == {"hits": 1, "misses": 0}
    assert _loop_cache("boiling_frog.toml") == {"hits": 1, "misses": 0}  # another rule, the same cached loop
