"""The evaluator: the one place that reads ground truth.

It follows the stream batch by batch (predictions, the slots the model wrote,
which events were poison) and, at each evaluation step, measures the model
on held-out clean data and on the attacker's targets:

- ``clean_accuracy``: classifier accuracy on held-out clean events; for a
  detector, the share of them it accepts (1 - false alarm rate);
- ``prequential_accuracy``: test-then-train accuracy on the stream so far
  (benign events against their labels; for a detector, benign accepted and
  poison flagged);
- ``attack_success_rate``: the share of the attacker's success inputs
  classified as its target class (targeted and gradient-alignment: X';
  backdoors: held-out inputs of other classes with the trigger stamped);
  centroid-shift, 1.0 when A is accepted. An attack whose success inputs
  each have their own target (all-to-all: ``target_y_`` beside
  ``target_x_``) is scored input by input against it;
- ``attack_success_by_class`` (summary only, such attacks): the same per
  source class (the true class ``source_y_`` of each success input);
- ``target_class_probability``: for a neural net, the mean probability it
  gives the target class (each input's own, for all-to-all) on those inputs
  (how close the attack is);
- ``displacement_radii``: ``D = (c - c0).(A - c0) / (r ||A - c0||)``;
- ``window_contamination``: share of poison in the window(s) (centroid models);
- ``observed_poisoning_rate``: poison events / stream events (the stream's rho);
- ``learned_poisoning_rate``: poison events the model was fed / everything it
  was fed, its pre-training included (the rho the model lived with).

Against the clean twin (``evaluation.twin``: the same model learning the same
stream without the poison and without defenses), what the attack did:

- ``twin_clean_accuracy``, ``twin_attack_success_rate``: the twin's figures
  (the success inputs' base rate: what reaches the target without an attack);
- ``accuracy_drop``: ``twin_clean_accuracy - clean_accuracy``, the held-out
  accuracy the attack (and the defenses, when there are any) cost;
- ``disagreement``: the share of held-out clean inputs the model and its
  twin classify differently (a detector: accept or flag differently);
- ``twin_target_class_probability``, ``twin_displacement_radii``: the twin's
  target probability (nets) and displacement (centroid detectors).

Over the stream first: the summary gives each figure's mean over the
evaluation rows after the attack's first poison event (the stretch before
a backdoor is learned counts: the attacker had not won it yet) and its worst
row, beside the value at the end (:func:`~poisonsim.evaluation.over_time.stream_figures`).
Defense figures are kept over time as well (see
:mod:`poisonsim.evaluation.over_time`).
"""

from __future__ import annotations

import copy

import numpy as np
from numba import njit

from poisonsim.attacks import Attack
from poisonsim.defenses.base import FLAGGERS
from poisonsim.evaluation.alarms import alarm_figures
from poisonsim.evaluation.over_time import interval_figures, probe_figures, probe_position, stream_figures
from poisonsim.events import EventBatch, Truth
from poisonsim.models.window import INFINITE, MERGED, NOT_LEARNED, POLICY_CODES, follow_shares
from poisonsim.sources import Source

TIMESERIES_COLUMNS = (
    "events",
    "poison_events",
    "observed_poisoning_rate",
    "learned_poisoning_rate",
    "prequential_accuracy",
    "clean_accuracy",
    "attack_success_rate",
    "target_class_probability",
    "displacement_radii",
    "centroid_displacement",
    "window_contamination",
    "stream_alarm_rate",
    "dropped_events",
)


