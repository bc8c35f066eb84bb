"""Sliding-window centroid updates (Kloft & Laskov, JMLR 2012), compiled.

A window holds ``n`` points and its centroid ``c`` is their mean. While it
fills, a point is appended. Once full, learning ``x`` removes ``x_out`` and
updates ``c' = c + (x - x_out) / n``, where the policy picks ``x_out``:

- ``fifo``: the oldest stored point;
- ``average-out``: the centroid itself (``c' = c + (x - c) / n``);
- ``random-out``: a stored point drawn uniformly;
- ``nearest-out``: the stored point nearest ``x``;
- ``infinite``: nothing leaves; ``c_{k+1} = c_k + (x - c_k) / (n + k + 1)``.

Window defenses switch on options of the same kernels (:func:`guarded_learn`):
a robust estimate of the centroid (coordinate median or trimmed mean of the
stored points, recomputed after every learn; average-out then keeps the last
``n`` points, as it stores none of its own) and a per-source quota (a point
is refused while its source holds ``quota`` of the window or more; the
shares follow the policy's arithmetic, as the evaluator's contamination does).

The kernels work on one window given as arrays, so a detector (one window)
and a classifier (one window per class) share them. Each learn returns the
slot written (``MERGED`` when the point only entered the mean), which the
evaluator uses to follow window contamination without the model ever
seeing ground truth.

>>> import numpy as np
>>> center, window, state = new_window(n=2, d=1)
>>> [learn(center, window, state, AVERAGE_OUT, np.array([v]), 0.0) for v in (1.0, 3.0, 5.0)]
[0, 1, -2]
>>> center.tolist()
[3.5]
"""

from __future__ import annotations

import numpy as np
from numba import njit

FIFO, AVERAGE_OUT, RANDOM_OUT, NEAREST_OUT, INFINITE = 0, 1, 2, 3, 4
POLICY_CODES = {
    "fifo": FIFO,
    "average-out": AVERAGE_OUT,
    "random-out": RANDOM_OUT,
    "nearest-out": NEAREST_OUT,
    "infinite": INFINITE,
}
NOT_LEARNED = -1
MERGED = -2
MEAN, MEDIAN, TRIMMED_MEAN = 0, 1, 2
ESTIMATOR_CODES = {"mean": MEAN, "median": MEDIAN, "trimmed-mean": TRIMMED_MEAN}
MAX_SOURCES = 1024  # source ids a quota can follow (benign and attacker ids together)

# state vector of a window: number learned, fifo head, replacements since the
# centroid was last recomputed from the stored points
COUNT, HEAD, SINCE_RECOMPUTE = 0, 1, 2


