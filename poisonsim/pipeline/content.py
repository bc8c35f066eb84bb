"""Split-view: the stream carries references to content, vetted when published.

A reference is resolved from a content store when the learner trains. The
vetting stage checks each item when it is published and records the hash it
saw (the event's ``pin``); an attacker who controls a reference (an expired
domain) serves clean content to the vetting stage and swaps in its payload
afterwards. Content pinning refuses any resolved content whose hash differs
from the pin.

The hash is blake2b (8 bytes) of the float32 features and the int64 label.

>>> import numpy as np
>>> x, y = np.zeros((2, 3), dtype=np.float32), np.array([0, 1])
>>> pins = content_hash(x, y)
>>> pins.dtype.name, bool(pins[0] != pins[1])
('uint64', True)
>>> swapped = x.copy(); swapped[1, 0] = 1.0
>>> mismatched(swapped, y, pins).tolist()
[False, True]
"""

from __future__ import annotations

import hashlib

import numpy as np


def content_hash(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of ``(x, y)`` (float32 bytes + int64 label)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"content_hash: expected x (m, d) and m labels, got {x.shape} and {y.shape}")
    out = np.empty(x.shape[0], dtype=np.uint64)
    for i in range(x.shape[0]):
        digest = hashlib.blake2b(x[i].tobytes() + y[i].tobytes(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def mismatched(x: np.ndarray, y: np.ndarray, pins: np.ndarray) -> np.ndarray:
    """Rows whose resolved content does not match the hash pinned at vetting."""
    return content_hash(x, y) != np.asarray(pins, dtype=np.uint64)
