"""Scenario files: every value checked before anything runs, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonsim.config import ConfigError, Scenario

SCENARIOS = sorted(Path(__file__).parent.parent.joinpath("scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_ready_scenarios_load_and_round_trip(path):
    scenario = Scenario.from_toml(path)
    again = Scenario.from_dict(__import__("tomllib").loads(scenario.to_toml()))
    assert again == scenario


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"window_size": 0}}, "model.window_size: expected an integer >= 1, got 0"),
        ({"model": {"window_size": 2.5}}, "model.window_size: expected an integer, got 2.5"),
        (
            {"stream": {"n_events": 1e12}},
            "stream.n_events: expected an integer, got 1000000000000.0 (a float: write 1_",
        ),
        ({"model": {"window_policy": "lifo"}}, "model.window_policy: expected one of fifo, average-out"),
        (
            {"model": {"windowsize": 3}},
            'model.windowsize: not a key of model kind "centroid-detector" (its keys: window_size, window_policy',
        ),
        ({"attack": {"rate": 1.5}}, "attack.rate: expected a number <= 1, got 1.5"),
        ({"attack": {"rate": "high"}}, "attack.rate: expected a number, got 'high'"),
        (
            {"attack": {"kind": "none", "rate": 0.1}},
            'attack.rate: attack.kind "none" poisons nothing, so the rate must be 0',
        ),
        ({"attack": {"kind": "targeted", "target_point": [1, "a"]}}, "attack.target_point: expected a list of numbers"),
        (
            {"stream": {"source": "cifar10"}},
            'stream.source: source kind "cifar10" does not exist (known: blobs, digits, mnist, river:Bananas',
        ),
        ({"stream": {"source": "river:Elec2"}}, 'stream.source: source kind "river:Elec2" does not exist'),
        ({"stream": {"source": "digits", "augment": 1}}, "stream.augment: expected true or false, got 1"),
        ({"evaluation": {"every": -1}}, "evaluation.every: expected an integer >= 1, got -1"),
        ({"sed": 3}, "sed: unknown key"),
        ({"seed": -1}, "seed: expected an integer >= 0"),
        ({"model": 3}, "model: expected a table"),
        (
            {"model": {"kind": "centroid-classifier"}, "attack": {"kind": "centroid-shift", "rate": 0.1}},
            'attack.kind: "centroid-shift" needs a model or source that offers centroid-state',
        ),
        (
            {"attack": {"kind": "centroid-shift", "channel": "split-view", "controlled_share": 0.2}},
            "attack.channel: centroid-shift places its points when they are delivered",
        ),
        ({"model": {"radius": float("inf")}}, "model.radius: expected a finite number, got inf"),
        (
            {"attack": {"kind": "targeted", "target_point": [float("nan"), 1.0]}},
            "attack.target_point: expected a finite",
        ),
    ],
)
def test_bad_values_are_refused_with_the_key_and_the_allowed_values(raw, message):
    with pytest.raises(ConfigError) as info:
        Scenario.from_dict(raw)
    assert message in str(info.value)


def test_overrides_apply_and_are_validated(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('seed = 1\n[attack]\nkind = "label-flip"\nrate = 0.1\n')
    scenario = Scenario.from_toml(path, ["attack.rate=0.3", "model.window_policy=random-out", "name=x"], seed=9)
    assert (scenario.attack.rate, scenario.model.window_policy, scenario.name, scenario.seed) == (
        0.3,
        "random-out",
        "x",
        9,
    )
    with pytest.raises(ConfigError, match="attack.budget: expected an integer >= 0, got -5"):
        Scenario.from_toml(path, ["attack.budget=-5"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        Scenario.from_toml(path, ["attack.rate"])


def test_an_override_sets_one_key_of_one_table_of_an_array(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[attack]\nkind = "badnets"\n[[defense]]\nkind = "strip"\n[[defense]]\nkind = "fine-pruning"\n')
    images = ["model.kind=cnn", "stream.source=digits"]
    by_kind = ["defense.strip.check=100", "defense.fine-pruning.when=drift"]
    for sets in (["defense.0.check=100", "defense[1].when=drift"], by_kind):
        strip, pruning = Scenario.from_toml(path, [*sets, *images]).defense
        assert (strip.kind, strip.check, strip.overlays) == ("strip", 100, 16)  # the other keys keep their defaults
        assert (pruning.kind, pruning.when) == ("fine-pruning", "drift")


def test_unreadable_files_say_so(tmp_path):
    with pytest.raises(ConfigError, match="no such scenario file"):
        Scenario.from_toml(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("seed = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Scenario.from_toml(broken)
