"""The online neural net: test-then-train, seeding, weights-only checkpoints."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch

from poisonsim.models.neural import NeuralClassifier


def _data(m=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=m)
    x = rng.normal(size=(m, 6)).astype(np.float32) + 2.5 * np.eye(3, 6, dtype=np.float32)[y]
    return x, y.astype(np.int64)


def _best_possible(x, y) -> float:
    """The accuracy of the Bayes rule on these events: the class means differ in one coordinate each, so it
    picks the largest of the first three features (no learner can do better on average)."""
    return float((x[:, :3].argmax(axis=1) == y).mean())


def test_every_event_is_predicted_before_it_is_learned():
    """Predictions equal those of a reference that predicts each event, then learns it."""
    x, y = _data()
    online = NeuralClassifier(3, 6, batch_size=10, device="cpu", seed=3)
    predictions, _ = online.process_many(x, y)

    reference = NeuralClassifier(3, 6, batch_size=10, device="cpu", seed=3)
    expected = []
    for xi, yi in zip(x, y):
        expected.append(reference.predict_one(xi))
        reference.learn_one(xi, int(yi))
    assert predictions.tolist() == expected
    assert online.steps_ == len(x) // 10
    # and it learns: within 5 points of the best possible rule on the same 200 events (0.90 there)
    assert (predictions[-200:] == y[-200:]).mean() >= _best_possible(x[-200:], y[-200:]) - 0.05


def test_same_seed_same_net_and_different_seed_different_net():
    x, y = _data()
    nets = [NeuralClassifier(3, 6, device="cpu", seed=s) for s in (1, 1, 2)]
    for net in nets:
        net.learn_many(x, y)
    weights = [torch.cat([p.detach().ravel() for p in n.net.parameters()]) for n in nets]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_seeding_leaves_the_global_torch_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    NeuralClassifier(3, 6, device="cpu", seed=9)
    assert torch.equal(torch.rand(1), expected)


def test_weights_round_trip_and_pickled_code_is_refused(tmp_path):
    x, y = _data()
    net = NeuralClassifier(3, 6, device="cpu", seed=1)
    net.learn_many(x, y)
    path = tmp_path / "weights.pt"
    net.save_weights(path)
    fresh = NeuralClassifier(3, 6, device="cpu", seed=5)
    fresh.load_weights(path)
    assert np.array_equal(fresh.predict_proba_many(x), net.predict_proba_many(x))

    buffer = io.BytesIO()
    torch.save(net.net, buffer)  # a whole pickled module: code, not weights
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        fresh.load_weights(buffer.getvalue())


def test_device_choice():
    assert NeuralClassifier(3, 6, device="auto").device_.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='device: "cuda" was asked for but torch sees no GPU'):
            NeuralClassifier(3, 6, device="cuda")


def test_replay_keeps_a_uniform_reservoir():
    x = np.arange(2000, dtype=np.float32).reshape(-1, 1).repeat(2, axis=1)
    net = NeuralClassifier(2, 2, batch_size=50, replay=200, device="cpu", seed=0)
    net.learn_many(x / 2000, np.zeros(2000, dtype=np.int64))
    kept = net._replay_x[:, 0] * 2000
    assert net._replay_seen == 2000
    # a uniform sample of 200 from 0..1999: mean 1000, sd 577 / sqrt(200)
    assert abs(kept.mean() - 1000) < 4 * 577 / np.sqrt(200)
    assert len(np.unique(kept)) == 200


def test_bad_labels_are_refused():
    net = NeuralClassifier(3, 6, device="cpu")
    with pytest.raises(ValueError, match=r"Y: labels must lie in \[0, 3\)"):
        net.learn_many(np.zeros((2, 6)), [0, 7])
    with pytest.raises(ValueError, match="X: expected 6 features, got 5"):
        net.learn_many(np.zeros((2, 5)), [0, 1])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_state_round_trip_resumes_exactly(tmp_path, optimizer):
    """Stop after part of a stream, restore into a fresh learner: same as never stopping."""
    from poisonsim.services import checkpoint

    x, y = _data()
    kwargs = dict(batch_size=10, replay=40, replay_batch=5, optimizer=optimizer, lr=0.01, device="cpu", seed=2)
    whole = NeuralClassifier(3, 6, **kwargs)
    expected, _ = whole.process_many(x, y)

    first = NeuralClassifier(3, 6, **kwargs)
    head, _ = first.process_many(x[:237], y[:237])  # mid mini-batch
    checkpoint.save(tmp_path / "ck.npz", {"model": first.get_state()})
    resumed = NeuralClassifier(3, 6, **{**kwargs, "seed": 99})
    resumed.set_state(checkpoint.load(tmp_path / "ck.npz")["model"])
    tail, _ = resumed.process_many(x[237:], y[237:])
    assert np.concatenate([head, tail]).tolist() == expected.tolist()
    assert np.array_equal(resumed.predict_proba_many(x), whole.predict_proba_many(x))


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_batch_norm_nets_learn_on_batch_statistics_and_predict_on_running_ones(architecture):
    x, y = _data(m=900)
    x = np.pad(x, ((0, 0), (0, 3)))  # 9 features: a 3x3 image for the CNN
    net = NeuralClassifier(3, 9, architecture, image_side=3, norm="batch", batch_size=1, device="cpu", seed=0)
    norms = [m for m in net.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == (2 if architecture == "mlp" else 3)  # after each convolution and hidden dense layer
    start = [m.running_mean.clone() for m in norms]
    net.learn_many(x[:1], y[:1])  # a step on one event: dense layers' norms keep their running statistics
    moved = [not torch.equal(m.running_mean, s) for m, s in zip(norms, start)]
    assert net.steps_ == 1 and moved == ([False, False] if architecture == "mlp" else [True, True, False])
    learner = NeuralClassifier(3, 9, architecture, image_side=3, norm="batch", batch_size=16, device="cpu", seed=0)
    predictions, _ = learner.process_many(x, y)
    assert (predictions[-300:] == y[-300:]).mean() >= _best_possible(x[-300:], y[-300:]) - 0.05  # 0.93 there
    assert np.array_equal(learner.predict_many(x[:50]), [learner.predict_one(row) for row in x[:50]])  # running


def test_an_unknown_norm_is_refused_by_name():
    with pytest.raises(ValueError, match="norm: expected one of none, batch; got 'layer'"):
        NeuralClassifier(3, 6, norm="layer", device="cpu")


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_continued_optimizer_trains_a_copy_as_the_served_model_would(optimizer):
    """A copy of the net stepped with ``continued_optimizer`` lands on the weights the served model reaches on the
    same batch; the served model's own optimiser state is left as it was."""
    x, y = _data(m=40)
    model = NeuralClassifier(3, 6, batch_size=20, optimizer=optimizer, device="cpu", seed=4)
    model.learn_many(x[:20], y[:20])  # the served optimiser has moments now
    before = {k: v.clone() for k, v in model._optimizer.state_dict()["state"][0].items()}
    copy_net = copy.deepcopy(model.net)
    continued = model.continued_optimizer(copy_net)
    copy_net.train()
    loss = torch.nn.functional.cross_entropy(copy_net(torch.as_tensor(x[20:])), torch.as_tensor(y[20:]))
    loss.backward()
    continued.step()
    assert all(torch.equal(before[k], v) for k, v in model._optimizer.state_dict()["state"][0].items())
    model.learn_many(x[20:], y[20:])
    for served, copied in zip(model.net.parameters(), copy_net.parameters()):
        torch.testing.assert_close(served, copied, rtol=1e-5, atol=1e-6)  # one step, the same arithmetic
