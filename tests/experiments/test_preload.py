"""What a sweep's workers fork from: poisonsim and the centroid models' compiled loops, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import poisonsim.experiments.preload
from poisonsim.models import centroid
print(json.dumps({
    "torch": "torch" in sys.modules,
    "detector": len(centroid._detector_kernel.overloads),
    "classifier": len(centroid._classifier_kernel.overloads),
}))
"""


def test_the_preloaded_server_holds_the_compiled_loops_and_no_torch():
    """A process that has started torch's threads must not fork; the loops a centroid run needs are in memory."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == {"torch": False, "detector": 1, "classifier": 1}
