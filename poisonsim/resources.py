"""What a run will hold in memory, estimated from the scenario before anything is allocated.

A scenario that asks for more than the machine has available (a held-out
set of a million 4,096-feature events, a window of a million points) is
refused before the run, naming the key that asks for most, instead of
failing half-way with a traceback from numpy.

>>> from poisonsim.config import Scenario
>>> s = Scenario.from_dict({"stream": {"n_features": 4096}, "model": {"window_size": 10**6}})
>>> largest = max(estimate(s), key=lambda item: item[1])
>>> largest[0], round(largest[1] / 2**30, 1)
('model.window_size', 61.0)
>>> s.evaluation.twin = False  # no clean twin: one window
>>> round(max(estimate(s), key=lambda item: item[1])[1] / 2**30, 1)
30.5
"""

from __future__ import annotations

import os

from poisonsim.config import ConfigError, Scenario

DEFAULT_FEATURES = 64  # sources whose size is only known once loaded (digits, river's sets) are small
DEFAULT_CLASSES = 10


def estimate(scenario: Scenario) -> list[tuple[str, int, str]]:
    """The run's largest allocations: (the key that sets it, bytes, what it is)."""
    stream, model = scenario.stream.to_dict(), scenario.model.to_dict()
    d = stream.get("n_features", DEFAULT_FEATURES)
    k = stream.get("n_classes", DEFAULT_CLASSES)
    items = [("evaluation.every", scenario.evaluation.every * d * 4 * 8, "a stream batch and its copies")]
    if "n_test" in stream:
        items.append(("stream.n_test", stream["n_test"] * d * 4 * 4, "the held-out set, clean and triggered"))
    models, twice = (2, ", the clean twin's too") if scenario.evaluation.twin else (1, "")
    window = model.get("window_size")
    if window:
        windows = k if "classifier" in model["kind"] else 1
        items.append(
            ("model.window_size", models * window * windows * d * 8, f"{windows} window(s) of float64 points{twice}")
        )
    if model.get("retrain_every"):  # the data lake: float32 features and an int64 label per event it keeps
        kept = model.get("lake_size") or model.get("pretrain_events", 0) + stream.get("n_events", 0)
        items.append(("model.lake_size", models * kept * (d * 4 + 8), f"a data lake of {kept:,} events{twice}"))
    return items


def available_bytes() -> int | None:
    """Memory available to a new allocation (Linux ``MemAvailable``, else physical memory), or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(scenario: Scenario, available: int | None = None) -> None:
    """Refuse a scenario whose estimate exceeds the memory available, naming the key that asks for most."""
    available = available_bytes() if available is None else available
    items = estimate(scenario)
    total = sum(size for _, size, _ in items)
    if available is None or total <= available:
        return
    key, size, what = max(items, key=lambda item: item[1])
    raise ConfigError(
        f"{key}: the run needs about {total / 2**30:.1f} GiB ({what}: {size / 2**30:.1f} GiB), "
        f"more than the {available / 2**30:.1f} GiB available on this machine"
    )