class Evaluator:
    """Scores one run against ground truth; the model never sees what it reads."""

    def __init__(
        self,
        model,
        source: Source,
        attack: Attack,
        twin=None,
        defenses: list | tuple = (),
        deployment=None,
        split_view: bool = False,
        probe_plan: tuple[int, int, int, int] | None = None,
    ):
        """``defenses``: their verdicts are scored (each kind, and each alternative rule apart), a runtime
        detector's (``judges-inputs``) also on held-out inputs at ``probe_plan`` = (seed, every, unit,
        n_events) positions, a reversed trigger against the true one; ``deployment``: the snapshots serving
        uses; ``split_view``: report vetting and pinning figures."""
        self.model = model
        self.source = source
        self.attack = attack
        self.twin = twin  # the clean twin, or None
        self.is_detector = "alarms" in model.offers
        self.has_windows = "window" in model.offers
        self.events = 0
        self.poison_events = 0
        self.first_poison_at: int | None = None  # stream position of the first poison event (the attack's start)
        self.pretrained = int(model.warmup_events)  # clean events learned before the stream
        self.correct = 0
        self.judged = 0
        self.alarms = 0
        self.dropped = 0  # events a defense kept from the model
        self.poison_reached = 0  # poison events the model processed (not dropped, not refused)
        self.refused = 0  # split-view: content refused by pinning (hash differs from the vetted one)
        self.refused_poison = 0
        self.split_view = split_view
        self.deployment = deployment
        self.defenses = list(defenses)
        self.defense_counts: dict[str, dict[str, int]] = {}  # kind (or kind/rule) -> tp/fp/tn/fn
        for defense in self.defenses:
            if not defense.offers & FLAGGERS:
                continue  # a repair: no verdicts to score
            for name in (defense.kind, *(f"{defense.kind}/{rule}" for rule in defense.extra_flag_names)):
                self.defense_counts[name] = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        self.alarm_displacement: dict[str, float | None] = {}  # detector -> displacement at its first attack alarm
        self.input_judges = {d.kind: d for d in self.defenses if "judges-inputs" in d.offers}  # FAR/FRR held out
        self.rows: list[dict] = []
        self.probes: list[dict] = []  # judges' held-out rates at positions they do not know
        self.probe_plan = probe_plan
        self._last_on_targets: tuple[int | None, np.ndarray | None] = (None, None)  # the last row's events, predictions
        if self.has_windows:
            self.initial_centers = self._centers().copy()
            n_windows, n = self.initial_centers.shape[0], model.window_size
            self._policy = POLICY_CODES[model.window_policy]
            self._window_size = n
            self._slot_poison = np.zeros((n_windows, n), dtype=np.int64)  # 1: the point in that slot is poison
            self._shares = np.zeros((n_windows, 2))  # per window: share of clean points, share of poison
            self._counts = model.window_counts.copy()  # the warm-up filled them with clean points
            self._shares[:, 0] = self._counts > 0
            self._saved_windows: dict[str, dict[str, list]] = {}  # defense kind -> str(position) -> mirror
            self._initial_windows = [self._slot_poison.copy(), self._shares.copy(), self._counts.copy()]

    def observe(
        self,
        batch: EventBatch,
        truth: Truth,
        predictions: np.ndarray,
        slots: np.ndarray | None,
        admitted: np.ndarray | None = None,
    ) -> None:
        """Account for one batch; ``predictions`` and ``slots`` cover its ``admitted`` rows
        (all rows by default: defenses that drop events leave the others)."""
        self._note_attack_start(truth)
        self.events += len(batch)
        self.poison_events += int(truth.is_poison.sum())
        if admitted is not None:
            self.dropped += int((~admitted).sum())
            batch, truth = batch.select(admitted), truth.select(admitted)
        self.poison_reached += int(truth.is_poison.sum())
        m = len(batch)
        benign = ~truth.is_poison
        if self.is_detector:
            self.correct += int((predictions == truth.is_poison).sum())
            self.judged += m
            self.alarms += int(predictions.sum())
            windows = np.zeros(m, dtype=np.int64)
        else:
            self.correct += int((predictions[benign] == batch.y[benign]).sum())
            self.judged += int(benign.sum())
            windows = batch.y
        if not self.has_windows:
            return
        _follow_contamination(
            slots,
            windows,
            truth.is_poison,
            self._slot_poison,
            self._shares,
            self._counts,
            self._policy,
            self._window_size,
        )

    def refuse(self, truth: Truth) -> None:
        """Events the learner refused before anything saw them (pinned content that did not match)."""
        self._note_attack_start(truth)
        self.events += len(truth.is_poison)
        self.poison_events += int(truth.is_poison.sum())
        self.refused += len(truth.is_poison)
        self.refused_poison += int(truth.is_poison.sum())

    def _note_attack_start(self, truth: Truth) -> None:
        if self.first_poison_at is None and truth.is_poison.any():
            self.first_poison_at = self.events + int(truth.is_poison.argmax())

    def observe_flags(self, kind: str, flagged: np.ndarray, truth: Truth) -> None:
        """A defense's verdicts on a batch, against ground truth (flagged = judged poison); a defense that offers
        neither ``flags-events`` nor ``judges-inputs`` flags nothing and is not scored."""
        counts = self.defense_counts.get(kind)
        if counts is None:
            return
        poison = truth.is_poison
        counts["tp"] += int((flagged & poison).sum())
        counts["fp"] += int((flagged & ~poison).sum())
        counts["tn"] += int((~flagged & ~poison).sum())
        counts["fn"] += int((~flagged & poison).sum())

    def observe_alarms(self, defense, displacement: float | None) -> None:
        """Note the displacement (radii, before the defense acted) when each of ``defense``'s drift detectors
        first fired after the attack began."""
        start = self.first_poison_at
        if start is None:
            return
        for name, positions in defense.alarms().items():
            key = f"{defense.kind}/{name}" if name else defense.kind
            if key not in self.alarm_displacement and positions and positions[-1] > start:
                self.alarm_displacement[key] = displacement

    def displacement_radii(self) -> float | None:
        """A detector's centroid displacement toward the attack point now, in radii (else ``None``)."""
        return self._displacement_radii()

    def save_windows(self, key: str, position: int) -> None:
        """A defense saved the model's windows at ``position``: keep the contamination mirror's state too."""
        if self.has_windows:
            saved = self._saved_windows.setdefault(key, {})  # string keys: a checkpoint stores it
            saved[str(position)] = [self._slot_poison.copy(), self._shares.copy(), self._counts.copy()]
            for old in sorted(saved, key=int)[:-3]:  # defenses restore one of their last few states
                del saved[old]

    def restore_windows(self, key: str, position: int) -> None:
        """A defense put the model's windows back to the state saved at ``position`` (0: the start)."""
        if not self.has_windows:
            return
        saved = self._saved_windows.get(key, {}).get(str(position))
        if saved is None and position == 0:
            saved = self._initial_windows
        if saved is not None:
            self._slot_poison, self._shares, self._counts = (a.copy() for a in saved)

    def evaluate(self) -> dict:
        """Measure now; the row is kept for the timeseries and returned."""
        on_targets = self._target_predictions()
        on_clean = self.model.predict_many(self.source.test_x)
        row = {
            "events": self.events,
            "poison_events": self.poison_events,
            "observed_poisoning_rate": _ratio(self.poison_events, self.events),
            "learned_poisoning_rate": _ratio(
                self.poison_reached, self.pretrained + self.events - self.dropped - self.refused
            ),
            "prequential_accuracy": _ratio(self.correct, self.judged),
            "clean_accuracy": self._accuracy(on_clean),
            "attack_success_rate": self._attack_success(on_targets),
            "target_class_probability": self._target_probability(),
            "displacement_radii": self._displacement_radii(),
            "centroid_displacement": float(self._shifts().max()) if self.has_windows else None,
            "window_contamination": self._contamination() if self.has_windows else None,
            "stream_alarm_rate": _ratio(self.alarms, self.events) if self.is_detector else None,
            "dropped_events": self.dropped,
        }
        if self.twin is not None:
            row.update(self._twin_figures(on_clean, row["clean_accuracy"]))
        if self.split_view:
            row.update(refused_content=self.refused, poison_reached_model=self.poison_reached)
        if self.deployment is not None:
            row.update(
                deployed_clean_accuracy=self._clean_accuracy(self.deployment.model),
                deployed_attack_success_rate=self._attack_success(self._target_predictions(self.deployment.model)),
                **self.deployment.counts(),
            )
        for kind, counts in self.defense_counts.items():
            row.update({f"defense.{kind}.{k}": v for k, v in counts.items()})
        row.update(self._all_runtime_rates(on_targets))
        self.rows.append(row)
        self._last_on_targets = (self.events, on_targets)  # the summary's per-class success reuses them
        return row

    def probe_if_due(self) -> None:
        """Take the judges' held-out rates when the stream reaches this interval's probe position."""
        if self.probe_plan is None or not self.input_judges or self.events == 0:
            return
        seed, every, unit, n_events = self.probe_plan
        if self.events == probe_position(seed, (self.events - 1) // every, every, unit, n_events):
            self.probes.append({"events": self.events, **self._all_runtime_rates(self._target_predictions())})

    def _all_runtime_rates(self, on_targets: np.ndarray | None) -> dict:
        rates = {}
        for kind, detector in self.input_judges.items():
            rates.update({f"defense.{kind}.{k}": v for k, v in self._runtime_rates(detector, on_targets).items()})
        return rates

    def summary(self) -> dict:
        """Final figures: the last row plus totals and per-class displacement."""
        last = self.rows[-1] if self.rows else self.evaluate()
        summary = {
            "events_total": self.events,
            "poison_events_total": self.poison_events,
            **{k: v for k, v in last.items() if k not in ("events", "poison_events")},
        }
        if self.split_view:  # vetting saw the attacker's clean content: every swapped reference passed it
            summary.update(poison_passed_vetting=self.poison_events, refused_poison=self.refused_poison)
        summary.update(stream_figures(self.rows, self.first_poison_at or 0))
        if self.attack.report_:
            summary["attack_details"] = dict(self.attack.report_)
        kinds = {**self.defense_counts, **{defense.kind: defense for defense in self.defenses}}
        figures = {kind: self._defense_summary(kind, last) for kind in kinds}
        if any(figures.values()):  # a defense with nothing to score (robust-centroid) has no section here
            summary["defenses"] = {kind: scored for kind, scored in figures.items() if scored}
        by_class = self._success_by_class()
        if by_class is not None:
            summary["attack_success_by_class"] = by_class
        if self.has_windows:
            summary["centroid_displacement_by_class"] = {str(k): float(v) for k, v in enumerate(self._shifts())}
        if self.is_detector:
            summary["radius"] = float(self.model.radius_)
            summary["first_success_poison_events"] = next(
                (r["poison_events"] for r in self.rows if r["attack_success_rate"] == 1.0), None
            )
        return summary

    def _centers(self) -> np.ndarray:
        return self.model.centers  # one row per window (the detector: its one centroid)

    def _shifts(self) -> np.ndarray:
        return np.linalg.norm(self._centers() - self.initial_centers, axis=1)

    def _clean_accuracy(self, model=None) -> float:
        return self._accuracy((self.model if model is None else model).predict_many(self.source.test_x))

    def _accuracy(self, predictions: np.ndarray) -> float:
        """Held-out accuracy of predictions on the clean test set (a detector's: the share it accepts)."""
        if self.is_detector:
            return float(1.0 - predictions.mean())
        return float((predictions == self.source.test_y).mean())

    def _twin_figures(self, on_clean: np.ndarray, clean_accuracy: float) -> dict:
        """The clean twin's figures and the attacked model's against them (the module's docstring)."""
        twin = self.twin
        on_clean_twin = twin.predict_many(self.source.test_x)
        twin_accuracy = self._accuracy(on_clean_twin)
        figures = {
            "twin_clean_accuracy": twin_accuracy,
            "accuracy_drop": twin_accuracy - clean_accuracy,
            "disagreement": float((on_clean_twin != on_clean).mean()),
            "twin_attack_success_rate": self._attack_success(self._target_predictions(twin)),
            "twin_target_class_probability": self._target_probability(twin),
            "twin_displacement_radii": self._displacement_radii(twin),
        }
        return {key: value for key, value in figures.items() if value is not None}  # none: not for this model

    def _defense_summary(self, kind: str, last: dict) -> dict:
        """End-of-stream figures, and the same over time after the attack starts (its ``_mean`` and ``_worst``)."""
        prefix = f"defense.{kind}."
        figures = {k[len(prefix) :]: v for k, v in last.items() if k.startswith(prefix)}
        tp, fp, tn, fn = (figures.get(k, 0) for k in ("tp", "fp", "tn", "fn"))
        start = self.first_poison_at or 0
        if kind in self.defense_counts:
            figures["precision"] = _ratio(tp, tp + fp)
            figures["recall"] = _ratio(tp, tp + fn)
            figures["stream_frr"] = _ratio(fp, fp + tn)  # clean stream events flagged
            figures.update(interval_figures(self.rows, kind, start))
        if kind in self.input_judges:
            figures.update(probe_figures(self.probes, kind, start))
            figures["probes"] = sum(p["events"] > start for p in self.probes)
        for defense in self.defenses:
            if defense.kind == kind and "reverses-triggers" in defense.offers:
                figures.update(self._reversed_trigger_figures(defense))
            if defense.kind == kind:
                figures.update(self._alarm_figures(defense))
        return figures

    def _alarm_figures(self, defense) -> dict:
        """Each drift detector's alarms against the attack's start (:func:`alarm_figures`), nested under the
        detector's name when the defense has several."""
        figures: dict = {}
        for name, positions in defense.alarms().items():
            scored = alarm_figures(positions, self.first_poison_at, self.events)
            if self.is_detector and self.first_poison_at is not None:
                scored["displacement_at_alarm"] = self.alarm_displacement.get(
                    f"{defense.kind}/{name}" if name else defense.kind
                )
            (figures.setdefault(name, {}) if name else figures).update(scored)
        return figures

    def _reversed_trigger_figures(self, defense) -> dict:
        """A trigger-reversing defense (Neural Cleanse) against the true trigger: ``target_found`` (the
        attack's target class among its ``suspect_classes``) and ``mask_iou`` (:func:`mask_iou` of the target
        class's reversed mask with the trigger's pixels); none without a trigger, a target or a search yet."""
        trigger, target = self.attack.trigger_, self.attack.target_class_
        masks = defense.reversed_masks()
        if trigger is None or target is None or masks is None:
            return {}
        suspects = defense.report().get("suspect_classes", [])
        return {
            "target_found": int(target) in suspects,
            "mask_iou": mask_iou(masks[int(target)], trigger.region(self.source.n_features)),
        }

    def input_scores(self) -> dict[str, list[dict]]:
        """Each judge's scores of the held-out clean inputs and of the triggered ones (ROC curves)."""
        if self.attack.target_x_ is None:
            return {}
        scores = {}
        for kind, detector in self.input_judges.items():
            rows = [{"score": float(v), "is_triggered": 0} for v in detector.score(self.source.test_x, self.model)]
            rows += [{"score": float(v), "is_triggered": 1} for v in detector.score(self.attack.target_x_, self.model)]
            scores[kind] = rows
        return scores

    def _runtime_rates(self, detector, on_targets: np.ndarray | None) -> dict:
        """A judge on held-out inputs: FRR on clean ones; FAR, the share it accepts of the attacker's
        success inputs that do reach the target class (a trigger that does not fire is no attack to detect;
        ``far_all``: of all of them); and the attack success behind it (success inputs it accepts that reach the
        target class, over all of them). ``on_targets``: the model's predictions on the success inputs."""
        rates = {"frr": float(detector.flag(self.source.test_x, self.model).mean())}
        wanted = self._wanted()
        if on_targets is not None and wanted is not None:
            flagged = detector.flag(self.attack.target_x_, self.model)
            reached = on_targets == wanted
            rates["far"] = float(1.0 - flagged[reached].mean()) if reached.any() else None
            rates["far_all"] = float(1.0 - flagged.mean())
            rates["attack_success_behind"] = float((reached & ~flagged).mean())
        return rates

    def _wanted(self) -> np.ndarray | int | None:
        """The class the attacker wants for each success input: its ``target_y_`` (one per row of ``target_x_``)
        when it gives one, else its ``target_class_`` (``None``: no class target)."""
        return self.attack.target_y_ if self.attack.target_y_ is not None else self.attack.target_class_

    def _target_probability(self, model=None) -> float | None:
        """Mean probability the (live, or given) model gives the target class on the success inputs (nets)."""
        model = self.model if model is None else model
        wanted = self._wanted()
        if self.attack.target_x_ is None or wanted is None:
            return None
        if "probabilities" not in model.offers:
            return None
        proba = model.predict_proba_many(self.attack.target_x_)
        return float(proba[np.arange(len(proba)), wanted].mean())

    def _success_by_class(self) -> dict[str, float | None] | None:
        """Attack success of the model as it is now per source class, for an attack that gives the true class of
        each success input (``source_y_``); ``None`` for a class without success inputs."""
        sources = self.attack.source_y_
        at, predictions = self._last_on_targets
        if at != self.events:  # no row at this event (a resumed evaluator): predict now
            predictions = self._target_predictions()
        if sources is None or predictions is None or self.is_detector:
            return None
        hit = predictions == self._wanted()
        return {
            str(c): float(hit[sources == c].mean()) if (sources == c).any() else None
            for c in range(self.source.n_classes)
        }

    def _target_predictions(self, model=None) -> np.ndarray | None:
        """The (live, or given) model's predictions on the attacker's success inputs, if it has any."""
        targets = self.attack.target_x_
        return None if targets is None else (self.model if model is None else model).predict_many(targets)

    def _attack_success(self, predictions: np.ndarray | None) -> float | None:
        if predictions is None:
            return None
        if self.is_detector:
            return float((~predictions).mean())
        return float((predictions == self._wanted()).mean())

    def _displacement_radii(self, model=None) -> float | None:
        """How far the (live, or given) detector's centroid moved toward the attack point, in its radii."""
        if not self.is_detector or self.attack.target_x_ is None:
            return None
        model = self.model if model is None else model
        c0, target = self.initial_centers[0], self.attack.target_x_[0]
        direction = target - c0
        return float((model.center - c0) @ direction / (model.radius_ * np.linalg.norm(direction)))

    def _contamination(self) -> float:
        weights = self._counts if self._policy == INFINITE else np.minimum(self._counts, self._window_size)
        total = weights.sum()
        share = (self._shares[:, 1] * weights).sum() / total if total else 0.0
        return float(np.clip(share, 0.0, 1.0))  # running shares drift by ~1e-18 once the poison has left

    # -- checkpointing (poisonsim.services.checkpoint) ---------------------------------

    _REFERENCES = (
        "model",
        "twin",
        "source",
        "attack",
        "input_judges",
        "deployment",
        "probe_plan",
        "defenses",
        "_last_on_targets",
    )  # rebuilt (a resumed evaluator predicts again)

    def get_state(self) -> dict:
        """Everything the evaluator accumulated: numpy arrays and plain values (copies)."""
        return {
            key: value.copy() if isinstance(value, np.ndarray) else copy.deepcopy(value)
            for key, value in vars(self).items()
            if key not in self._REFERENCES
        }

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (for the same scenario)."""
        expected = set(self.get_state())
        if set(state) != expected:
            raise ValueError(f"evaluator state: expected keys {sorted(expected)}, got {sorted(state)}")
        for key, value in state.items():
            setattr(self, key, np.array(value) if isinstance(value, np.ndarray) else copy.deepcopy(value))


def mask_iou(mask: np.ndarray, region: np.ndarray, share: float = 0.5) -> float:
    """IoU of a reversed trigger's mask with the true trigger's pixels ``region``; the mask binarised at
    ``share`` of its maximum (its pixels at least half as strong as its strongest are the reversed trigger).

    >>> mask_iou(np.r_[np.zeros(6), 0.9, 0.8, 0.1], np.array([6, 7, 8]))  # found 6 and 7 of the true 6, 7, 8
    0.6666666666666666
    """
    mask = np.asarray(mask, dtype=np.float64).ravel()
    found = mask >= share * mask.max() if mask.max() > 0 else np.zeros(len(mask), dtype=bool)
    true = np.zeros(len(mask), dtype=bool)
    true[np.asarray(region, dtype=np.int64)] = True
    union = int((found | true).sum())
    return float((found & true).sum() / union) if union else 0.0


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@njit(cache=True)
def _follow_contamination(slots, windows, is_poison, slot_poison, shares, counts, policy, n):
    """Mirror the model's window writes with poison labels: the window kernel's own share arithmetic."""
    for i in range(slots.shape[0]):
        slot, k = slots[i], windows[i]
        count = counts[k]
        follow_shares(shares[k], slot_poison[k], slot, 1 if is_poison[i] else 0, count, n, policy)
        if slot != NOT_LEARNED and (count < n or (slot == MERGED and policy == INFINITE)):
            counts[k] = count + 1
