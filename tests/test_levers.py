"""What-if levers change exactly one thing."""

from __future__ import annotations

import dataclasses

import pytest

from bnviz.config import validate
from bnviz.levers import LEVERS, options
from bnviz.presets import preset_config
from bnviz.records import Run
from bnviz.stats import init_weight


def _run(config, total_steps=120) -> Run:
    return Run(
        "20260101-000000-abcdef",
        config.name,
        config.preset,
        config,
        "done",
        0,
        0,
        1,
        1,
        1,
        None,
        total_steps // config.epochs,
        total_steps,
        False,
        None,
        None,
        None,
        {},
    )


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested dict's leaves keyed by their dotted path."""
    leaves = {f"{prefix}{k}": v for k, v in d.items() if not isinstance(v, dict)}
    return leaves | {x: y for k, v in d.items() if isinstance(v, dict) for x, y in _flat(v, f"{prefix}{k}.").items()}


def _diff(a, b) -> set[str]:
    fa, fb = _flat(dataclasses.asdict(a)), _flat(dataclasses.asdict(b))
    return {k for k in fa if fa[k] != fb[k]} - {"name"}


def test_lower_momentum_forgets_the_initial_values():
    run = _run(preset_config("bn"))
    config = LEVERS["lower_momentum"].apply(run, None)
    m = config.arch.bn.momentum
    assert _diff(run.config, config) == {"arch.bn.momentum"}
    assert init_weight(m, 120) < 0.01 and init_weight(m + 0.002, 120) >= 0.009
    assert "PyTorch" in config.name


@pytest.mark.parametrize(
    "key, field, value",
    [("double_batch", "batch_size", 64), ("remove_bn", "arch.norm", "none"), ("group_norm", "arch.norm", "group"), ("layer_norm", "arch.norm", "layer")],
)
def test_single_change_levers(key, field, value):
    run = _run(preset_config("bn"))
    config = validate(LEVERS[key].apply(run, None))
    assert _diff(run.config, config) == {field}
    obj = config
    for part in field.split("."):
        obj = getattr(obj, part)
    assert obj == value


def test_train_longer_reaches_the_forgetting_horizon():
    run = _run(preset_config("bn"))  # 3 epochs of 40 steps; m = 0.99 needs 459 steps
    config = LEVERS["train_longer"].apply(run, None)
    assert _diff(run.config, config) == {"epochs"} and config.epochs * 40 >= 458


def test_bn_levers_are_hidden_for_models_without_bn():
    assert [lever.key for lever, _ in options(_run(preset_config("more-layers")))] == ["double_batch"]


def test_no_lever_that_would_change_nothing():
    """After 459+ steps at 0.99 the initial values are gone: "lower the momentum" would queue 0.99 again."""
    long_run = _run(preset_config("bn"), total_steps=600)
    assert "lower_momentum" not in [lever.key for lever, _ in options(long_run, "stale_initial_values")]
    assert "shuffle" not in [lever.key for lever, _ in options(long_run, "non_iid_batches")]  # already shuffled


def test_levers_follow_the_diagnosed_cause():
    run = _run(preset_config("bn"))
    assert [lever.key for lever, _ in options(run, "stale_initial_values")][:2] == ["lower_momentum", "train_longer"]
    lag = dict((lever.key, config) for lever, config in options(_run(preset_config("bn"), total_steps=2000), "lag", 0.909))
    assert lag["lower_momentum"].arch.bn.momentum == 0.909
    unshuffled = _run(preset_config("final").replace(shuffle=False))
    first, config = options(unshuffled, "non_iid_batches")[0]
    assert first.key == "shuffle" and config.shuffle and _diff(unshuffled.config, config) == {"shuffle"}
    noisy = _run(preset_config("final").with_momentum(0.3).replace(batch_size=4))
    keys = [lever.key for lever, _ in options(noisy, "batch_noise")]
    assert keys[:2] == ["double_batch", "raise_momentum"]
