"""Configs round-trip through JSON and refuse bad values with the received value in the message."""

from __future__ import annotations

import math

import pytest

from bnviz.config import ArchConfig, BNConfig, ConfigError, ConvBlock, ProbeConfig, RunConfig, validate
from bnviz.presets import PRESETS, preset_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name):
    config = preset_config(name, epochs=7, seed=3)
    assert RunConfig.from_json(config.to_json()) == config


def test_custom_config_round_trips():
    config = RunConfig(arch=ArchConfig(blocks=(ConvBlock(8, 5, 3, 1),), norm="group", bn=BNConfig(momentum=0.5, placement="before")))
    again = RunConfig.from_json(config.to_json())
    assert again == config and isinstance(again.arch.blocks[0], ConvBlock)


def test_unknown_field_is_an_error():
    with pytest.raises(ConfigError, match="Unknown"):
        RunConfig.from_json('{"bogus": 1}')


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.with_momentum(1.5), "momentum=1.5"),
        (lambda c: c.with_momentum(-0.1), "momentum=-0.1"),
        (lambda c: c.with_momentum(math.nan), "momentum=nan"),
        (lambda c: c.replace(learning_rate=0.0), "learning_rate=0.0"),
        (lambda c: c.replace(learning_rate=math.inf), "learning_rate=inf"),
        (lambda c: c.replace(batch_size=1), "batch_size=1"),
        (lambda c: c.replace(input_size=4000), "input_size=4000"),
        (lambda c: c.replace(optimizer="lbfgs"), "optimizer='lbfgs'"),
    ],
)
def test_validate_names_field_and_value(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(change(preset_config("bn")))


def test_momentum_bounds_are_allowed():
    for m in (0.0, 1.0):
        assert validate(preset_config("bn").with_momentum(m)).arch.bn.momentum == m


def test_only_batch_normalisation_keeps_moving_statistics_and_configs_stay_plain_json():
    from bnviz.config import Norm

    assert [n for n in Norm if n.has_moving_stats] == [Norm.BATCH]
    assert [n.keras_layer for n in Norm] == ["", "BatchNormalization", "LayerNormalization", "GroupNormalization"]
    config = RunConfig(arch=ArchConfig(norm="group"))
    assert config.arch.norm is Norm.GROUP and not config.arch.has_moving_stats
    assert '"norm": "group"' in config.to_json() and RunConfig.from_json(config.to_json()) == config
    assert not ArchConfig(norm="nonsense").has_moving_stats  # validate() names it; the question does not raise


@pytest.mark.parametrize(("batch", "probe", "population"), [(4, 8, 64), (16, 16, 64), (24, 24, 96), (32, 32, 128), (128, 32, 128)])
def test_the_probe_sizes_follow_the_training_batch_unless_set(batch, probe, population):
    """Probe batch and population default to the training batch's scale (a ResNet50 fine-tuned at batch
    16 runs half the forward work of 32); a size the user sets is kept whatever the batch."""
    auto = ProbeConfig()
    assert (auto.probe_images(batch), auto.population_images(batch)) == (probe, population)
    assert (ProbeConfig(probe_batch=64, population_samples=512).probe_images(batch), ProbeConfig(population_samples=512).population_images(batch)) == (64, 512)


def test_an_automatic_size_is_zero_and_nothing_between_it_and_the_range():
    validate(RunConfig(probe=ProbeConfig(probe_batch=0, population_samples=0)))
    with pytest.raises(ConfigError, match=r"probe_batch must be 0 \(automatic\) or in \[8, 2048\]\. Received: probe_batch=3"):
        validate(RunConfig(probe=ProbeConfig(probe_batch=3)))
