"""STRIP for every target class, pooled, per-class and union thresholds, one- and two-layer overlays
(benchmarks/strip_classes.py).

BadNets to each of the ten classes; STRIP fitted at the end of the stream
on the same net under each variant. The figures below were measured over
seeds 1-4 (``benchmarks/strip_classes.py``); the tests train MNIST's nets
for seeds 1-3 (30 nets, a third of this module's time) and the digits' for
1-4. MNIST (3x3 patch, rho 0.05, 12,000 events): every variant keeps the held-out FRR at the 1% it is
calibrated for; per-class STRIP's FAR averages 0.047 over classes and seeds,
and with two trusted inputs stacked into each overlay's background
(``layers = 2``) 0.021, lower in every seed (paired gains 0.021, 0.038,
0.022, 0.025), target 0 at 0.007, nine classes of ten at 0.05 or less. What
does not hold (docs/mnist.md): FAR <= 0.05 for every class (two layers, per-class:
target 2 at 0.080, nearly all of it seed 4, where the backdoor's overlays
are the least sure); pooled alone is worse than per-class in most seeds.
On the 8x8 digits (the 8x8 CNN, 10,000 events) two layers cut the pooled
FAR from 0.234 to 0.105, lower in every seed; per-class stays worse there.
Calibrated by the paper's rule (``confidence = 0.5``: the 1% quantile of the
trusted clean scores) the FRR averages 1% instead of staying under it, and
the digits' pooled two-layer FAR falls to 0.066 (docs/mnist.md: even a threshold
at the held-out clean scores' own 1% quantile leaves classes above 0.05).
Over the learning stream of ``scenarios/mnist_strip_paper.toml`` (probes between
calibrations) per-class scales with two layers flag 9.2% of clean stream
events against the paper's 1.6%: their scales go stale as the net learns
(``benchmarks/seed_figures.py mnist-strip mnist-strip-per-class-2 --seeds
1-4``; the test asserts it on the 8x8 digits' stream, seeds 1-6, STRIP
recalibrated every 1,000 of 6,000 events: 24.2% against the paper's 9.2%).

``scale = "union"`` (pooled entropy, per-class entropy and per-class
own-class share; flagged when any is in its tail) with two layers: on
MNIST every target class at FAR 0.05 or less (at most 0.026, target 8),
mean 0.008 at FRR 0.8%; on the 8x8 digits, at the paper's calibration,
0.035 against pooled two-layer's 0.066, with two classes still out. Over
the learning stream its per-class tails go stale as per-class scales do:
checks of the FRR between calibrations every 250 events (``check = 250``)
bring the clean stream events flagged from 9.4% to 3.6%, every 100 events
to 1.6%, the paper's STRIP's level, with FAR on the final net still 0.009
(``mnist-strip-union-2-check-100``; on the digits' stream, tested: 2.5%
against the paper's 9.2%, FAR on the final net 0.034 against 0.186).

``robust = true`` (each input's entropy the median over its overlays, class
spreads shrunk towards the pooled one) closes the digits: union with two
layers at the paper's calibration, FAR 0.004 at FRR 1.0%, every target
class at 0.028 or less (not robust: 0.035, target 8 at 0.17).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import margin

from benchmarks.seed_figures import figures_over_seeds
from benchmarks.strip_classes import Calibration, over_classes

pytestmark = pytest.mark.slow
SEEDS = {"mnist": (1, 2, 3), "digits": (1, 2, 3, 4)}  # a net per seed and target class
STREAM_SEEDS = tuple(range(1, 7))  # the learning-stream runs on the digits
BOUND, PAPERS = Calibration(), Calibration(layers=(2,), confidence=0.5)  # FRR under 1% with 90% confidence; 1% quantile
BOUND_ROBUST, PAPERS_ROBUST = Calibration(layers=(2,), robust=True), PAPERS._replace(robust=True)
CALIBRATIONS = {"mnist": (BOUND, BOUND_ROBUST), "digits": (BOUND, PAPERS, PAPERS_ROBUST, BOUND_ROBUST)}


def strip_over_classes(source: str, calibration: Calibration) -> dict[str, np.ndarray]:
    """Each figure as a (seeds, target classes) array: every net of ``source`` trained once for all the
    calibrations this module measures."""
    return over_classes(source, SEEDS[source], calibrations=CALIBRATIONS[source])[calibration]


def test_per_class_scale_and_two_layer_overlays_cut_strip_far_over_target_classes_at_the_same_frr():
    figures = strip_over_classes("mnist", BOUND)
    assert figures["attack_success"].mean() >= 0.95  # a backdoor that fires is what STRIP is judged on
    for variant in ("pooled", "per-class", "pooled-2", "per-class-2"):
        frr = figures[f"{variant}_frr"].mean(axis=1)  # per seed, over the ten nets
        assert frr.mean() - margin(frr) <= 0.01
    per_class = figures["per-class_far"].mean(axis=1)
    assert per_class.mean() + margin(per_class) <= 0.1  # measured 0.075: a seed's net moves with the CPU's kernels
    assert np.median(figures["per-class_far"].mean(axis=0)) <= 0.03  # most classes: FAR a few percent
    two_layers = figures["per-class-2_far"]
    per_seed = two_layers.mean(axis=1)
    assert per_seed.mean() + margin(per_seed) <= 0.06  # measured 0.021 (2 s.e. 0.028)
    gain = per_class - per_seed
    assert gain.mean() - margin(gain) > 0  # the second layer helps, seed by seed
    by_class = two_layers.mean(axis=0)
    assert by_class[0] <= 0.02 and (by_class <= 0.05).sum() >= 9  # target 0 as the STRIP paper's; 2 is not


def test_two_layer_overlays_cut_pooled_strip_far_on_the_8x8_digits():
    figures = strip_over_classes("digits", BOUND)
    frr = figures["pooled-2_frr"].mean(axis=1)
    assert frr.mean() - margin(frr) <= 0.01
    gain = figures["pooled_far"].mean(axis=1) - figures["pooled-2_far"].mean(axis=1)
    assert gain.mean() - margin(gain) > 0.03  # measured 0.129 (2 s.e. 0.068): 0.234 -> 0.105


def test_the_papers_quantile_calibration_spends_the_frr_budget_and_cuts_far_on_the_8x8_digits():
    bounded = strip_over_classes("digits", BOUND)  # FRR under 1% with 90% confidence
    figures = strip_over_classes("digits", PAPERS)
    frr = figures["pooled-2_frr"].mean(axis=1)
    assert abs(frr.mean() - 0.01) <= margin(frr) + 0.002  # 1% on average (measured 0.010)
    spent = frr - bounded["pooled-2_frr"].mean(axis=1)
    assert spent.mean() - margin(spent) > 0  # more of the budget used than the bound's 0.4%, seed by seed
    gain = bounded["pooled-2_far"].mean(axis=1) - figures["pooled-2_far"].mean(axis=1)
    assert gain.mean() - margin(gain) > 0  # measured 0.105 -> 0.066, lower in every seed


def test_union_strip_keeps_far_under_005_for_every_mnist_target_class():
    figures = strip_over_classes("mnist", BOUND)
    frr = figures["union-2_frr"].mean(axis=1)
    assert frr.mean() - margin(frr) <= 0.01  # measured 0.8%: the three tails share the FRR budget
    far = figures["union-2_far"].mean(axis=1)
    assert far.mean() + margin(far) <= 0.03  # measured 0.008 (per seed 0.003, 0.007, 0.001, 0.020): 0.016 with margin
    by_class = figures["union-2_far"].mean(axis=0)
    assert by_class.max() <= 0.05  # every target class, one test; measured at most 0.026 (target 8)


def test_union_strip_far_on_the_8x8_digits_at_the_papers_calibration():
    figures = strip_over_classes("digits", PAPERS)
    frr = figures["union-2_frr"].mean(axis=1)
    assert abs(frr.mean() - 0.01) <= margin(frr) + 0.003  # measured 0.8%
    far = figures["union-2_far"].mean(axis=1)
    assert far.mean() + margin(far) <= 0.09  # measured 0.035 (pooled, two layers: 0.066); seed 3 0.073 (0.235)


def test_per_class_two_layer_strip_needs_recalibrating_more_often_on_a_learning_stream():
    paper = figures_over_seeds("strip-stream-paper", STREAM_SEEDS)
    variant = figures_over_seeds("strip-stream-per-class-2", STREAM_SEEDS)
    lost = variant["defenses.strip.stream_frr_mean"] - paper["defenses.strip.stream_frr_mean"]
    assert lost.mean() - margin(lost) > 0.05  # measured 24.2% of the clean stream flagged against 9.2% (2 s.e. 0.059)


def test_checks_every_100_events_cut_the_union_strips_stream_frr():
    paper = figures_over_seeds("strip-stream-paper", STREAM_SEEDS)
    checked = figures_over_seeds("strip-stream-union-2-check-100", STREAM_SEEDS)
    stream = checked["defenses.strip.stream_frr_mean"]
    assert stream.mean() + margin(stream) <= 0.04  # measured 2.5% (2 s.e. 0.5%); the paper's STRIP: 9.2%
    gain = paper["defenses.strip.stream_frr_mean"] - stream
    assert gain.mean() - margin(gain) > 0  # measured 0.067 (2 s.e. 0.043)
    far = checked["defenses.strip.far"]
    assert far.mean() + margin(far) <= 0.1  # the final net's FAR: measured 0.034 (the paper's: 0.186)
    assert checked["defenses.strip.check_recalibrations"].min() >= 10  # the cost: 26-36 of 54 checks recalibrated


def test_robust_union_strip_keeps_far_under_005_for_every_digits_target_class_at_the_papers_calibration():
    figures = strip_over_classes("digits", PAPERS_ROBUST)
    frr = figures["union-2_frr"].mean(axis=1)
    assert abs(frr.mean() - 0.01) <= margin(frr) + 0.003  # measured 1.0%: "at FRR 0.01"
    far = figures["union-2_far"].mean(axis=1)
    assert far.mean() + margin(far) <= 0.02  # measured 0.004 (per seed 0.001, 0.000, 0.015, 0.000)
    by_class = figures["union-2_far"].mean(axis=0)
    assert by_class.max() <= 0.05  # every target class, one test; measured at most 0.028 (target 1)
    plain = strip_over_classes("digits", PAPERS)["union-2_far"].mean(axis=1)
    gain = plain - far
    assert gain.mean() - margin(gain) > 0  # median entropy and shrunk spreads: 0.035 -> 0.004, seed by seed


def test_robust_union_strip_on_the_8x8_digits_with_the_frr_bound():
    figures = strip_over_classes("digits", BOUND_ROBUST)  # FRR under 1% with 90% confidence
    frr = figures["union-2_frr"].mean(axis=1)
    assert frr.mean() - margin(frr) <= 0.01  # measured 0.4%
    far = figures["union-2_far"].mean(axis=1)
    assert far.mean() + margin(far) <= 0.04  # measured 0.013 (not robust: 0.077); target 1 at 0.062


def test_robust_union_strip_on_mnist_every_target_class():
    figures = strip_over_classes("mnist", BOUND_ROBUST)
    frr = figures["union-2_frr"].mean(axis=1)
    assert frr.mean() - margin(frr) <= 0.01  # measured 0.7%
    far = figures["union-2_far"].mean(axis=1)
    assert far.mean() + margin(far) <= 0.015  # measured 0.003 (per seed 0.002, 0.001, 0.000, 0.009): 0.007 with margin
    assert figures["union-2_far"].mean(axis=0).max() <= 0.05  # measured at most 0.016 (target 2)