def new_window(n: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty window arrays: centroid ``(d,)``, storage ``(n, d)``, state ``(3,)``."""
    return np.zeros(d), np.zeros((n, d)), np.zeros(3, dtype=np.int64)


@njit(cache=True, inline="always")
def learn(center: np.ndarray, window: np.ndarray, state: np.ndarray, policy: int, x: np.ndarray, u: float) -> int:
    """Learn ``x`` into one window in place; ``u`` in [0, 1) drives random-out."""
    n, d = window.shape
    count = state[COUNT]
    if count < n or policy == INFINITE:
        if count < n:
            window[count] = x
        state[COUNT] = count + 1
        for j in range(d):
            center[j] += (x[j] - center[j]) / (count + 1)
        return count if count < n else MERGED
    if policy == AVERAGE_OUT:
        for j in range(d):
            center[j] += (x[j] - center[j]) / n
        return MERGED
    if policy == FIFO:
        slot = state[HEAD]
        state[HEAD] = (slot + 1) % n
    elif policy == RANDOM_OUT:
        slot = min(int(u * n), n - 1)
    else:
        slot = nearest(window, x)
    for j in range(d):
        center[j] += (x[j] - window[slot, j]) / n
        window[slot, j] = x[j]
    state[SINCE_RECOMPUTE] += 1
    if state[SINCE_RECOMPUTE] >= n:  # keep rounding error from piling up: O(d) amortised
        state[SINCE_RECOMPUTE] = 0
        for j in range(d):
            center[j] = window[:, j].mean()
    return slot


@njit(cache=True)
def nearest(points: np.ndarray, x: np.ndarray) -> int:
    """Index of the row of ``points`` nearest ``x`` (squared Euclidean)."""
    best, best_d2 = 0, np.inf
    for i in range(points.shape[0]):
        d2 = 0.0
        for j in range(points.shape[1]):
            diff = points[i, j] - x[j]
            d2 += diff * diff
        if d2 < best_d2:
            best, best_d2 = i, d2
    return best


@njit(cache=True, inline="always")
def squared_distance(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for j in range(a.shape[0]):
        diff = a[j] - b[j]
        total += diff * diff
    return total


@njit(cache=True)
def robust_center(center: np.ndarray, window: np.ndarray, count: int, estimator: int, trim: float) -> None:
    """Set ``center`` to the coordinate median or trimmed mean of the stored points.

    >>> c = np.zeros(1)
    >>> robust_center(c, np.array([[0.0], [1.0], [100.0]]), 3, MEDIAN, 0.0); c.tolist()
    [1.0]
    """
    m = min(count, window.shape[0])
    if m == 0 or estimator == MEAN:
        return
    cut = int(trim * m) if estimator == TRIMMED_MEAN else 0
    for j in range(window.shape[1]):
        column = np.sort(window[:m, j])
        if estimator == MEDIAN:
            center[j] = 0.5 * (column[(m - 1) // 2] + column[m // 2])
        else:
            center[j] = column[cut : m - cut].mean()


@njit(cache=True, inline="always")  # inlined: a call passing five arrays costs more than the update
def guarded_learn(
    center: np.ndarray,
    window: np.ndarray,
    state: np.ndarray,
    policy: int,
    x: np.ndarray,
    u: float,
    estimator: int,
    trim: float,
    source: int,
    quota: float,
    slot_source: np.ndarray,
    shares: np.ndarray,
) -> int:
    """:func:`learn` with the window defenses' options; ``NOT_LEARNED`` when the quota refuses ``x``.

    >>> center, window, state = new_window(n=3, d=1)
    >>> slot_source, shares = np.zeros(3, dtype=np.int64), np.zeros(MAX_SOURCES)
    >>> [guarded_learn(center, window, state, FIFO, np.array([v]), 0.0, MEDIAN, 0.0, s, 0.6, slot_source,
    ...                shares) for v, s in ((0.0, 0), (1.0, 1), (9.0, 1), (5.0, 1), (2.0, 0))]
    [0, 1, 2, -1, 0]
    >>> center.tolist(), np.round(shares[:2], 3).tolist()
    ([2.0], [0.333, 0.667])
    """
    if estimator == MEAN and quota >= 1.0:  # no window defense: the plain update
        return learn(center, window, state, policy, x, u)
    n = window.shape[0]
    count = state[COUNT]
    if quota < 1.0 and count > 0 and shares[source] >= quota:
        return NOT_LEARNED
    if estimator != MEAN and policy == AVERAGE_OUT:
        policy = FIFO  # a robust estimate needs stored points: keep the last n
    slot = learn(center, window, state, policy, x, u)
    if estimator != MEAN:
        robust_center(center, window, state[COUNT], estimator, trim)
    if quota >= 1.0:  # no quota: source shares are not followed (they cost O(sources) per event)
        return slot
    follow_shares(shares, slot_source, slot, source, count, n, policy)
    return slot


@njit(cache=True, inline="always")
def follow_shares(
    shares: np.ndarray, slot_labels: np.ndarray, slot: int, label: int, count: int, n: int, policy: int
) -> None:
    """Each label's share of a window after a learn of a ``label`` point wrote ``slot``, ``count`` points before.

    The policy's arithmetic: a point merged into the mean weighs ``1 / n``
    (average-out) or ``1 / (count + 1)`` (infinite); a filling window takes
    it as its ``count + 1``-th point; a full one replaces the label of the
    point at ``slot``. The source quota follows producer ids with it, the
    evaluator poison with it (window contamination).

    >>> shares, labels = np.zeros(2), np.zeros(2, dtype=np.int64)
    >>> for slot, label, count in ((0, 1, 0), (1, 0, 1), (0, 0, 2)):
    ...     follow_shares(shares, labels, slot, label, count, 2, FIFO)
    >>> shares.tolist()
    [1.0, 0.0]
    """
    if slot == NOT_LEARNED:
        return
    if slot == MERGED or count < n:
        weight = (n if policy == AVERAGE_OUT else count + 1) if slot == MERGED else count + 1
        for s in range(shares.shape[0]):
            shares[s] += ((1.0 if s == label else 0.0) - shares[s]) / weight
        if slot != MERGED:
            slot_labels[slot] = label
        return
    old = slot_labels[slot]
    if old != label:
        shares[old] += -1.0 / n
        shares[label] += 1.0 / n
    slot_labels[slot] = label
