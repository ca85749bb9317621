"""The diagnosis on stored runs with known numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bnviz.diagnose import as_text, diagnose, momentum_text
from bnviz.presets import preset_config
from bnviz.stats import suggest_momentum
from bnviz.store import Evaluation, LayerTrace, Run, RunData


def _run(config, info=None) -> Run:
    return Run("20260101-000000-abcdef", config.name, config.preset, config, "done", 0.0, 0.0, 1.0, 1.0, 1, None, 40, 120,
               False, None, None, None, info or {})


def _trace(steps, moving_mean, pop_mean, pop_var, moving_var=None, channels=4, batch_jitter=0.0) -> LayerTrace:
    n = len(steps)
    rng = np.random.default_rng(0)
    full = lambda v: np.full((n, channels), v, dtype=np.float32)  # noqa: E731
    batch = full(pop_mean) + batch_jitter * np.sqrt(pop_var) * rng.normal(size=(n, channels)).astype(np.float32)
    batch[0] = np.nan
    per_channel = lambda v: np.asarray(v, np.float32).reshape(n, 1).repeat(channels, 1)  # noqa: E731
    return LayerTrace("norm1", per_channel(moving_mean), full(1.0) if moving_var is None else per_channel(moving_var),
                      batch, full(pop_var), full(pop_mean), full(pop_var), np.zeros((n, 6), np.float32), np.zeros((n, 5), np.int32),
                      np.zeros((n, 5), np.int32), steps=np.array(steps))


def _data(preset="bn", momentum=0.99, steps=120, test=0.3, test_batch=0.95, train=0.3, fit_acc=0.99, moving=None, moving_var=None,
          pop_mean=50.0, pop_var=400.0, info=None, jitter=0.0):
    """A stored run probed at 5 steps; moving mean/variance default to a stale climb towards the population."""
    config = preset_config(preset).with_momentum(momentum)
    probe_steps = [0, steps // 4, steps // 2, 3 * steps // 4, steps]
    moving = moving if moving is not None else [0.0, pop_mean * 0.2, pop_mean * 0.4, pop_mean * 0.6, pop_mean * 0.7]
    moving_var = moving_var if moving_var is not None else [1.0, 20.0, 50.0, 100.0, 150.0]
    acc = {"train": train, "val": test, "test": test, "train_batchstats": 0.99, "val_batchstats": test_batch, "test_batchstats": test_batch}
    step_frame = pd.DataFrame({"step": range(1, steps + 1), "epoch": 1, "loss": 0.1, "accuracy": fit_acc})
    probes = pd.DataFrame({"step": probe_steps, "epoch": 1, "acc_train_mode": test_batch, "acc_inference": test, "loss_train_mode": 0.1, "loss_inference": 2.0})
    layers = {"norm1": _trace(probe_steps, moving, pop_mean, pop_var, moving_var=moving_var, batch_jitter=jitter)} if config.arch.norm == "batch" else {}
    return RunData(_run(config, info), step_frame, probes, layers, {"final": Evaluation.from_dict({"accuracy": acc})})


def _by_key(findings):
    return {f.key: f for f in findings}


def test_collapse_is_blamed_on_moving_statistics_with_numbers():
    findings = diagnose(_data())
    found = _by_key(findings)
    assert findings[0].key == "verdict" and findings[0].severity == "critical"
    gap = found["mode_gap"]
    assert gap.severity == "critical" and gap.numbers["gap"] == pytest.approx(0.65) and "0.30" in gap.detail and "0.95" in gap.detail
    stale = found["stale_initial_values"]
    assert stale.numbers["init_weight"] == pytest.approx(0.99**120) and "30%" in stale.detail
    assert "PyTorch: momentum=0.01" in stale.detail
    assert any(f"{suggest_momentum(120):g}" in r for r in stale.remedies)
    layer = found["layer_norm1"]
    assert layer.severity == "critical" and layer.numbers["mean_gap_sd"] == pytest.approx(0.3 * 50 / 20, rel=1e-3)
    assert layer.numbers["variance_ratio"] == pytest.approx(150 / 400, rel=1e-3)
    assert found["fit_vs_evaluate"].numbers["fit_accuracy"] == pytest.approx(0.99)
    assert found["data_regime"].numbers["far"] == 1.0 and "belong to no data" in found["data_regime"].detail
    assert "too small" in layer.detail  # moving variance 150 < population 400: outputs blown up
    assert all(f.remedies for f in findings if f.severity in ("critical", "warning"))


def test_healthy_bn_run_gets_not_the_cause_verdict():
    findings = diagnose(_data("final", 0.8, test=0.97, test_batch=0.97, train=0.99, moving=[0.0, 40.0, 49.0, 50.0, 50.0], moving_var=[1, 300, 390, 400, 400]))
    found = _by_key(findings)
    assert found["verdict"].severity == "ok" and "not the cause" in found["verdict"].title
    assert "mode_gap" not in found and "fit_vs_evaluate" not in found
    assert found["stale_initial_values"].severity == "ok"


def test_overfitting_without_bn_says_so():
    findings = diagnose(_data("more-layers", test=0.6, test_batch=0.61, train=0.99))
    verdict = findings[0]
    assert verdict.severity == "ok" and "no BatchNormalization" in verdict.detail and "overfitting" in verdict.detail


def test_moving_statistics_that_never_moved_are_flagged():
    found = _by_key(diagnose(_data(moving=[0.0] * 5, moving_var=[1.0] * 5)))
    assert found["never_moved"].severity == "critical" and "training=True" in found["never_moved"].detail


def test_sparse_regime_is_recognised():
    found = _by_key(diagnose(_data(pop_mean=0.2, pop_var=1.0, moving=[0.0, 0.05, 0.1, 0.12, 0.15], moving_var=[1.0] * 5)))
    assert found["data_regime"].numbers["far"] == 0.0 and "cost little" in found["data_regime"].detail


def test_noisy_batches_at_small_batch_size():
    found = _by_key(diagnose(_data(jitter=0.5)))
    assert found["batch_noise"].numbers["noise_sd"] > 0.3


def test_data_shift_is_a_data_problem():
    info = {"data_shift": {"train_pixel_mean": 100.0, "train_pixel_std": 50.0, "val_pixel_mean": 140.0}}
    found = _by_key(diagnose(_data(info=info)))
    assert found["data_shift"].numbers["shift_sd"] == pytest.approx(0.8)


def test_dropout_before_bn_is_flagged():
    layers = [{"type": t} for t in ("Conv2D", "Dropout", "BatchNormalization", "Dense")]
    assert "dropout_before_bn" in _by_key(diagnose(_data(info={"layers": layers})))
    layers = [{"type": t} for t in ("Conv2D", "BatchNormalization", "Dropout", "Dense")]
    assert "dropout_before_bn" not in _by_key(diagnose(_data(info={"layers": layers})))


def test_text_rendering_and_momentum_conventions():
    assert momentum_text(0.8) == "momentum 0.8 (PyTorch: momentum=0.2)"
    text = as_text(diagnose(_data()))
    assert text.startswith("[CRITICAL] Verdict") and "→" in text
