"""What-if levers change exactly one thing."""

from __future__ import annotations

import dataclasses

import pytest

from bnviz.config import validate
from bnviz.levers import LEVERS, available
from bnviz.presets import preset_config
from bnviz.stats import init_weight
from bnviz.store import Run


def _run(config, total_steps=120) -> Run:
    return Run("20260101-000000-abcdef", config.name, config.preset, config, "done", 0, 0, 1, 1, 1, None, total_steps // config.epochs,
               total_steps, False, None, None, None, {})


def _diff(a, b) -> set[str]:
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    flat = lambda d, p="": {f"{p}{k}": v for k, v in d.items() if not isinstance(v, dict)} | {  # noqa: E731
        x: y for k, v in d.items() if isinstance(v, dict) for x, y in flat(v, f"{p}{k}.").items()}
    fa, fb = flat(da), flat(db)
    return {k for k in fa if fa[k] != fb[k]} - {"name"}


def test_lower_momentum_forgets_the_initial_values():
    run = _run(preset_config("bn"))
    config = LEVERS["lower_momentum"].apply(run)
    m = config.arch.bn.momentum
    assert _diff(run.config, config) == {"arch.bn.momentum"}
    assert init_weight(m, 120) < 0.01 and init_weight(m + 0.002, 120) >= 0.009
    assert "PyTorch" in config.name


@pytest.mark.parametrize("key, field, value", [("double_batch", "batch_size", 64), ("remove_bn", "arch.norm", "none"),
                                              ("group_norm", "arch.norm", "group"), ("layer_norm", "arch.norm", "layer")])
def test_single_change_levers(key, field, value):
    run = _run(preset_config("bn"))
    config = validate(LEVERS[key].apply(run))
    assert _diff(run.config, config) == {field}
    obj = config
    for part in field.split("."):
        obj = getattr(obj, part)
    assert obj == value


def test_train_longer_reaches_the_forgetting_horizon():
    run = _run(preset_config("bn"))  # 3 epochs of 40 steps; m = 0.99 needs 459 steps
    config = LEVERS["train_longer"].apply(run)
    assert _diff(run.config, config) == {"epochs"} and config.epochs * 40 >= 458


def test_bn_levers_are_hidden_for_models_without_bn():
    assert [lever.key for lever in available(_run(preset_config("more-layers")))] == ["double_batch"]
