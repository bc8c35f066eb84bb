"""What a sweep's workers start from: imported once, in the process they are forked from.

On Linux a local sweep forks its workers from a server process
(multiprocessing's ``forkserver``) that imports this module first: poisonsim's engine, and the
centroid models' compiled loops loaded from numba's disk cache by two tiny
runs (a white-box attacker against the detector, label flips against the
classifier). A worker then starts in milliseconds with all of it in memory,
instead of importing and loading it anew (about 0.8 s a worker).

torch is not imported here: a process that has started torch's threads must
not fork. A worker imports it, as ``poisonsim run`` does, when a run builds a
net.
"""

from __future__ import annotations

from poisonsim.config import Scenario
from poisonsim.pipeline import engine

TINY_RUNS = (
    {"stream": {"n_events": 600, "n_features": 2}, "attack": {"kind": "centroid-shift", "start": 200}},
    {
        "stream": {"n_events": 600, "n_features": 2, "n_classes": 2},
        "model": {"kind": "centroid-classifier", "window_size": 20},
        "attack": {"kind": "label-flip", "start": 200},
    },
)


def warm() -> None:
    """Run each tiny scenario once (an error only leaves the loading to the workers)."""
    for scenario in TINY_RUNS:
        try:
            engine.run(Scenario.from_dict({"seed": 0, "evaluation": {"every": 200}, **scenario}))
        except Exception:  # noqa: BLE001 - warming is an optimisation, never a failure
            pass


warm()
