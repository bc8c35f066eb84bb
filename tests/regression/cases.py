"""The regression corpus: every ready scenario (and a few variants), cut short enough to run in seconds.

Each case is a scenario file and ``--set`` overrides; ``record.py`` writes its
``summary.json``, ``timeseries.csv`` and ``analysis/*.npz`` under
``corpus/<case>/``, and ``test_corpus.py`` checks that a run today gives the
same figures (timing fields aside) and that no file of ``scenarios/`` lacks
a case. Torch runs on one thread, so the corpus does not depend on the
machine's core count.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
TORCH_THREADS = 1

NEURAL = ["stream.n_events=1200", "model.pretrain_events=300", "evaluation.every=400"]
SUPPLY = ["stream.n_events=600", "attack.supplier_events=300", "evaluation.every=200"]
ACCUMULATIVE = ["stream.n_events=1536", "model.pretrain_events=2000", "attack.start=256", "attack.budget=288",
                "attack.accumulate=256", "attack.steps=4", "attack.validation_events=64", "evaluation.every=128"]

CASES: dict[str, tuple[str, list[str]]] = {
    "abl_badnets": ("abl_badnets.toml", [*NEURAL, "defense=[{kind='isolation',score='gain',rule='percentile',"
                                                  "percentile=1.0,every=300,unlearn=true}]"]),
    "accumulative": ("accumulative.toml", ACCUMULATIVE),
    "accumulative_bn": ("accumulative_bn.toml", ACCUMULATIVE),
    "adaptive_centroid_shift": ("adaptive_centroid_shift.toml", ["stream.n_events=3000", "attack.start=1500"]),
    "all_to_all": ("all_to_all.toml", NEURAL),
    "badnets_cnn": ("badnets_cnn.toml", NEURAL),
    "blended_cnn": ("blended_cnn.toml", NEURAL),
    "boiling_frog": ("boiling_frog.toml", ["stream.n_events=4000", "attack.start=2000", "model.window_size=500",
                                           "model.warmup=500", "evaluation.every=1000"]),
    "centroid_defended": ("centroid_defended.toml", ["stream.n_events=8000", "attack.start=2000"]),
    "centroid_shift": ("centroid_shift.toml", ["stream.n_events=8000", "attack.start=2000"]),
    "fine_pruning_badnets": ("fine_pruning_badnets.toml", [*NEURAL, "defense=[{kind='fine-pruning',at=1000}]"]),
    "front_running": ("front_running.toml", ["stream.n_events=3000", "model.snapshot_every=500"]),
    "gradient_alignment": ("gradient_alignment.toml", [*NEURAL, "attack.start=200", "attack.supplier_events=300",
                                                       "attack.poisons=8", "attack.steps=4", "attack.restarts=1",
                                                       "model.replay=200"]),
    "label_flip": ("label_flip.toml", ["stream.n_events=4000", "attack.start=1000"]),
    "malicious_architecture": ("malicious_architecture.toml", SUPPLY),
    "malicious_training": ("malicious_training.toml", SUPPLY),
    "mnist_accumulative": ("mnist_accumulative.toml", ACCUMULATIVE),
    "mnist_badnets": ("mnist_badnets.toml", [*NEURAL, "evaluation.explain_inputs=40"]),
    "mnist_blended": ("mnist_blended.toml", NEURAL),
    "mnist_neural_cleanse": ("mnist_neural_cleanse.toml", ["stream.n_events=800", "model.pretrain_events=300",
                                                           "evaluation.every=400", "attack.rate=0.4",
                                                           "defense.neural-cleanse.at=700",
                                                           "defense.neural-cleanse.steps=40"]),  # a suspect: unlearns
    "mnist_strip": ("mnist_strip.toml", ["stream.n_events=600", "model.pretrain_events=300", "evaluation.every=300",
                                         "defense.strip.overlays=4", "defense.strip.every=300"]),
    "provoke": ("provoke.toml", ["stream.n_events=12000", "attack.start=4000"]),
    "provoke_fine_pruning": ("provoke_fine_pruning.toml", [*NEURAL, "attack.start=400"]),
    "split_view": ("split_view.toml", ["stream.n_events=3000", "attack.start=1000"]),
    "strip_badnets": ("strip_badnets.toml", [*NEURAL, "defense=[{kind='strip',overlays=8,superimpose='additive',"
                                                      "every=300,mode='drop'}]"]),
    "targeted": ("targeted.toml", ["stream.n_events=4000", "attack.start=1000"]),
    "witches_brew_retrain": ("witches_brew_retrain.toml", ["stream.n_events=600", "model.pretrain_events=300",
                                                           "model.retrain_every=300", "model.retrain_epochs=2",
                                                           "attack.start=100", "attack.burst_length=8",
                                                           "attack.budget=8", "attack.poisons=8", "attack.steps=4",
                                                           "attack.restarts=1", "attack.supplier_events=300",
                                                           "evaluation.every=300"]),
    # variants: other kinds and keys no ready scenario names
    "detector_random_out_bursts": ("centroid_shift.toml", ["stream.n_events=6000", "attack.start=1000",
                                                          "model.window_policy=random-out", "attack.schedule=bursts",
                                                          "attack.burst_length=40", "stream.n_features=3"]),
    "detector_fifo_fpr_quota": ("centroid_defended.toml", ["stream.n_events=6000", "attack.start=1000",
                                                          "model.window_policy=fifo",
                                                          "defense=[{kind='fpr-reset',every=500},"
                                                          "{kind='source-quota',quota=0.3},"
                                                          "{kind='robust-centroid',estimator='trimmed-mean'}]"]),
    "classifier_kswin_random_flip": ("label_flip.toml", ["stream.n_events=4000", "attack.start=1000",
                                                        "attack.flip=random", "model.window_policy=nearest-out",
                                                        "defense=[{kind='drift-reset',detector='kswin',"
                                                        "action='freeze',every=500}]"]),
    "blobs_classifier_infinite": ("targeted.toml", ["stream.source='blobs'", "stream.n_classes=3",
                                                   "stream.n_features=4", "stream.n_events=3000",
                                                   "attack.start=500", "attack.target_class=1",
                                                   "model.window_policy=infinite"]),
    "river_bananas_flip": ("label_flip.toml", ["stream.source='river:Bananas'", "stream.n_events=2000",
                                              "attack.start=500", "attack.flip=cyclic", "stream.n_test=300"]),
    "mlp_badnets_analysis": ("badnets_cnn.toml", [*NEURAL, "model.kind=mlp", "model.hidden=32",
                                                  "defense=[{kind='activation-analysis',at=1100}]"]),
    "cnn_pruning_drift_sgd": ("fine_pruning_badnets.toml", [*NEURAL, "attack.start=400", "model.optimizer=sgd",
                                                           "model.lr=0.05", "evaluation.every=64",
                                                           "defense=[{kind='fine-pruning',when='drift',"
                                                           "detector='page-hinkley',every=300}]"]),
    "cnn_isolation_loss_blended_noise": ("blended_cnn.toml", [*NEURAL, "attack.trigger.pattern=noise",
                                                              "defense=[{kind='isolation',score='loss',"
                                                              "rule='fraction',every=300}]"]),
    "front_running_quarantine_jitter": ("front_running.toml", ["stream.n_events=3000", "model.snapshot_every=500",
                                                               "model.snapshot_jitter=0.4", "model.quarantine=50",
                                                               "model.veto_flags=5",
                                                               "defense=[{kind='outlier-rejection'}]"]),
    "split_view_pinned": ("split_view.toml", ["stream.n_events=3000", "attack.start=1000",
                                             "model.pin_content=true"]),
    "cnn_strip_union_robust_check": ("strip_badnets.toml", [*NEURAL, "defense=[{kind='strip',overlays=8,"
                                                                     "superimpose='additive',every=300,scale='union',"
                                                                     "layers=2,robust=true,check=200,mode='drop'}]"]),
}
