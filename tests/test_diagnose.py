"""The diagnosis on stored runs with known numbers: reference figures against numpy, every
threshold just below and just above, and verdicts that never contradict a finding."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from bnviz import diagnose as dx
from bnviz.diagnose import BN_CAUSES, CAUSES, SEVERITIES, Finding, as_text, layer_figures, momentum_text
from bnviz.presets import preset_config
from bnviz.records import Evaluation, LayerTrace, Run, RunData

EPS = 1e-3
CHANNELS = 4


def diagnose(data: RunData, *args, **kwargs) -> list[Finding]:
    """bnviz's diagnosis, each finding held to the form every page and the CLI rely on: a title, a
    sentence without "nan" or "None", remedies as sentences, numbers by name, a known severity."""
    findings = dx.diagnose(data, *args, **kwargs)
    for f in findings:
        assert f.severity in SEVERITIES and (f.cause in CAUSES or f.cause == ""), f
        for text in (f.key, f.title, f.detail, *f.remedies):
            assert isinstance(text, str) and text.strip() and "nan" not in text.split() and "None" not in text, (f.key, text)
        assert isinstance(f.remedies, tuple) and isinstance(f.numbers, dict) and all(isinstance(k, str) for k in f.numbers), f.key
    return findings


def _run(config, info=None, status="done", total=120) -> Run:
    return Run(
        "20260101-000000-abcdef", config.name, config.preset, config, status, 0.0, 0.0, 1.0, 1.0, 1, None, 40, total, False, None, None, None, info or {}
    )


SETTLED = {"moving": (0.0, 45.0, 49.0, 50.0, 50.0), "moving_var": (1.0, 350.0, 390.0, 400.0, 400.0)}  # converged, not stuck


def _trace(
    name="norm1",
    steps=(0, 30, 60, 90, 120),
    moving=(0.0, 10, 20, 30, 35),
    moving_var=(1.0, 20, 50, 100, 150),
    pop_mean=50.0,
    pop_var=400.0,
    infer=None,
    iid_sd=None,
    batch_offset=0.0,
) -> LayerTrace:
    """Per-channel constant traces; `infer` = (mean, var) in inference mode (default: the population's),
    `iid_sd` the i.i.d. batch-mean SD (default 0.1 population SD), batches `batch_offset` i.i.d. SDs off."""
    n = len(steps)
    full = lambda v: np.full((n, CHANNELS), v, dtype=np.float32)  # noqa: E731
    per_step = lambda v: np.asarray(v, np.float32).reshape(n, 1).repeat(CHANNELS, 1)  # noqa: E731
    iid = 0.1 * math.sqrt(pop_var) if iid_sd is None else iid_sd
    batch = full(pop_mean + batch_offset * iid)
    batch[0] = np.nan
    infer_mean, infer_var = infer if infer is not None else (pop_mean, pop_var)
    return LayerTrace(
        name,
        per_step(moving),
        per_step(moving_var),
        batch,
        full(pop_var),
        full(pop_mean),
        full(pop_var),
        np.zeros((n, 6), np.float32),
        np.zeros((n, 5), np.int32),
        np.zeros((n, 5), np.int32),
        full(infer_mean),
        full(infer_var),
        full(iid),
        steps=np.array(steps),
    )


def _data(
    preset="bn",
    momentum=0.99,
    steps=120,
    inference=0.3,
    recalibrated=0.95,
    batchstats=0.95,
    train=None,
    val=None,
    fit=0.99,
    layers=None,
    info=None,
    status="done",
    shuffle=True,
    batch_size=32,
    final=True,
) -> RunData:
    config = preset_config(preset).with_momentum(momentum).replace(shuffle=shuffle, batch_size=batch_size)
    train = inference if train is None else train
    val = inference if val is None else val
    acc = {
        "train": train,
        "val": val,
        "test": inference,
        "fit": fit,
        "train_batchstats": batchstats,
        "val_batchstats": batchstats,
        "test_batchstats": batchstats,
    }
    step_frame = pd.DataFrame({"step": range(1, steps + 1), "epoch": 1, "loss": 0.1, "accuracy": fit})
    probes = pd.DataFrame(
        {"step": [0, steps], "epoch": 1, "acc_train_mode": batchstats, "acc_inference": inference, "loss_train_mode": 0.1, "loss_inference": 2.0}
    )
    if layers is None:
        layers = [_trace(steps=(0, steps // 4, steps // 2, 3 * steps // 4, steps))] if config.arch.norm == "batch" else []
    evaluations = {}
    if final:
        evaluations["final"] = Evaluation.from_dict({"accuracy": acc})
        if config.arch.norm == "batch":
            evaluations["recalibrated"] = Evaluation.from_dict({"accuracy": {"train": recalibrated, "val": recalibrated, "test": recalibrated}})
    return RunData(_run(config, info, status, steps), step_frame, probes, {t.layer: t for t in layers}, evaluations)


def _by_key(findings):
    return {f.key: f for f in findings}


def _assert_consistent(findings):
    """The verdict names one cause, and no finding of another cause is a warning or worse."""
    top = findings[0]
    assert top.key == "verdict" and top.cause in CAUSES
    for f in findings[1:]:
        if f.key in CAUSES and f.key != top.cause and not (f.key == "test_shift" and top.cause in BN_CAUSES):
            assert f.severity in ("info", "ok"), (top.cause, f.key, f.severity)
        if f.key.startswith("layer_") and top.cause not in BN_CAUSES:
            assert f.severity in ("info", "ok"), (top.cause, f.key)
        if f.severity in ("info", "ok"):
            assert not f.remedies, f.key


# --- reference figures --------------------------------------------------------------------------
def test_scale_error_includes_epsilon_as_bn_divides_by_sqrt_var_plus_eps():
    moving_var, population = 0.0115, 8.9e-4  # norm1 in the issue: ε ≈ the population variance
    trace = _trace(moving=(0.0,) * 5, moving_var=(moving_var,) * 5, pop_mean=0.0, pop_var=population)
    fig = layer_figures(trace, EPS)
    assert fig.own_scale == pytest.approx(np.sqrt((moving_var + EPS) / (population + EPS)), rel=1e-5)
    assert fig.own_scale < np.sqrt(moving_var / population) * 0.75  # ignoring ε would overstate it


def test_inference_mode_truth_differs_from_the_training_mode_comparison():
    """norm3 in the issue: the training-mode population says the moving variance is about right, but at
    inference the layers above squash its input to a variance of 0.0085 against a moving 1.53."""
    trace = _trace(moving=(0.2,) * 5, moving_var=(1.53,) * 5, pop_mean=0.2, pop_var=1.9, infer=(0.05, 0.0085))
    fig = layer_figures(trace, EPS)
    assert fig.own_scale == pytest.approx(np.sqrt((1.53 + EPS) / (1.9 + EPS)), rel=1e-5) and fig.own_severity == "ok"
    assert fig.infer_scale == pytest.approx(np.sqrt((1.53 + EPS) / (0.0085 + EPS)), rel=1e-5) and fig.severity == "critical"
    assert fig.infer_mean_gap == pytest.approx(0.15 / np.sqrt(0.0085 + EPS), rel=1e-5)
    finding = _by_key(diagnose(_data(layers=[trace])))["layer_norm1"]
    assert "12.7× too large" in finding.detail and "1.11× too small" in finding.detail


def test_the_first_layer_whose_own_statistics_are_off_is_named():
    good = _trace("norm1", **SETTLED)
    bad = _trace("norm2", moving=(0.0,) * 5, moving_var=(1.0,) * 5)
    info = {"layers": [{"name": "norm1"}, {"name": "norm2"}]}
    found = _by_key(diagnose(_data(layers=[good, bad], info=info)))
    assert found["layer_norm2"].numbers["first_wrong"] == 1.0 and "norm2 goes wrong first" in found["layer_norm2"].detail
    assert found["layer_norm1"].numbers["first_wrong"] == 0.0


@pytest.mark.parametrize("gap, severity", [(0.24, "ok"), (0.26, "warning"), (0.99, "warning"), (1.01, "critical")])
def test_layer_mean_gap_thresholds(gap, severity):
    trace = _trace(moving=(50.0 + gap * np.sqrt(400 + EPS),) * 5, moving_var=(400.0,) * 5)
    assert layer_figures(trace, EPS).severity == severity


@pytest.mark.parametrize("scale, severity", [(1.11, "ok"), (1.13, "warning"), (1.41, "warning"), (1.42, "critical"), (1 / 1.13, "warning")])
def test_layer_scale_thresholds(scale, severity):
    trace = _trace(moving=(50.0,) * 5, moving_var=(scale**2 * (400 + EPS) - EPS,) * 5)
    assert layer_figures(trace, EPS).severity == severity


# --- verdicts and their boundaries ----------------------------------------------------------------
def test_stale_collapse_names_the_cause_with_its_numbers():
    findings = diagnose(_data())
    top, found = findings[0], _by_key(findings)
    assert top.cause == "stale_initial_values" and top.severity == "critical"
    assert found["stale_initial_values"].numbers["init_weight"] == pytest.approx(0.99**120) and "30%" in found["stale_initial_values"].detail
    assert "PyTorch: momentum=0.01" in found["stale_initial_values"].detail
    assert top.numbers["accuracy_drop"] == pytest.approx(0.65) and top.numbers["suggested_momentum"] < 0.99
    _assert_consistent(findings)


@pytest.mark.parametrize(
    "recalibrated, cause, severity",
    [
        (0.349, "healthy", "warning"),  # healthy as far as BN goes, but the model fits 0.3 of its training images: weak
        (0.351, "stale_initial_values", "warning"),
        (0.449, "stale_initial_values", "warning"),
        (0.451, "stale_initial_values", "critical"),
    ],
)
def test_lost_accuracy_thresholds(recalibrated, cause, severity):
    findings = diagnose(_data(inference=0.3, recalibrated=recalibrated, fit=0.3, train=0.3))
    assert (findings[0].cause, findings[0].severity) == (cause, severity)
    assert (findings[0].title == f"Verdict: {dx.WEAK_MODEL}") == (cause == "healthy")
    _assert_consistent(findings)


def test_without_a_recalibrated_evaluation_training_batches_give_the_evidence():
    """Older runs and a failed PreciseBN pass: batch statistics on *training* images stand in (no transduction)."""
    data = _data(inference=0.28, train=0.28, fit=0.99, batchstats=0.97)
    del data.evaluations["recalibrated"]
    findings = diagnose(data)
    assert findings[0].cause == "stale_initial_values" and findings[0].numbers["accuracy_drop"] == pytest.approx(0.97 - 0.28)
    _assert_consistent(findings)


def test_transductive_batch_statistics_alone_never_blame_bn():
    findings = diagnose(_data(inference=0.3, recalibrated=0.31, batchstats=0.95, fit=0.31, train=0.31))
    assert findings[0].cause == "healthy" and "no proof" in _by_key(findings)["accuracy"].detail
    _assert_consistent(findings)


@pytest.mark.parametrize("steps, cause", [(297, "stale_initial_values"), (299, "lag")])  # 0.99^298 = 0.0500
def test_stale_weight_threshold_separates_stale_from_lag(steps, cause):
    findings = diagnose(_data(steps=steps))
    assert findings[0].cause == cause
    _assert_consistent(findings)


@pytest.mark.parametrize("offset, named", [(2.9 * 0.6745, False), (3.1 * 0.6745, True)])
def test_non_iid_ratio_threshold_for_models_trained_elsewhere(offset, named):
    """bnviz cannot see another script's batch order: it measures how far batch means sit from i.i.d. ones,
    from at least MIN_IID_VALUES late values (here 4 records × 4 channels). PreciseBN does not repair this
    run (0.31 against 0.30), as it cannot repair batches that were not i.i.d."""
    trace = _trace(steps=(0, 30, 60, 80, 100, 120), moving=(0.0, 10, 20, 25, 30, 35), moving_var=(1.0, 20, 50, 80, 100, 150), batch_offset=offset)
    findings = diagnose(_data(layers=[trace], recalibrated=0.31, info={"source": "callback"}))
    ratio = offset / dx.HALF_NORMAL_MEDIAN  # every batch `offset` i.i.d. SDs off: the median |z| is `offset`
    assert (findings[0].cause == "non_iid_batches") == named and _by_key(findings)["non_iid_batches"].numbers["ratio"] == pytest.approx(ratio, rel=1e-4)
    _assert_consistent(findings)


def test_a_measured_non_iid_ratio_never_outranks_statistics_that_precisebn_repairs():
    """Shuffled runs read up to 2.9 by chance (four batches' spread); where recalibrating repairs the
    accuracy (0.30 → 0.95) the statistics were at fault, not the batches: the initial values are named."""
    trace = _trace(steps=(0, 30, 60, 80, 100, 120), moving=(0.0, 10, 20, 25, 30, 35), moving_var=(1.0, 20, 50, 80, 100, 150), batch_offset=3.5 * 0.6745)
    findings = diagnose(_data(layers=[trace], info={"source": "callback"}))
    assert findings[0].cause == "stale_initial_values" and _by_key(findings)["non_iid_batches"].severity in ("info", "ok")
    _assert_consistent(findings)
    unshuffled = diagnose(_data(layers=[_trace(batch_offset=1.6 * 0.6745)], shuffle=False))  # bnviz fed them class by class: a fact, named
    assert unshuffled[0].cause == "non_iid_batches"


def test_pinned_batch_means_give_no_non_iid_measure():
    """Upstream BN pins the batch means of a layer fed 1×1 maps (EfficientNet at 32²): the i.i.d.
    spread is float32 dust, and a batch mean off by dropout noise read as 10⁶ i.i.d. SDs."""
    trace = _trace(steps=(0, 30, 60, 80, 100, 120), moving=(0.0, 10, 20, 25, 30, 35), moving_var=(1.0, 20, 50, 80, 100, 150), batch_offset=3.0)
    data = _data(layers=[dataclasses.replace(trace, iid_mean_sd=np.full_like(trace.iid_mean_sd, 1e-7))], info={"source": "callback"})
    assert dx.non_iid_ratio(_data(layers=[trace], info={"source": "callback"})) > dx.NON_IID_RATIO  # the same batches with a real spread
    assert math.isnan(dx.non_iid_ratio(data))
    findings = diagnose(data)
    assert findings[0].cause != "non_iid_batches"
    _assert_consistent(findings)


@pytest.mark.parametrize(
    "offset, shuffle, cause",
    [
        (5.0, True, "stale_initial_values"),  # bnviz shuffled this run itself: noisy batch means are not a composition problem
        (1.4 * 0.6745, False, "stale_initial_values"),
        (1.6 * 0.6745, False, "non_iid_batches"),
    ],
)
def test_bnviz_runs_are_non_iid_only_when_unshuffled_and_measurably_so(offset, shuffle, cause):
    findings = diagnose(_data(layers=[_trace(batch_offset=offset)], shuffle=shuffle))
    assert findings[0].cause == cause
    _assert_consistent(findings)
    if cause == "non_iid_batches":
        assert "without shuffling" in _by_key(findings)["non_iid_batches"].detail
        assert "The weights are fine" not in findings[0].detail and "shuffle and retrain" in findings[0].detail


@pytest.mark.parametrize("noise, cause", [(0.19, "lag"), (0.21, "batch_noise")])
def test_batch_noise_threshold(noise, cause):
    m = 0.5
    iid = noise / math.sqrt((1 - m) / (1 + m)) * math.sqrt(400.0)
    findings = diagnose(_data(momentum=m, layers=[_trace(iid_sd=iid)], batch_size=4))
    assert findings[0].cause == cause and _by_key(findings)["batch_noise"].numbers["noise_sd"] == pytest.approx(noise, rel=1e-4)
    _assert_consistent(findings)


def _shift_info(test, val=0.05):
    return {
        "input_shift": {
            "first_bn_input": {"test": test, "val": val},
            "pixels": {"test": test, "val": val},
            "pixel_mean": {"train": 110.0, "val": 111.0, "test": 60.0},
        }
    }


@pytest.mark.parametrize(
    "test, val_acc, cause",
    [(0.29, 0.85, "overfitting"), (0.31, 0.85, "test_shift"), (0.29, 0.99, "test_shift"), (0.31, 0.54, "overfitting"), (0.6, 0.99, "test_shift")],
)
def test_test_shift_thresholds(test, val_acc, cause):
    """Shifted when the test inputs sit ≥ 0.3 training SDs off (3× validation's) and test accuracy is
    more than 0.05 below validation; recalibration does not help, so BN is not blamed. A drop of the
    test split alone (validation as good as training) is a shift whatever the input measure says:
    overfitting needs train ≫ validation."""
    findings = diagnose(
        _data(
            "final",
            0.8,
            inference=0.5,
            recalibrated=0.51,
            batchstats=0.9,
            train=0.99,
            val=val_acc,
            fit=0.99,
            info=_shift_info(test),
            layers=[_trace(**SETTLED)],
        )
    )
    assert findings[0].cause == cause
    _assert_consistent(findings)
    if cause == "test_shift":
        assert "BN is not the cause" in findings[0].title and "110.0" in _by_key(findings)["test_shift"].detail


def test_a_shift_that_validation_shares_is_no_measured_test_shift_but_never_overfitting():
    info = _shift_info(0.6, val=0.25)
    findings = diagnose(_data("final", 0.8, inference=0.5, recalibrated=0.5, train=0.99, val=0.85, batchstats=0.5, info=info, layers=[_trace(**SETTLED)]))
    assert findings[0].cause == "overfitting"  # train 0.99 ≫ validation 0.85, and the test inputs' shift is shared by validation
    findings = diagnose(_data("final", 0.8, inference=0.5, recalibrated=0.5, train=0.99, val=0.99, batchstats=0.5, info=info, layers=[_trace(**SETTLED)]))
    assert findings[0].cause == "test_shift"  # validation as good as training: only the test split dropped, which is no overfitting


def test_bn_evidence_comes_from_validation_when_the_test_set_is_shifted():
    data = _data(inference=0.2, recalibrated=0.2, val=0.3, info=_shift_info(1.0), train=0.3)
    data.evaluations["recalibrated"] = Evaluation.from_dict({"accuracy": {"train": 0.2, "val": 0.95, "test": 0.2}})
    findings = diagnose(data)
    assert findings[0].cause == "stale_initial_values" and "Val accuracy is 0.30" in findings[0].detail
    assert _by_key(findings)["test_shift"].severity == "warning"  # a second, real cause


@pytest.mark.parametrize("test_acc, cause", [(0.91, "healthy"), (0.89, "overfitting")])
def test_overfitting_threshold(test_acc, cause):
    findings = diagnose(_data("final", 0.8, inference=test_acc, recalibrated=test_acc, batchstats=test_acc, train=1.0, fit=1.0, layers=[_trace(**SETTLED)]))
    assert findings[0].cause == cause and ("BN is not the cause" in findings[0].title) == (cause == "overfitting")
    _assert_consistent(findings)


def test_non_iid_batches_that_left_the_model_weak_are_named_without_an_accuracy_gap():
    weak = _data(
        "final",
        0.8,
        inference=0.5,
        recalibrated=0.52,
        batchstats=0.5,
        train=0.52,
        fit=0.35,
        shuffle=False,
        layers=[_trace(batch_offset=3.0 * 0.6745, **SETTLED)],
    )
    assert diagnose(weak)[0].cause == "non_iid_batches"
    strong = _data(
        "final",
        0.8,
        inference=0.95,
        recalibrated=0.95,
        batchstats=0.95,
        train=0.97,
        fit=0.96,
        shuffle=False,
        layers=[_trace(batch_offset=3.0 * 0.6745, **SETTLED)],
    )
    findings = diagnose(strong)
    assert findings[0].cause == "healthy" and _by_key(findings)["non_iid_batches"].severity == "info"


def test_healthy_run_stays_quiet():
    findings = diagnose(_data("final", 0.8, inference=0.97, recalibrated=0.97, batchstats=0.97, train=0.99, fit=0.99, layers=[_trace(**SETTLED)]))
    assert findings[0].cause == "healthy" and findings[0].severity == "ok"
    assert all(f.severity in ("info", "ok") for f in findings[1:]), [(f.key, f.severity) for f in findings]


def test_without_bn_only_data_causes_are_possible():
    findings = diagnose(_data("more-layers", inference=0.6, train=0.99, fit=0.99))
    assert findings[0].cause == "overfitting" and not any(f.key.startswith("layer_") for f in findings)
    healthy = diagnose(_data("more-layers", inference=0.97, train=0.99, fit=0.99))[0]
    assert healthy.cause == "healthy" and "no BatchNormalization layer" in healthy.detail and "Recalibrating" not in healthy.detail


def test_an_inspected_model_has_no_step_to_speak_of():
    findings = diagnose(_data(layers=[_trace(steps=(0,) * 5)], steps=0, info={"source": "inspect"}))
    assert _by_key(findings)["layer_norm1"].detail.startswith("norm1 goes wrong first: its own moving statistics are off. In the saved model:")
    stale = _by_key(findings).get("stale_initial_values")  # mᵗ needs a step count the saved model does not carry: the fingerprint speaks
    assert stale is None or ("steps" not in stale.numbers and "fingerprint_weight" in stale.numbers)


def test_moving_statistics_that_never_moved():
    trace = _trace(moving=(0.0,) * 5, moving_var=(1.0,) * 5)
    findings = diagnose(_data(momentum=1.0, layers=[trace]))
    assert findings[0].cause == "never_moved" and "never change" in _by_key(findings)["never_moved"].detail
    findings = diagnose(_data(momentum=0.9, layers=[trace]))
    assert findings[0].cause == "never_moved" and "training=True" in _by_key(findings)["never_moved"].detail


def test_dropout_before_bn_is_the_cause_only_when_statistics_cost_accuracy():
    info = {"layers": [{"name": n, "type": t} for n, t in (("c", "Conv2D"), ("d", "Dropout"), ("norm1", "BatchNormalization"), ("o", "Dense"))]}
    assert diagnose(_data(steps=600, info=info))[0].cause == "dropout_before_bn"
    healthy = diagnose(_data(steps=600, info=info, recalibrated=0.3, fit=0.3, train=0.3))
    assert healthy[0].cause == "healthy" and _by_key(healthy)["dropout_before_bn"].severity == "info"
    info["layers"][1], info["layers"][2] = info["layers"][2], info["layers"][1]
    assert "dropout_before_bn" not in _by_key(diagnose(_data(steps=600, info=info)))


@pytest.mark.parametrize("dropped_var, cause", [(150.0 / 2.0, "dropout_before_bn"), (150.0 / 1.2, "lag")])
def test_the_variance_shift_of_dropout_before_bn_is_measured(dropped_var, cause):
    """The moving variance (150, learnt with Dropout on) against the variance inference feeds the layer
    (Dropout off): a 2× variance is a 1.41× scale error and the cause; 1.2× (1.095×) is within 12 %."""
    info = {"source": "callback", "bn_layers": [{"name": "norm1", "momentum": 0.99, "epsilon": 1e-3, "trainable": True, "after_noise": True}]}
    moving = dict(moving=(0.0, 10, 30, 45, 50), moving_var=(1.0, 20, 100, 140, 150), pop_mean=50.0, pop_var=150.0)
    findings = diagnose(_data(steps=600, info=info, layers=[_trace(infer=(50.0, dropped_var), **moving)]))
    shift = _by_key(findings)["dropout_before_bn"]
    assert shift.numbers["variance_shift_scale"] == pytest.approx(math.sqrt((150 + 1e-3) / (dropped_var + 1e-3)), rel=1e-4)
    assert findings[0].cause == cause


def test_a_running_run_gets_a_pending_verdict_not_a_guess():
    findings = diagnose(_data(status="running", final=False, steps=40))
    assert findings[0].cause == "pending" and "step 40/40" in findings[0].title and len(findings) == 1 + 1  # + the layer finding
    cancelled = diagnose(_data(status="cancelled", final=False))
    assert cancelled[0].cause == "pending" and "cancelled" in cancelled[0].detail


def test_runs_recorded_before_inference_arrays_existed_still_diagnose():
    trace = dataclasses.replace(
        _trace(), infer_mean=np.zeros((5, 0), np.float32), infer_var=np.zeros((5, 0), np.float32), iid_mean_sd=np.zeros((5, 0), np.float32)
    )
    findings = diagnose(_data(layers=[trace]))
    assert findings[0].cause == "stale_initial_values" and "before bnviz measured" in _by_key(findings)["layer_norm1"].detail


def test_lag_suggests_a_momentum_whose_window_fits_the_drift():
    steps = (0, 500, 1000, 1500, 2000)
    trace = _trace(steps=steps, **SETTLED)
    drift = np.array([0, 0, 0, 0, 0.01 * 500 * 20], np.float32)[:, None]  # 0.01 SD per step between the last records
    trace = dataclasses.replace(trace, pop_mean=trace.pop_mean + drift, batch_mean=trace.batch_mean + drift)
    findings = diagnose(_data(momentum=0.99, steps=2000, layers=[trace]))
    lag = _by_key(findings)["lag"]
    assert findings[0].cause == "lag" and lag.numbers["drift_sd_per_step"] == pytest.approx(0.01, rel=1e-3)
    assert lag.numbers["lag_sd"] == pytest.approx(0.01 * 99, rel=1e-3) and lag.numbers["suggested_momentum"] == 0.909


def test_non_finite_statistics_of_a_diverged_run_are_said_not_crashed_on():
    trace = _trace(moving_var=(1.0, 20, 50, 100, np.inf), infer=(np.nan, np.inf))
    finding = _by_key(diagnose(_data(layers=[trace])))["layer_norm1"]
    assert "cannot be compared" in finding.detail and finding.severity == "info"


def test_text_rendering_and_momentum_conventions():
    assert momentum_text(0.8) == "momentum 0.8 (PyTorch: momentum=0.2)"
    text = as_text(diagnose(_data()))
    assert text.startswith("[CRITICAL] Verdict") and "→" in text


def test_thresholds_are_the_documented_ones():
    """The numbers the docs/diagnoses.md table and the boundary tests above rely on."""
    assert (
        dx.GAP_WARNING,
        dx.GAP_CRITICAL,
        dx.STALE_WEIGHT,
        dx.NON_IID_RATIO,
        dx.UNSHUFFLED_RATIO,
        dx.NOISE_SD,
        dx.SHIFT_MIN,
        dx.OVERFIT_GAP,
        dx.UNDERFIT,
    ) == (0.05, 0.15, 0.05, 3.0, 1.5, 0.2, 0.3, 0.1, 0.9)


# --- the evidence helpers, each against a hand-computed reference (mutation survivors) -------------
def test_stuck_layers_are_those_unchanged_since_step_zero_only():
    stuck, moving = _trace("norm1", moving=(0.0,) * 5, moving_var=(1.0,) * 5), _trace("norm2", **SETTLED)
    mean_only = _trace("norm3", moving=(0.0,) * 5, moving_var=(1.0, 2.0, 3.0, 4.0, 5.0))  # the variance moved
    assert dx.stuck_layers(_data(layers=[stuck, moving, mean_only])) == ("norm1",)
    assert dx.stuck_layers(_data(layers=[stuck], steps=0)) == ()  # nothing trained yet: nothing can have moved
    assert dx.stuck_layers(_data(layers=[_trace("norm1", steps=(5, 30, 60, 90, 120), moving=(0.0,) * 5, moving_var=(1.0,) * 5)])) == ()


def test_moving_noise_is_the_worst_layers_ema_noise():
    m = 0.5
    quiet, loud = _trace("norm1", iid_sd=0.1 * 20), _trace("norm2", iid_sd=0.4 * 20)  # population SD 20
    expected = 0.4 * math.sqrt((1 - m) / (1 + m))
    assert dx.moving_noise(_data(layers=[quiet, loud]), m) == pytest.approx(expected, rel=1e-5)
    assert dx.moving_noise(_data(layers=[loud, quiet]), m) == pytest.approx(expected, rel=1e-5)
    assert math.isnan(dx.moving_noise(_data(layers=[_trace(iid_sd=np.nan)]), m))


def test_input_shift_prefers_the_first_bn_input_then_pixels():
    both = {"input_shift": {"first_bn_input": {"test": 0.7}, "pixels": {"test": 0.2, "val": 0.1}}}
    data = _data(info=both)
    assert dx._shift(data, "test") == 0.7 and dx._shift(data, "val") == 0.1
    assert math.isnan(dx._shift(_data(), "test"))


def test_has_bn_and_momentum_come_from_records_info_or_config():
    assert dx._has_bn(_data()) and not dx._has_bn(_data("more-layers"))
    own = _data("more-layers", info={"bn_layers": [{"name": "bn_a", "momentum": 0.9, "epsilon": 1e-5}]})
    assert dx._has_bn(own) and dx._momentum(own) == 0.9 and own.epsilon("bn_a") == 1e-5
    assert dx._momentum(_data(momentum=0.97)) == 0.97


def test_late_records_are_the_second_half_without_step_zero():
    trace = _trace(steps=(0, 30, 60, 90, 120))
    assert dx._late(trace).tolist() == [False, False, True, True, True]
    assert dx._late(_trace(steps=(0, 0, 0, 0, 0))).tolist() == [False] * 5


# --- what a run of the user's own model may lack ----------------------------------------------------
def _own(evaluations: dict, layers=None, info=None, steps=120, fit=0.99, batch_size=32) -> RunData:
    """A bnviz.Probe run with only the given evaluations ({name: accuracy dict}) and no step metrics but fit's."""
    data = _data(layers=layers if layers is not None else [_trace()], info={"source": "callback", **(info or {})}, steps=steps, fit=fit, batch_size=batch_size)
    evaluations = {name: Evaluation.from_dict(value if "accuracy" in value else {"accuracy": value}) for name, value in evaluations.items()}
    return dataclasses.replace(data, evaluations=evaluations)


def _without_batch_statistics(trace: LayerTrace) -> LayerTrace:
    return dataclasses.replace(trace, batch_mean=np.full_like(trace.batch_mean, np.nan), batch_var=np.full_like(trace.batch_var, np.nan))


def test_without_training_images_or_batch_statistics_the_verdict_says_what_is_missing():
    """No train split, no PreciseBN, no recovered batch statistics: fit 0.99 against validation 0.56 is
    a problem nothing here can place. Never 'Healthy'."""
    data = _own({"final": {"val": 0.56, "test": 0.55, "fit": 0.99}}, layers=[_without_batch_statistics(_trace())])
    findings = diagnose(data)
    top = findings[0]
    assert (top.cause, top.severity) == ("insufficient_evidence", "unknown") and "train_data=" in top.remedies[0]
    assert "0.55 in inference mode against accuracy 0.99" in top.detail and "nan" not in top.detail.lower() and "[NOT ENOUGH EVIDENCE]" in as_text(findings)
    assert "PreciseBN" in _by_key(findings)["missing_evidence"].detail  # raised first letter, the rest as written
    assert diagnose(_own({"final": {"train": 0.99, "fit": 0.99}}))[0].cause == "insufficient_evidence"  # nothing held out


def test_without_training_images_the_training_batches_the_probe_saw_decide():
    stale = diagnose(_own({"final": {"val": 0.56, "test": 0.55, "fit": 0.99}}, steps=120))  # moving 35/150 against batches at 50/400
    assert stale[0].cause == "stale_initial_values" and "training batches the probe saw" in stale[0].detail
    fitting = _trace(moving=(0.0, 45, 50, 50, 50), moving_var=(1.0, 380, 400, 400, 400))
    healthy = diagnose(_own({"final": {"val": 0.97, "test": 0.96, "fit": 0.99}}, layers=[fitting]))
    assert healthy[0].cause == "healthy" and "fit on the training batches" in healthy[0].detail


def test_targets_that_are_not_classes_are_judged_on_the_loss():
    """Losses 0.5 in inference, 0.1 recalibrated: a 5× loss is critical (2× is the line); 1.2× is within 1.25×."""

    def run(inference_loss):
        losses = {"train": 0.1, "val": inference_loss, "test": inference_loss, "fit": 0.1}
        nan = {k: math.nan for k in losses}
        return _own(
            {"final": {"accuracy": nan, "loss": losses}, "recalibrated": {"accuracy": nan, "loss": {"train": 0.1, "val": 0.1, "test": 0.1}}},
            info={"task": "values", "loss_name": "mae"},
            steps=1000,
        )

    findings = diagnose(run(0.5))
    assert findings[0].cause in BN_CAUSES and findings[0].severity == "critical"
    assert findings[0].numbers["accuracy_drop"] == pytest.approx(math.log(5)) and "Test mae is 0.5" in findings[0].detail
    assert "accuracy" not in _by_key(findings)["accuracy"].detail.lower()
    assert diagnose(run(0.12))[0].cause == "healthy"


def test_frozen_layers_are_frozen_not_stuck():
    info = {"bn_layers": [{"name": "norm1", "momentum": 0.99, "epsilon": EPS, "trainable": False}]}
    frozen = _trace(moving=(0.0,) * 5, moving_var=(1.0,) * 5)
    findings = diagnose(_own({"final": {"train": 0.9, "val": 0.9, "test": 0.9, "fit": 0.9, "train_batchstats": 0.9}}, layers=[frozen], info=info))
    assert findings[0].cause != "never_moved" and "never_moved" not in _by_key(findings)
    assert _by_key(findings)["frozen_layers"].numbers == {"frozen": 1, "frozen_off": 1}  # 0/1 against a population at 50/400


def test_two_values_per_channel_make_the_moving_variance_half_the_population():
    info = {"bn_layers": [{"name": "norm1", "momentum": 0.9, "epsilon": EPS, "values_per_image": 1}]}
    ev = dx.gather(_own({"final": {"train": 0.9, "val": 0.8, "test": 0.8, "fit": 0.9}}, info=info, batch_size=2))
    assert ev.variance_bias == pytest.approx(math.sqrt(2))
    conv = {"bn_layers": [{"name": "norm1", "momentum": 0.9, "epsilon": EPS, "values_per_image": 64}]}
    assert dx.gather(_own({"final": {"val": 0.8, "test": 0.8}}, info=conv, batch_size=2)).variance_bias == pytest.approx(math.sqrt(128 / 127))


def _stale_trace(w: float, name="norm1") -> LayerTrace:
    """A layer whose moving statistics are exactly w·(0, 1) + (1 − w)·(population 50, 400)."""
    return _trace(name, steps=(0,), moving=(50 * (1 - w),), moving_var=(1 * w + 400 * (1 - w),))


def test_a_saved_model_is_called_stale_only_with_the_fingerprint_of_initial_values():
    inspect = {"source": "inspect"}
    evaluations = {"final": {"train": 0.5, "val": 0.5, "test": 0.5, "train_batchstats": 0.95}, "recalibrated": {"train": 0.95, "val": 0.95, "test": 0.95}}
    stale = diagnose(dataclasses.replace(_own(evaluations, layers=[_stale_trace(0.99**60)], steps=0), run=_run(preset_config("bn"), inspect)))
    assert stale[0].cause == "stale_initial_values" and _by_key(stale)["stale_initial_values"].numbers["implied_steps"] == pytest.approx(60, rel=1e-3)
    lagging = _trace(steps=(0,), moving=(38.0,), moving_var=(900.0,))  # a mean below and a variance above the population: no single w
    off = diagnose(dataclasses.replace(_own(evaluations, layers=[lagging], steps=0), run=_run(preset_config("bn"), inspect)))
    assert off[0].cause == "statistics_off" and "not the fingerprint" in _by_key(off)["stale_initial_values"].detail
    told = diagnose(dataclasses.replace(_own(evaluations, layers=[lagging], steps=0), run=_run(preset_config("bn"), inspect | {"known_steps": 30})))
    assert told[0].cause == "stale_initial_values" and _by_key(told)["stale_initial_values"].numbers["steps"] == 30  # the user's count: mᵗ = 0.74


def test_a_test_drop_within_chance_on_small_splits_is_not_a_shift():
    scores = {"train": 0.97, "val": 0.94, "test": 0.80, "fit": 0.97, "train_batchstats": 0.97}
    small = dx.gather(_own({"final": scores}, info={"data": {"val": 16, "test": 16}}))
    large = dx.gather(_own({"final": scores}, info={"data": {"val": 400, "test": 400}}))
    assert not small.test_shifted and large.test_shifted  # 0.14 is 1.3 SE at 16 + 16 images, 5.8 SE at 400 + 400


def test_a_probe_joining_a_later_fit_weighs_the_values_that_fit_began_with():
    trained = _trace(moving=(20.0, 25, 30, 33, 35))
    text = _by_key(diagnose(_data(layers=[trained])))["stale_initial_values"].detail
    assert "when this fit began" in text and "(mean 0, variance 1)" not in text


# --- boundaries of the new figures (these tests drive the mutation run) ------------------------------
@pytest.mark.parametrize(
    "n_val, n_test, val, test, beyond",
    [
        (100, 100, 0.9, 0.80, False),  # p = 0.85: 2 SE = 0.101 > 0.10
        (100, 100, 0.9, 0.79, True),  # p = 0.845: 2 SE = 0.1024 < 0.11
        (50, 200, 0.9, 0.78, False),  # p = 0.804: 2 SE = 0.1256 > 0.12 (the smaller split weighs more)
        (200, 50, 0.9, 0.78, True),  # p = 0.876: 2 SE = 0.1042 < 0.12
        (None, 100, 0.9, 0.1, True),
        (100, None, 0.9, 0.1, True),  # a split of unknown size: no chance test
    ],
)
def test_a_test_drop_is_beyond_chance_by_two_standard_errors(n_val, n_test, val, test, beyond):
    ev = dx.gather(_own({"final": {"val": val, "test": test}}, info={"data": {"val": n_val, "test": n_test}}))
    assert ev._beyond_chance(val, test) is beyond


def _inspected_stale(*weights: float) -> tuple[Finding, Finding]:
    """The verdict and the initial-values finding of a saved model whose layers carry the initial values with these weights."""
    evaluations = {"final": {"train": 0.5, "val": 0.5, "test": 0.5}, "recalibrated": {"train": 0.95, "val": 0.95, "test": 0.95}}
    layers = [_stale_trace(w, f"norm{i}") for i, w in enumerate(weights, start=1)]
    findings = diagnose(dataclasses.replace(_own(evaluations, layers=layers, steps=0), run=_run(preset_config("bn"), {"source": "inspect"})))
    return findings[0], _by_key(findings)["stale_initial_values"]


def test_a_saved_models_fingerprint_needs_one_weight_for_every_layer():
    def stale(*weights):
        top, finding = _inspected_stale(*weights)
        return top.cause, finding

    cause, agree = stale(0.5, 0.64)  # spread 0.14 ≤ 0.3 × median 0.57
    assert cause == "stale_initial_values" and agree.numbers["fingerprint_weight"] == pytest.approx(0.57, abs=1e-4)
    assert agree.numbers["fingerprint_spread"] == pytest.approx(0.14, abs=1e-4) and agree.numbers["fingerprint_r2"] == pytest.approx(1.0)
    assert agree.numbers["implied_steps"] == pytest.approx(math.log(0.57) / math.log(0.99), rel=1e-3)
    assert stale(0.5, 0.75)[0] == "statistics_off"  # spread 0.25 > 0.3 × 0.625
    assert stale(0.06, 0.06)[0] == "stale_initial_values" and stale(0.04, 0.04)[0] == "statistics_off"  # below 5 % they weigh too little
    assert stale(0.06, 0.15)[0] == "stale_initial_values"  # spread 0.09 ≤ 0.1, the floor for small weights (0.3 × 0.105 = 0.03)


def test_the_training_batches_decide_only_when_something_is_wrong():
    scores = {"val": 0.97, "test": 0.96, "fit": 0.99}
    ev = dx.gather(_own({"final": scores}))  # moving 35/150 against batches at 50/400: critical
    assert ev.batch_fit == "critical" and dx._bn_fault(ev, problem=True) is True and dx._bn_fault(ev, problem=False) is False
    fitting = dx.gather(_own({"final": scores}, layers=[_trace(moving=(0.0, 45, 50, 50, 50), moving_var=(1.0, 380, 400, 400, 400))]))
    assert fitting.batch_fit == "ok" and dx._bn_fault(fitting, problem=True) is False
    unmeasured = dx.gather(_own({"final": scores}, layers=[_without_batch_statistics(_trace())]))
    assert unmeasured.batch_fit == "" and dx._bn_fault(unmeasured, problem=True) is None
    measured = dx.gather(_own({"final": scores, "recalibrated": {"val": 0.97, "test": 1.0}}))
    assert dx._bn_fault(measured, problem=False) is False and dx._bn_fault(dataclasses.replace(measured, recalibrated=1.01), problem=False)


def test_the_worst_layer_against_the_training_batches_names_the_severity():
    """Late records only (step ≥ 60 of 120): the moving mean 6/20 = 0.3 batch SDs off is a warning, 5/20 = 0.25 is not over the line."""
    ok = _trace("norm1", moving=(0.0, 0, 45, 45, 45), moving_var=(1.0, 1, 400, 400, 400))
    warning = _trace("norm2", moving=(0.0, 0, 44, 44, 44), moving_var=(1.0, 1, 400, 400, 400))
    assert dx.training_batch_fit(_own({"final": {"val": 0.97}}, layers=[ok])) == "ok"
    assert dx.training_batch_fit(_own({"final": {"val": 0.97}}, layers=[ok, warning])) == "warning"
    assert dx.training_batch_fit(_own({"final": {"val": 0.97}}, layers=[_trace("norm3"), warning])) == "critical"


def test_scores_for_targets_that_are_not_classes_are_minus_log_losses():
    metric = dx.metric_of(_own({"final": {"val": 0.9}}, info={"task": "values", "loss_name": "huber"}))
    assert (metric.name, metric.is_loss) == ("huber", True) and metric.warning == pytest.approx(math.log(1.25))
    assert (metric.critical, metric.overfit) == (pytest.approx(math.log(2)), pytest.approx(math.log(1.5))) and math.isnan(metric.underfit)
    evaluation = Evaluation.from_dict({"accuracy": {"test": math.nan}, "loss": {"test": 0.25, "test_batchstats": 0.0}})
    assert metric.of(evaluation) == {"test": pytest.approx(math.log(4)), "test_batchstats": pytest.approx(-math.log(1e-12))}
    assert (metric.show(math.log(4)), metric.show(math.nan), dx.ACCURACY.show(0.834)) == ("0.25", "not measured", "0.83")
    assert dx.metric_of(_own({"final": {"val": 0.9}}, info={"task": "values"})).name == "loss" and dx.metric_of(_own({"final": {}})) is dx.ACCURACY
    steps = pd.DataFrame({"step": [1, 2], "epoch": 1, "loss": [0.5, 0.2], "accuracy": [None, None]})
    assert dx._fit_score(dataclasses.replace(_own({"final": {}}), steps=steps), metric) == pytest.approx(-math.log(0.2))
    assert math.isnan(dx._fit_score(dataclasses.replace(_own({"final": {}}), steps=steps), dx.ACCURACY))


def test_overfitting_is_measured_against_validation_where_there_is_one():
    ev = dx.gather(_own({"final": {"train": 0.99, "val": 0.85, "test": 0.5}}))
    assert ev.overfit_gap == pytest.approx(0.14)
    assert dx.gather(_own({"final": {"train": 0.99, "test": 0.8}})).overfit_gap == pytest.approx(0.19)
    assert dx.gather(_own({"final": {"val": 0.8, "fit": 0.97}})).overfit_gap == pytest.approx(0.17)  # no evaluate on training images: fit's


def test_the_test_sets_own_batch_statistics_show_a_shift_only_when_they_help_the_test_split_alone():
    base = {"train": 0.97, "val": 0.85, "test": 0.6, "fit": 0.97, "val_batchstats": 0.86, "train_batchstats": 0.97}
    assert dx.gather(_own({"final": base | {"test_batchstats": 0.81}})).test_shifted  # ≥ validation − 0.05
    assert not dx.gather(_own({"final": base | {"test_batchstats": 0.79}})).test_shifted
    assert not dx.gather(_own({"final": base | {"test_batchstats": 0.81, "val_batchstats": 0.91}})).test_shifted  # they help validation too


def test_missing_evidence_names_each_gap():
    gaps = _by_key(diagnose(_own({"final": {"fit": 0.99}}, layers=[_without_batch_statistics(_trace())])))["missing_evidence"]
    assert gaps.numbers == {"missing": 2} and gaps.detail.startswith("No held-out data") and "not measured" in gaps.detail
    one = _by_key(diagnose(_own({"final": {"val": 0.9, "test": 0.9, "fit": 0.9}})))["missing_evidence"]
    assert one.numbers == {"missing": 1} and "estimated from the training batches" in one.detail
    nothing = _by_key(diagnose(_own({"final": {"val": 0.9, "test": 0.9}}, layers=[_without_batch_statistics(_trace())], fit=math.nan)))["missing_evidence"]
    assert nothing.numbers == {"missing": 2} and "overfitting cannot be told" in nothing.detail


def test_a_pending_verdict_is_a_plain_info_finding_with_nothing_to_do():
    for status, total, title in (
        ("queued", 0, "Verdict pending — step 0"),
        ("running", 40, "Verdict pending — step 40/40"),
        ("failed", 40, "No verdict: the run has no final evaluation"),
    ):
        run = _run(preset_config("bn"), None, status, total)
        data = dataclasses.replace(_data(status=status, final=False, steps=40 if status == "running" else 0), run=run)
        top = diagnose(data)[0]
        assert (top.key, top.severity, top.title, top.remedies, top.numbers, top.cause) == ("verdict", "info", title, (), {}, "pending")
        assert top.detail.startswith("The verdict needs the final evaluation" if status != "failed" else "The run ended failed before its evaluation")


def test_the_compounding_sentence_starts_at_the_first_layer_that_is_off():
    fine = _trace("norm1", **SETTLED)
    off = _trace("norm2", infer=(50.0, 100.0))  # moving 150 against 100 at inference: 1.22×
    text = dx.compounding(_data(layers=[fine, off], info={"layers": [{"name": "norm1"}, {"name": "norm2"}]}))
    assert text.startswith(" The error starts at norm2 and carries") and text.endswith("norm1 1×, norm2 1.22×.")
    assert dx.compounding(_data(layers=[fine])) == ""
    warned = _trace("norm3", moving=(0.0, 45, 49, 44, 44), moving_var=(1.0, 350, 390, 400, 400))  # 6/20 = 0.3 SD: a warning, not critical
    assert dx.compounding(_data(layers=[fine, warned], info={"layers": [{"name": "norm1"}, {"name": "norm3"}]})).startswith(" The error starts at norm3")


def test_a_run_started_fresh_only_when_every_layer_began_at_zero_and_one():
    fresh, trained = _trace("norm1"), _trace("norm2", moving=(2.0, 10, 20, 30, 35))
    assert dx.started_fresh(_data(layers=[fresh])) and not dx.started_fresh(_data(layers=[fresh, trained]))
    assert not dx.started_fresh(_data(layers=[_trace("norm3", moving_var=(4.0, 20, 50, 100, 150))]))  # the variance too
    assert dx.started_fresh(_data(layers=[_trace("norm4", steps=(10, 30, 60, 90, 120), moving=(2.0, 10, 20, 30, 35))]))  # no step-0 record
    assert dx.started_fresh(_data(layers=[]))


ROW = {"momentum": 0.99, "epsilon": EPS}


def test_frozen_layers_off_are_only_the_frozen_ones():
    info = {"bn_layers": [{"name": "norm1", "trainable": False, **ROW}, {"name": "norm2", "trainable": True, **ROW}]}
    fitting_frozen = _trace("norm1", moving=(50.0,) * 5, moving_var=(400.0,) * 5)
    findings = diagnose(_own({"final": {"train": 0.9, "val": 0.9, "test": 0.9, "fit": 0.9}}, layers=[fitting_frozen, _trace("norm2")], info=info))
    frozen = _by_key(findings)["frozen_layers"]
    assert (frozen.numbers, frozen.severity, frozen.title, frozen.remedies) == ({"frozen": 1, "frozen_off": 0}, "ok", "Frozen BN layers", ())
    assert frozen.detail.endswith("Their statistics fit this data's population.")
    six = [_trace(f"norm{i}", moving=(0.0,) * 5, moving_var=(1.0,) * 5) for i in range(1, 7)]  # 0/1 against 50/400: critical, moderate 0.1 SD warning
    rows = {"bn_layers": [{"name": f"norm{i}", "trainable": False, **ROW} for i in range(1, 7)]}
    many = _by_key(diagnose(_own({"final": {"train": 0.9, "val": 0.9, "test": 0.9, "fit": 0.9}}, layers=six, info=rows)))["frozen_layers"]
    assert many.numbers == {"frozen": 6, "frozen_off": 6} and "(norm1, norm2, norm3, norm4, norm5…)" in many.detail and many.remedies
    warned = _trace("norm1", moving=(44.0,) * 5, moving_var=(400.0,) * 5)  # 6/20 = 0.3 SD: a warning
    one = _by_key(
        diagnose(
            _own(
                {"final": {"train": 0.9, "val": 0.9, "test": 0.9, "fit": 0.9}},
                layers=[warned],
                info={"bn_layers": [{"name": "norm1", "trainable": False, **ROW}]},
            )
        )
    )["frozen_layers"]
    assert one.numbers["frozen_off"] == 1


def test_the_statistics_cost_accuracy_from_exactly_the_warning_gap():
    ev = dx.gather(_own({"final": {"val": 0.0625, "test": 0.0625}, "recalibrated": {"val": 0.1125, "test": 0.1125}}))
    assert ev.lost_to_statistics == 0.05 and dx._bn_fault(ev, problem=False) is True  # 0.1125 − 0.0625 is exactly 0.05 in binary
    layer = _trace(moving=(0.0, 0, 44, 44, 44), moving_var=(1.0, 1, 400, 400, 400))
    warned = dx.gather(_own({"final": {"val": 0.8, "test": 0.8, "fit": 0.99}}, layers=[layer]))
    assert warned.batch_fit == "warning" and dx._bn_fault(warned, problem=True) is True


def test_the_fingerprint_counts_weights_up_to_one_and_its_finding_says_so():
    stale = _inspected_stale
    top, finding = stale(0.6, 0.6)
    assert top.cause == "stale_initial_values" and finding.title == "Whether the statistics carry their initial values"
    assert "implies about 51 steps at momentum 0.99" in finding.detail and finding.detail.endswith("still carry their initial values.")
    assert finding.remedies == ("Recalibrate the BN statistics (PreciseBN) now: no retraining.", "Lower the momentum to 0.913 or train longer.")
    assert set(finding.numbers) == {"momentum", "fingerprint_weight", "fingerprint_r2", "fingerprint_spread", "implied_steps"}
    top, beyond = stale(1.3, 1.3)  # more than all initial values: no mix of them
    assert top.cause == "statistics_off" and "no step count (w is outside (0, 1))" in beyond.detail and beyond.remedies == ()
    assert stale(1.0, 1.0)[0].cause == "stale_initial_values"  # all initial values (never updated): w = 1 is still the line
    assert stale(0.05, 0.05)[0].cause == "stale_initial_values"  # 5 % exactly
    assert stale(0.5, 0.6)[0].cause == "stale_initial_values"  # spread 0.1 exactly, the floor (0.3 × 0.55 = 0.165 above it)


def test_findings_as_text_are_one_line_a_heading():
    text = as_text(diagnose(_data()))
    assert text.count("\n[") == len(diagnose(_data())) - 1 and not text.startswith("XX")


def test_each_findings_numbers_are_the_evidence_it_was_built_from():
    """The keys pages and the JSON read, with the values the evidence holds (a stale bnviz run at 120 steps)."""
    data = _data()
    ev, found = dx.gather(data), _by_key(diagnose(data))
    accuracy = found["accuracy"]
    assert (accuracy.title, accuracy.remedies) == ("Accuracy in both BN modes", ())
    assert accuracy.numbers == {
        "inference": ev.inference,
        "recalibrated": ev.recalibrated,
        "batchstats": ev.batchstats,
        "train": ev.train,
        "fit": ev.fit,
        "lost_to_statistics": pytest.approx(0.65),
    }
    assert accuracy.detail.endswith("Training images: 0.30 with evaluate, 0.99 as fit reported it (batch statistics).")
    stale = found["stale_initial_values"]
    assert stale.numbers == {
        "momentum": 0.99,
        "steps": 120,
        "init_weight": pytest.approx(0.99**120),
        "window": pytest.approx(100),
        "half_life": pytest.approx(dx.half_life(0.99)),
        "steps_to_1pct": dx.steps_to_forget(0.99),
        "suggested_momentum": dx.suggest_momentum(120),
    }
    noise = found["batch_noise"]
    assert set(noise.numbers) == {"noise_sd", "batch_size", "variance_bias"} and noise.numbers["batch_size"] == 32
    assert noise.title == "Noise and bias of small batches" and noise.numbers["noise_sd"] == pytest.approx(ev.noise)
    without = _by_key(diagnose(_own({"final": {"val": 0.3, "test": 0.3}}, fit=math.nan)))["accuracy"]
    assert without.detail.endswith("No training images were evaluated.") and "fit reported" not in without.detail


def test_stale_initial_values_need_bn_and_a_step():
    assert "stale_initial_values" not in _by_key(diagnose(_data(steps=0, layers=[_trace(steps=(0,) * 5)])))
    one = _by_key(diagnose(_data(steps=1, layers=[_trace(steps=(0, 1, 1, 1, 1))])))["stale_initial_values"]
    assert one.numbers["steps"] == 1 and one.numbers["init_weight"] == pytest.approx(0.99)


def test_decisions_at_exactly_their_thresholds():
    """0.1625 − 0.0625 is exactly 0.1 and 0.1125 − 0.0625 exactly 0.05 in binary; 0.9 is the underfit line."""
    exact = _data(preset="final", momentum=0.8, steps=600, train=0.1625, val=0.0625, inference=0.0625, recalibrated=0.0625, batchstats=0.0625, fit=0.1625)
    assert diagnose(exact)[0].cause == "overfitting"
    layers = [_without_batch_statistics(_trace())]
    weak = dx.gather(_own({"final": {"val": 0.9, "test": 0.9, "fit": 0.9}}, layers=layers))
    assert dx.decide(_own({"final": {}}, layers=layers), weak, {}) == "healthy"  # 0.9 is not below 0.9, and nothing is wrong
    weaker = dataclasses.replace(weak, fit=0.89, val=0.89, test=0.89, inference=0.89)
    assert dx.decide(_own({"final": {}}, layers=layers), weaker, {}) == "insufficient_evidence"
    gap = dataclasses.replace(weak, fit=0.1125, val=0.0625, test=0.0625, inference=0.0625)
    assert gap.trained_score - gap.inference == 0.05 and dx.decide(_own({"final": {}}, layers=layers), gap, {}) == "insufficient_evidence"


def test_a_model_without_bn_can_still_have_a_shifted_test_set_and_needs_no_precisebn():
    info = {"input_shift": {"first_bn_input": {}, "pixels": {"test": 0.8, "val": 0.05}}, "data": {"val": 400, "test": 400}}
    config = preset_config("final")
    config = config.replace(arch=dataclasses.replace(config.arch, norm="none"))
    data = _data(preset="final", train=0.97, val=0.95, inference=0.6, fit=0.97, info=info)
    no_bn = dataclasses.replace(data, run=_run(config, info), layers={}, evaluations={"final": data.evaluations["final"]})
    findings = diagnose(no_bn)
    assert findings[0].cause == "test_shift" and "missing_evidence" not in _by_key(findings)
    unfit = dataclasses.replace(no_bn, steps=no_bn.steps.iloc[0:0], evaluations={"final": Evaluation.from_dict({"accuracy": {"val": 0.9, "test": 0.9}})})
    gaps = _by_key(diagnose(unfit))  # only the training images are missing: no BN, so no PreciseBN to miss
    assert gaps["missing_evidence"].title == "What this run could not measure" and gaps["missing_evidence"].numbers == {"missing": 1}


# --- each finding's numbers and decisions, at its thresholds -----------------------------------------
def _evidence(data: RunData | None = None, **figures) -> dx.Evidence:
    """The evidence of `data` (default: a run at m = 0.99) with some figures set by hand."""
    return dataclasses.replace(dx.gather(data or _data()), **figures)


def test_model_notes_are_the_run_notes_and_count_frozen_layers():
    layers = [
        {"name": n, "momentum": 0.99, "epsilon": EPS, **trainable}
        for n, trainable in (("a", {"trainable": False}), ("b", {"trainable": True}), ("c", {}), ("d", {"trainable": False}))
    ]
    data = _data(info={"notes": ["First note.", "Second."], "bn_layers": layers})
    found = dx.model_notes(data, _evidence(data))
    assert (found.key, found.severity, found.detail, found.remedies) == ("model_notes", "info", "First note. Second.", ())
    assert found.numbers == {"frozen_bn_layers": 2}
    assert dx.model_notes(_data(info={"bn_layers": layers}), _evidence()) is None


ONE_SD = math.sqrt(1 + EPS)


@pytest.mark.parametrize(
    "mean, var, far", [(0.49 * ONE_SD, 1.0, False), (-0.51 * ONE_SD, 1.0, True), (0.0, 1.9, False), (0.0, 2.1, True), (0.0, 0.52, False), (0.0, 0.48, True)]
)
def test_data_regime_measures_the_first_layer_against_0_and_1(mean, var, far):
    first, second = _trace("norm1", pop_mean=mean, pop_var=var), _trace("norm2", pop_mean=100.0, pop_var=1e-6)
    data = _data(layers=[second, first], info={"layers": [{"name": "norm1"}, {"name": "norm2"}]})
    found = dx.data_regime(data, _evidence(data))
    offset, scale = abs(mean) / math.sqrt(var + EPS), math.sqrt((1 + EPS) / (var + EPS))
    assert found.numbers == pytest.approx({"mean_offset_sd": offset, "variance": var, "initial_scale_error": scale, "far": float(far)}, rel=1e-5)
    assert (found.key, found.severity, found.remedies) == ("data_regime", "info", ())
    assert ("sits far from them" in found.detail) is far and f"a variance of {var:.3g}" in found.detail
    assert dx.data_regime(_data(preset="more-layers"), _evidence(_data(preset="more-layers"))) is None


@pytest.mark.parametrize("train, val, severity", [(0.99, 0.885, "warning"), (0.99, 0.5, "warning"), (0.99, 0.895, "ok"), (0.95, 0.99, "ok")])
def test_overfitting_is_train_against_validation_at_ten_points(train, val, severity):
    data = _data(train=train, val=val, inference=val)
    found = dx.overfitting(data, _evidence(data))
    assert found.numbers == pytest.approx({"gap": train - val}) and (found.key, found.severity) == ("overfitting", severity)
    assert found.detail == f"Training accuracy {train:.2f} against validation {val:.2f} in inference mode; recalibrating leaves test at 0.95."
    assert found.remedies == ("Add data augmentation, more data or regularisation, or use fewer parameters.",)


def test_overfitting_without_validation_or_evaluate_uses_the_held_out_split_and_fit():
    data = _data(inference=0.6, fit=0.95)
    ev = _evidence(data, val=math.nan, train=math.nan, recalibrated=math.nan)
    found = dx.overfitting(data, ev)
    assert found.numbers["gap"] == pytest.approx(0.95 - 0.6) and found.severity == "warning"
    assert found.detail == "Training accuracy 0.95 against test 0.60 in inference mode."
    assert dx.overfitting(data, _evidence(data, val=math.nan, train=math.nan, fit=math.nan)) is None


@pytest.mark.parametrize("fit, train, shown", [(0.99, 0.885, True), (0.99, 0.3, True), (0.99, 0.895, False), (0.99, 0.99, False), (0.5, 0.99, False)])
def test_fit_vs_evaluate_needs_a_ten_point_gap(fit, train, shown):
    data = _data(fit=fit, train=train)
    found = dx.fit_vs_evaluate(data, _evidence(data))
    assert (found is not None) is shown
    if shown:
        assert (found.key, found.severity, found.remedies) == ("fit_vs_evaluate", "info", ())
        assert found.numbers == {"fit_accuracy": fit, "evaluate_accuracy": train}
        assert f"fit reported accuracy {fit:.2f}" in found.detail and f"gives {train:.2f}" in found.detail


@pytest.mark.parametrize(
    "noise, bias, severity",
    [
        (0.19, math.nan, "ok"),
        (0.2, math.nan, "warning"),
        (0.21, math.nan, "warning"),
        (math.nan, 1.11, None),
        (math.nan, math.sqrt(2), "warning"),
        (0.05, math.sqrt(4 / 3), "warning"),
    ],
)
def test_batch_noise_warns_from_02_sd_or_a_biased_variance(noise, bias, severity):
    data = _data(batch_size=2)
    found = dx.batch_noise(data, _evidence(data, noise=noise, variance_bias=bias))
    if severity is None:
        assert found is None
        return
    assert (found.key, found.severity) == ("batch_noise", severity)
    assert found.numbers == pytest.approx({"noise_sd": noise, "batch_size": 2, "variance_bias": bias}, nan_ok=True)
    assert found.remedies[0] == "Use a larger batch." and len(found.remedies) == 3
    if math.isfinite(bias):
        n = round(1 / (1 - bias**-2))
        assert f"only {n} values per channel" in found.detail and f"{bias:.2f}× too small" in found.detail
    assert (f"about {noise:.2f} population SDs" in found.detail) is math.isfinite(noise)


def _after_dropout(scale: float, *, other: float = 1.0) -> RunData:
    """norm1 and norm2 fed by Dropout: inference feeds norm1 a variance `scale`⁻² times its moving one."""
    moving_var = 400.0
    first = _trace("norm1", moving=(50.0,) * 5, moving_var=(moving_var,) * 5, infer=(50.0, (moving_var + EPS) / scale**2 - EPS))
    second = _trace("norm2", moving=(50.0,) * 5, moving_var=(moving_var,) * 5, infer=(50.0, (moving_var + EPS) / other**2 - EPS))
    bn = [{"name": "norm1", "after_noise": True, "momentum": 0.99, "epsilon": EPS}, {"name": "norm2", "after_noise": True, "momentum": 0.99, "epsilon": EPS}]
    return _data(layers=[first, second], info={"bn_layers": bn})


@pytest.mark.parametrize("scale, severity", [(1.11, "ok"), (1.13, "warning"), (1 / 1.11, "ok"), (1 / 1.13, "warning")])
def test_dropout_before_bn_measures_the_variance_shift_at_12_percent(scale, severity):
    data = _after_dropout(scale, other=1.05)
    found = dx.dropout_before_bn(data, _evidence(data))
    assert (found.key, found.severity) == ("dropout_before_bn", severity)
    assert found.numbers == pytest.approx({"variance_shift_scale": scale, "layers_after_dropout": 2}, rel=1e-4)
    assert found.detail.startswith("2 BN layer(s) come after Dropout or noise") and "norm1's moving variance" in found.detail
    assert found.remedies[0] == "Move Dropout after the last BN layer, or remove it."


def test_dropout_before_bn_names_the_layer_furthest_from_1_on_a_log_scale():
    data = _after_dropout(1 / 1.3, other=1.25)  # 1/1.3 is further from 1 than 1.25
    assert dx.dropout_before_bn(data, _evidence(data)).numbers["variance_shift_scale"] == pytest.approx(1 / 1.3, rel=1e-4)
    data = _after_dropout(1 / 1.2, other=1.25)
    assert dx.dropout_before_bn(data, _evidence(data)).numbers["variance_shift_scale"] == pytest.approx(1.25, rel=1e-4)


def test_dropout_before_bn_from_layer_order_for_older_runs():
    order = lambda *kinds: {"layers": [{"name": f"l{i}", "type": k} for i, k in enumerate(kinds)]}  # noqa: E731
    found = dx.dropout_before_bn(_data(info=order("Conv2D", "Dropout", "BatchNormalization")), _evidence())
    assert (found.key, found.severity, found.numbers) == ("dropout_before_bn", "warning", {})
    assert dx.dropout_before_bn(_data(info=order("Conv2D", "BatchNormalization", "Dropout", "Dense")), _evidence()) is None
    assert dx.dropout_before_bn(_data(info=order("Conv2D", "BatchNormalization")), _evidence()) is None


@pytest.mark.parametrize("test_shift, val_shift, test, warning", [(0.9, 0.1, 0.4, True), (0.9, 0.1, 0.94, False), (math.nan, math.nan, 0.95, None)])
def test_test_shift_reports_both_shifts_and_warns_when_test_alone_drops(test_shift, val_shift, test, warning):
    info = {"input_shift": {"first_bn_input": {"test": test_shift, "val": val_shift}, "pixel_mean": {"train": 120.0, "test": 42.5}}}
    data = _data(inference=test, val=0.95, train=0.97, recalibrated=0.95, info=info)
    found = dx.test_shift(data, dx.gather(data))
    if warning is None:
        assert found is None
        return
    assert (found.key, found.severity) == ("test_shift", "warning" if warning else "ok")
    assert found.numbers == {"test_shift": test_shift, "val_shift": val_shift}
    assert f"sit {test_shift:.2f} SDs from the training inputs (validation: {val_shift:.2f})" in found.detail
    assert "Mean pixel value: train 120.0, test 42.5." in found.detail and f"test {test:.2f}" in found.detail
    assert found.remedies[0].startswith("Apply the same preprocessing")


def _drifting(
    name: str, pop_means: tuple[float, ...], steps=(0, 30, 60, 90, 120), pop_var: float = 400.0, pop_vars: tuple[float, ...] | None = None
) -> LayerTrace:
    """A settled layer whose population mean (and, given `pop_vars`, variance) moves record by record,
    the same in every channel."""
    settled = {key: values[-len(steps) :] for key, values in SETTLED.items()}
    trace = _trace(name, steps=steps, pop_var=pop_var, **settled)
    per_record = lambda values: np.repeat(np.asarray(values, np.float32)[:, None], CHANNELS, 1)  # noqa: E731
    trace = dataclasses.replace(trace, pop_mean=per_record(pop_means))
    return trace if pop_vars is None else dataclasses.replace(trace, pop_var=per_record(pop_vars))


def test_drift_speed_is_the_fastest_layer_between_its_last_two_records():
    slow = _drifting("norm1", (50, 50, 50, 50, 52))  # 2 / 20 SDs over 30 steps
    fast = _drifting("norm2", (50, 50, 50, 44, 50))  # 6 / 20 SDs over 30 steps: only the last two records count
    data = _data(layers=[slow, fast])
    assert dx.drift_speed(data) == pytest.approx(6 / math.sqrt(400 + EPS) / 30, rel=1e-5)
    assert math.isnan(dx.drift_speed(_data(layers=[_drifting("norm1", (50, 60), steps=(0, 120))])))  # two records: no drift measured


@pytest.mark.parametrize("late_move, severity", [(0.0024 * 30 * 20, "ok"), (0.0026 * 30 * 20, "warning")])
def test_lag_is_drift_times_the_window_warning_from_a_quarter_sd(late_move, severity):
    data = _data(layers=[_drifting("norm1", (50, 50, 50, 50, 50 + late_move))])
    speed = late_move / math.sqrt(400 + EPS) / 30
    found = dx.lag(data, _evidence(data))
    assert (found.key, found.severity) == ("lag", severity)
    assert found.numbers == pytest.approx({"drift_sd_per_step": speed, "lag_sd": speed * 99, "suggested_momentum": dx.lag_momentum(speed)}, rel=1e-4)
    assert f"trails about m/(1−m) = 99 steps behind, so it lags by about {speed * 99:.2f} SDs" in found.detail
    assert found.remedies[1].startswith(f"Use momentum {dx.lag_momentum(speed):g}")
    assert dx.lag(_data(momentum=1.0, layers=[_drifting("norm1", (50, 50, 50, 50, 60))]), _evidence()) is None


def test_never_moved_names_the_stuck_layers_and_why():
    stuck = _trace("norm1", moving=(0.0,) * 5, moving_var=(1.0,) * 5)
    moved = _trace("norm2", **SETTLED)
    data = _data(momentum=1.0, layers=[stuck, moved])
    found = dx.never_moved(data, dx.gather(data))
    assert (found.key, found.severity, found.numbers) == ("never_moved", "warning", {"layers_stuck": 1})
    assert found.detail.startswith("norm1 still hold their initial moving values after 120 steps. With momentum 1")
    data = _data(momentum=0.99, layers=[stuck])
    assert "custom training loop calls the model without training=True" in dx.never_moved(data, dx.gather(data)).detail
    assert dx.never_moved(_data(layers=[moved]), dx.gather(_data(layers=[moved]))) is None


@pytest.mark.parametrize("ratio, shuffle, severity", [(2.9, True, "ok"), (3.1, True, "warning"), (math.nan, False, "warning")])
def test_non_iid_batches_reports_the_ratio(ratio, shuffle, severity):
    data = _data(shuffle=shuffle)
    found = dx.non_iid_batches(data, _evidence(data, non_iid_ratio=ratio, not_iid=severity == "warning"))
    assert (found.key, found.severity) == ("non_iid_batches", severity)
    assert found.numbers == pytest.approx({"ratio": ratio}, nan_ok=True)
    assert ("trained without shuffling" in found.detail) is not shuffle
    assert (f"{ratio:.1f}× as far from the population mean" in found.detail) is math.isfinite(ratio)
    assert ("the weights learn to rely on them" in found.detail) is (severity == "warning")
    assert dx.non_iid_batches(data, _evidence(data, non_iid_ratio=math.nan, not_iid=False)) is None


# --- the verdict, clause by clause: each part of its sentence, its numbers and its remedies ----------
def _collapsed(**changes) -> dx.Evidence:
    """A collapsed run's evidence: 0.3 in inference mode, 0.9 recalibrated, fit 0.98."""
    base = {
        "split": "test",
        "inference": 0.3,
        "recalibrated": 0.9,
        "batchstats": 0.9,
        "train": 0.3,
        "fit": 0.98,
        "val": 0.3,
        "test": 0.3,
        "test_shift": 0.1,
        "val_shift": 0.1,
        "init_weight": 0.3,
        "non_iid_ratio": 1.0,
        "noise": 0.01,
        "stuck": (),
    }
    return dx.Evidence(**{**base, **changes})


def _finding(key: str, detail: str = "", remedies: tuple[str, ...] = (), **numbers: float) -> Finding:
    return Finding(key, "warning", key, detail, remedies, numbers, key)


NAN = math.nan


def test_the_held_out_sentence_says_what_recalibrating_gives_only_when_it_was_measured():
    assert "(recalibrating on training batches gives 0.90)" in dx._verdict_detail("lag", _collapsed(), True, {})
    assert "recalibrating on training batches" not in dx._verdict_detail("lag", _collapsed(recalibrated=NAN), True, {})


def test_not_enough_evidence_names_what_is_missing_and_what_fit_saw():
    missing = {"missing_evidence": _finding("missing_evidence", "Pass train_data=(x, y).")}
    detail = dx._verdict_detail("insufficient_evidence", _collapsed(recalibrated=NAN), True, missing)
    assert detail.startswith("Test accuracy is 0.30 in inference mode against accuracy 0.98 on the training images (fit, batch statistics).")
    assert detail.endswith("decides it. Pass train_data=(x, y).")
    alone = dx._verdict_detail("insufficient_evidence", _collapsed(recalibrated=NAN, fit=NAN, train=NAN), True, {})
    assert alone == "Test accuracy is 0.30 in inference mode. bnviz will not guess a cause without the measurement that decides it."


def test_statistics_off_adds_why_only_when_a_stale_finding_says_it():
    base = "The weights are fine: the statistics BN normalises with at inference are off."
    assert dx._verdict_detail("statistics_off", _collapsed(), True, {}).endswith(base)
    stale = {"stale_initial_values": _finding("stale_initial_values", "Not the initial values: 4 SD off.")}
    assert dx._verdict_detail("statistics_off", _collapsed(), True, stale).endswith(base + " Not the initial values: 4 SD off.")


@pytest.mark.parametrize("recalibrated, train_batchstats, says_basis", [(0.9, NAN, False), (NAN, 0.95, False), (NAN, NAN, True)])
def test_a_bn_cause_says_it_was_measured_on_the_probes_batches_only_when_nothing_else_was(recalibrated, train_batchstats, says_basis):
    detail = dx._verdict_detail("stale_initial_values", _collapsed(recalibrated=recalibrated, train_batchstats=train_batchstats), True, {})
    assert ("Measured against the training batches the probe saw" in detail) == says_basis
    assert detail.endswith(".)" if says_basis else "See the finding below.")


def test_a_test_shift_gives_the_shift_and_the_test_sets_own_statistics_when_measured():
    ev = _collapsed(val=0.95, test=0.4, test_shift=2.5, test_batchstats=0.9)
    detail = dx._verdict_detail("test_shift", ev, True, {})
    assert detail.startswith(
        "Validation accuracy is 0.95 but test accuracy 0.40, and the test inputs sit 2.50 SDs from the training inputs; "
        "the test set's own batch statistics give 0.90. The test data differ"
    )
    bare = dx._verdict_detail("test_shift", dataclasses.replace(ev, test_shift=NAN, test_batchstats=NAN), True, {})
    assert bare.startswith("Validation accuracy is 0.95 but test accuracy 0.40. The test data differ")


def test_overfitting_shows_training_accuracy_and_says_recalibrating_does_not_help_only_when_measured():
    detail = dx._verdict_detail("overfitting", _collapsed(train=0.99, inference=0.6, recalibrated=0.61), True, {})
    assert "Training accuracy 0.99: the model does not generalise. Recalibrating on training data does not close the gap." in detail
    detail = dx._verdict_detail("overfitting", _collapsed(train=NAN, fit=0.97, inference=0.6, recalibrated=NAN), True, {})
    assert detail.endswith("Training accuracy 0.97: the model does not generalise.")


def test_a_healthy_verdict_says_why_and_whether_the_model_is_weak():
    ok = _collapsed(inference=0.95, recalibrated=0.95, fit=0.97, train=0.96)
    assert dx._verdict_detail("healthy", ok, True, {}).endswith("Recalibrating BN changes little: the moving statistics fit the data.")
    weak = dx._verdict_detail("healthy", dataclasses.replace(ok, fit=0.5, train=0.5, recalibrated=NAN), True, {})
    assert weak.endswith(
        "Inference does as well as fit on the training batches: the moving statistics fit the data. The model itself is weak: "
        "accuracy 0.50 on the training images."
    )
    assert "has no BatchNormalization layer" in dx._verdict_detail("healthy", ok, False, {})
    assert "although the moving statistics of" in dx._verdict_detail("healthy", dataclasses.replace(ok, variance_bias=1.2), True, {})


@pytest.fixture
def deciding(monkeypatch):
    """verdict() with the cause chosen by the test, so each part of its assembly can be checked alone."""

    def decide_as(cause: str):
        monkeypatch.setattr(dx, "decide", lambda data, ev, found: cause)

    return decide_as


def test_the_verdicts_drop_is_what_statistics_cost_for_a_bn_cause_else_the_gap_to_training(deciding):
    data = _data()
    deciding("stale_initial_values")
    assert dx.verdict(data, _collapsed(inference=0.3, recalibrated=0.9), {}).numbers["accuracy_drop"] == pytest.approx(0.6)
    assert dx.verdict(data, _collapsed(recalibrated=NAN, train_batchstats=NAN, fit=0.98, val=0.5), {}).numbers["accuracy_drop"] == pytest.approx(0.68)
    deciding("overfitting")
    assert dx.verdict(data, _collapsed(inference=0.3, recalibrated=0.35, fit=0.7, val=0.8), {}).numbers["accuracy_drop"] == pytest.approx(0.5)
    assert dx.verdict(data, _collapsed(inference=0.3, recalibrated=0.35, fit=0.9, val=0.8), {}).numbers["accuracy_drop"] == pytest.approx(0.6)


def test_the_verdict_is_critical_from_the_critical_drop_on(deciding):
    deciding("lag")
    assert dx.verdict(_data(), _collapsed(inference=0.0, recalibrated=dx.GAP_CRITICAL), {}).severity == "critical"
    assert dx.verdict(_data(), _collapsed(inference=0.0, recalibrated=dx.GAP_CRITICAL - 0.01), {}).severity == "warning"


def test_only_a_bn_cause_tells_where_the_error_starts_and_healthy_names_the_layers_it_tolerates(deciding):
    data = _data()  # norm1's moving statistics are far off
    deciding("lag")
    assert "The error starts at norm1" in dx.verdict(data, _collapsed(), {}).detail
    deciding("overfitting")
    assert "The error starts at" not in dx.verdict(data, _collapsed(), {}).detail
    deciding("healthy")
    assert "although the moving statistics of norm1 are off" in dx.verdict(data, _collapsed(inference=0.95, recalibrated=0.95), {}).detail


def test_the_verdicts_remedies_are_its_causes_or_what_to_pass(deciding):
    data = _data()
    lag = {"lag": _finding("lag", remedies=("Lower the momentum.",), suggested_momentum=0.9)}
    deciding("lag")
    top = dx.verdict(data, _collapsed(), lag)
    assert top.remedies == ("Lower the momentum.",) and top.numbers["suggested_momentum"] == 0.9
    assert dx.verdict(data, _collapsed(), {}).remedies == ()
    deciding("insufficient_evidence")
    assert dx.verdict(data, _collapsed(), {}).remedies == () and dx.verdict(data, _collapsed(), {}).severity == "unknown"
    missing = {"missing_evidence": _finding("missing_evidence", "Pass train_data.")}
    assert dx.verdict(data, _collapsed(), missing).remedies == ("Pass train_data.",)
    deciding("statistics_off")
    assert dx.verdict(data, _collapsed(), lag).remedies[0] == "Recalibrate the BN statistics (PreciseBN) now: no retraining."


def _figures(name="norm2", own=(0.5, 1.3), infer=(2.0, 3.0)) -> dx.LayerFigures:
    return dx.LayerFigures(name, 120, own[0], own[1], infer[0], infer[1], CHANNELS)


def test_a_layer_finding_carries_its_figures_and_a_remedy_only_when_off():
    f = _figures()
    finding = dx._layer_finding(f, True, "At step 120")
    assert finding.key == "layer_norm2" and finding.title == "norm2: moving statistics at inference" and finding.severity == "critical"
    assert finding.numbers == {"mean_gap_sd": 2.0, "scale_error": 3.0, "own_mean_gap_sd": 0.5, "own_scale_error": 1.3, "step": 120, "first_wrong": 1.0}
    assert finding.detail.startswith("norm2 goes wrong first: its own moving statistics are off. At step 120: In inference mode")
    assert finding.remedies == ("Recalibrate (PreciseBN) to replace the moving values by the population statistics.",)
    fine = dx._layer_finding(_figures(own=(0.1, 1.01), infer=(0.1, 1.01)), False, "At step 120")
    assert fine.severity == "ok" and fine.remedies == () and fine.detail.startswith("At step 120: In inference mode")
    assert fine.numbers["first_wrong"] == 0.0


def test_a_layer_recorded_without_inference_inputs_is_judged_on_its_own_statistics():
    older = dx._layer_finding(_figures(own=(0.6, 1.0), infer=(NAN, NAN)), False, "At step 120")
    assert older.severity == "warning" and "recorded before bnviz measured inference-mode inputs" in older.detail
    unmeasured = dx._layer_finding(_figures(own=(NAN, NAN), infer=(0.1, 1.0)), False, "At step 120")
    assert unmeasured.severity == "ok" and "The training-mode population was not measured." in unmeasured.detail


def test_drift_speed_is_the_last_two_measured_records_change_per_step_in_population_sds():
    layer = _drifting("norm1", (0.0, 0.5, 0.2), steps=(0, 10, 30), pop_vars=(0.5, 0.009, 0.015))
    expected = abs(0.2 - 0.5) / math.sqrt(0.015 + EPS) / 20
    assert dx.drift_speed(_data(layers=[layer])) == pytest.approx(expected, rel=1e-5)
    too_short = _drifting("norm1", (0.0, 0.2), steps=(0, 30), pop_vars=(0.015, 0.015))
    assert math.isnan(dx.drift_speed(_data(layers=[too_short])))
    repeated = _drifting("norm1", (0.0, 0.1, 0.2, 0.3), steps=(0, 10, 30, 30), pop_vars=(0.015,) * 4)
    assert math.isnan(dx.drift_speed(_data(layers=[repeated])))
    assert dx.drift_speed(_data(layers=[too_short, _drifting("norm2", (0.0, 0.5, 0.2), steps=(0, 10, 30), pop_vars=(0.5, 0.009, 0.015))])) == pytest.approx(
        expected, rel=1e-5
    )


def test_the_cause_is_decided_at_each_threshold_itself():
    bn, plain = _data(), _data(preset="more-layers")
    gap = {"val": 0.0, "inference": 0.0, "test": 0.0, "recalibrated": NAN}
    assert dx.decide(plain, _collapsed(train=dx.OVERFIT_GAP, **gap), {}) == "overfitting"
    assert dx.decide(plain, _collapsed(train=dx.OVERFIT_GAP * 0.99, **gap), {}) == "healthy"
    strict = dx.Metric(warning=0.25, underfit=0.5)  # thresholds a score difference can meet exactly
    stuck = {"fit": 1.0, "train": 1.0, "stuck": ("norm1",), "recalibrated": NAN, "metric": strict}
    assert dx.decide(bn, _collapsed(inference=0.75, val=0.75, **stuck), {}) == "never_moved"
    assert dx.decide(bn, _collapsed(inference=0.76, val=0.76, **stuck), {}) != "never_moved"
    lost = {"inference": 0.3, "recalibrated": 0.9}
    assert dx.decide(bn, _collapsed(init_weight=dx.STALE_WEIGHT, **lost), {}) == "stale_initial_values"
    assert dx.decide(bn, _collapsed(init_weight=dx.STALE_WEIGHT * 0.99, **lost), {}) == "lag"
    assert dx.decide(bn, _collapsed(init_weight=0.0, noise=dx.NOISE_SD, **lost), {}) == "batch_noise"
    assert dx.decide(bn, _collapsed(init_weight=0.0, noise=0.0, variance_bias=dx.LAYER_SCALE[0], **lost), {}) == "batch_noise"
    assert dx.decide(bn, _collapsed(init_weight=0.0, noise=0.0, variance_bias=1.2, **lost), {}) == "batch_noise"
    assert dx.decide(bn, _collapsed(init_weight=0.0, noise=0.0, variance_bias=1.1, **lost), {}) == "lag"


def test_the_initial_values_finding_is_a_warning_from_the_stale_weight_on_and_says_what_to_change():
    ev = _collapsed()
    found = dx.stale_initial_values(_data(momentum=0.99, steps=120), ev)
    suggested = dx.suggest_momentum(120)
    assert found.title == "What the moving averages still remember" and found.severity == "warning"
    assert found.remedies == (
        "Recalibrate the BN statistics (PreciseBN) now: no retraining.",
        f"Lower the momentum to {suggested:g} (PyTorch: {dx.torch_momentum(suggested):g}) or less: its initial weight after 120 steps is below 1 %.",
        f"Train for at least {dx.steps_to_forget(0.99):.0f} steps at {momentum_text(0.99)}.",
    )
    already = dx.stale_initial_values(_data(momentum=suggested, steps=120), ev)
    assert not any(r.startswith("Lower the momentum") for r in already.remedies) and len(already.remedies) == 2
    at_threshold = dx.stale_initial_values(_data(momentum=dx.STALE_WEIGHT, steps=1), ev)
    assert at_threshold.numbers["init_weight"] == dx.STALE_WEIGHT and at_threshold.severity == "warning"
    assert dx.stale_initial_values(_data(momentum=0.04, steps=1), ev).severity == "ok"


def test_a_fit_that_continued_a_trained_model_names_the_values_it_began_with():
    continued = _trace(moving=(5.0, 10, 20, 30, 35), moving_var=(2.0, 20, 50, 100, 150))
    text = dx.stale_initial_values(_data(layers=[continued]), _collapsed()).detail
    assert "values they held when this fit began" in text and "(mean 0, variance 1)" not in text
    assert "initial values (mean 0, variance 1)" in dx.stale_initial_values(_data(), _collapsed()).detail


def test_an_older_run_with_dropout_listed_before_bn_gets_the_whole_finding():
    info = {"layers": [{"name": "d", "type": "Dropout"}, {"name": "norm1", "type": "BatchNormalization"}]}
    found = dx._dropout_by_layer_order(_data(info=info))
    assert (found.key, found.severity, found.title) == ("dropout_before_bn", "warning", "Dropout comes before BatchNormalization")
    assert found.detail.startswith("A Dropout layer feeds a BN layer: in training BN sees the variance with dropout")
    assert found.remedies == ("Move Dropout after the last BN layer, or remove it.",) and found.numbers == {}
    after = {"layers": [{"name": "norm1", "type": "BatchNormalization"}, {"name": "d", "type": "Dropout"}]}
    assert dx._dropout_by_layer_order(_data(info=after)) is None


def test_the_test_shift_finding_states_the_shift_the_pixels_and_the_test_sets_own_statistics():
    ev = _collapsed(val=0.95, test=0.4, test_shift=2.5, val_shift=0.1, test_batchstats=0.9)
    pixels = {"input_shift": {"pixel_mean": {"train": 120.0, "test": 60.0}}}
    found = dx.test_shift(_data(info=pixels), ev)
    assert found.title == "Whether the test data resemble the training data" and found.numbers == {"test_shift": 2.5, "val_shift": 0.1}
    assert found.detail == (
        "The test inputs sit 2.50 SDs from the training inputs (validation: 0.10), measured at the first BN layer's input. Mean pixel value: "
        "train 120.0, test 60.0. Validation accuracy 0.95, test 0.40; with the test set's own batch statistics test gets 0.90."
    )
    bare = dx.test_shift(_data(), dataclasses.replace(ev, test_shift=NAN, test_batchstats=NAN))  # no input_shift recorded at all
    assert bare.detail == "Validation accuracy 0.95, test 0.40."
    unmeasured = dx.test_shift(_data(), dataclasses.replace(ev, test_batchstats=NAN))
    assert unmeasured.detail.startswith("The test inputs sit 2.50 SDs") and "Mean pixel value" not in unmeasured.detail


def test_findings_hold_their_thresholds_themselves():
    plain = _data(preset="more-layers")
    at = {"val": 0.0, "inference": 0.0, "test": 0.0}
    assert dx.overfitting(plain, _collapsed(train=dx.OVERFIT_GAP, **at)).severity == "warning"
    assert dx.overfitting(plain, _collapsed(train=dx.OVERFIT_GAP * 0.99, **at)).severity == "ok"
    assert dx.overfitting(plain, _collapsed(train=0.9, val=0.5)).title == "Training vs held-out"
    assert dx.fit_vs_evaluate(plain, _collapsed(fit=2 * dx.GAP_WARNING, train=0.0)) is not None
    assert dx.fit_vs_evaluate(plain, _collapsed(fit=2 * dx.GAP_WARNING * 0.99, train=0.0)) is None
    assert dx.fit_vs_evaluate(plain, _collapsed(fit=0.99, train=0.5)).title == "fit and evaluate disagree on the same training images"
    assert dx.batch_noise(_data(), _collapsed(noise=NAN, variance_bias=dx.LAYER_SCALE[0])) is not None
    assert dx.batch_noise(_data(), _collapsed(noise=NAN, variance_bias=dx.LAYER_SCALE[0] * 0.99)) is None


def test_lag_is_a_warning_from_a_quarter_sd_on_and_suggests_a_momentum_only_below_the_runs(monkeypatch):
    m = 0.5  # m/(1 − m) = 1: a drift of 0.25 SD per step lags by exactly 0.25 SD
    monkeypatch.setattr(dx, "drift_speed", lambda data: 0.25)
    found = dx.lag(_data(momentum=m), _collapsed())
    assert found.numbers["lag_sd"] == 0.25 and found.severity == "warning" and found.title == "How far the moving average trails drifting statistics"
    assert any(r.startswith("Use momentum") for r in found.remedies)
    target = found.numbers["suggested_momentum"]
    same = dx.lag(_data(momentum=target), _collapsed())
    assert same.numbers["suggested_momentum"] == target and not any(r.startswith("Use momentum") for r in same.remedies)
    monkeypatch.setattr(dx, "drift_speed", lambda data: 0.24)
    assert dx.lag(_data(momentum=m), _collapsed()).severity == "ok"


def test_notes_count_the_frozen_layers_of_a_model_bnviz_did_not_build():
    rows = [{"name": "a", "trainable": False}, {"name": "b", "trainable": True}, {"name": "c"}]
    notes = dx.model_notes(_data(info={"notes": ["It was loaded from a file."], "bn_layers": rows}), _collapsed())
    assert (notes.title, notes.detail, notes.numbers) == ("About this model", "It was loaded from a file.", {"frozen_bn_layers": 1})
    assert dx.model_notes(_data(info={"notes": ["A note."]}), _collapsed()).numbers == {"frozen_bn_layers": 0}


def test_the_non_iid_finding_says_how_the_run_was_fed_and_how_to_fix_it():
    found = dx.non_iid_batches(_data(shuffle=False, batch_size=16), _collapsed(non_iid_ratio=4.0, not_iid=True))
    assert found.title == "Whether training batches are i.i.d." and found.numbers == {"ratio": 4.0}
    assert found.detail.startswith("The run trained without shuffling (class by class). Training batches' means sit 4.0× as far")
    assert "i.i.d. batches of 16 would" in found.detail
    assert found.remedies == ("Shuffle the training data every epoch (fit(shuffle=True), or Dataset.shuffle before batch).",)
    shuffled = dx.non_iid_batches(_data(), _collapsed(non_iid_ratio=1.0))
    assert shuffled.severity == "ok" and shuffled.detail.startswith("Training batches' means sit 1.0×")
    unmeasured = dx.non_iid_batches(_data(shuffle=False), _collapsed(non_iid_ratio=NAN, not_iid=True))
    assert unmeasured.detail.startswith("The run trained without shuffling (class by class). ") and "Training batches' means" not in unmeasured.detail


def test_a_shifted_test_set_keeps_its_warning_beside_a_bn_cause_and_the_causes_finding_takes_the_verdicts_severity():
    top = Finding("verdict", "critical", "v", "d", (), {}, "lag")
    findings = [_finding("lag"), _finding("test_shift"), _finding("overfitting"), _finding("layer_norm1")]
    kept = {f.key: f.severity for f in dx.reconcile(findings, top)}
    assert kept == {"lag": "critical", "test_shift": "warning", "overfitting": "info", "layer_norm1": "warning"}
    healthy = dataclasses.replace(top, cause="healthy", severity="ok")
    assert {f.key: f.severity for f in dx.reconcile(findings, healthy)} == {
        "lag": "info",
        "test_shift": "info",
        "overfitting": "info",
        "layer_norm1": "info",
    }


@pytest.mark.parametrize(
    "gap, scale, severity",
    [
        (dx.LAYER_GAP[1], 1.0, "warning"),  # at a threshold, not beyond it
        (dx.LAYER_GAP[0], 1.0, "ok"),
        (0.0, dx.LAYER_SCALE[1], "warning"),
        (0.0, dx.LAYER_SCALE[0], "ok"),
        (0.0, 1 / dx.LAYER_SCALE[1] * 0.99, "critical"),
        (0.0, 0.0, "critical"),  # a zero moving variance: infinitely off, not a division by zero
        (NAN, 1.0, "info"),
    ],
)
def test_a_layer_is_off_only_beyond_each_threshold(gap, scale, severity):
    assert dx._layer_severity(gap, scale) == severity


def test_the_momentum_per_step_is_the_first_layers_to_the_power_of_its_updates():
    """The first layer in network order as the probe listed it, a nested base's BN layers included
    (the model's own layer table lists the base as one row)."""
    rows = [{"name": "norm2", "momentum": 0.9, "epsilon": EPS, "updates_per_step": 3}, {"name": "norm1", "momentum": 0.5, "epsilon": EPS}]
    layers = [_trace("norm1"), _trace("norm2")]
    info = {"bn_layers": rows, "layers": [{"name": "base"}]}  # network order is the probe's (norm2 first), not the store's
    assert dx._momentum(_data(layers=layers, info=info)) == pytest.approx(0.9**3)
    assert dx._momentum(_data(momentum=0.8, layers=[])) == pytest.approx(0.8)  # no records yet: the config's


def test_only_trainable_layers_fed_without_noise_whose_statistics_moved_are_followed():
    rows = [{"name": "frozen", "trainable": False}, {"name": "noisy", "after_noise": True}, {"name": "plain"}]
    stuck = _trace("stuck", moving=(0.0,) * 5, moving_var=(1.0,) * 5)
    layers = [_trace("frozen"), _trace("noisy"), _trace("plain"), _trace("free"), stuck]
    assert dx._followable(_data(layers=layers, info={"bn_layers": rows})) == {"plain", "free"}


def test_a_run_has_bn_when_it_recorded_layers_listed_them_or_was_built_with_them():
    plain = _data(preset="more-layers")
    assert not dx._has_bn(plain)
    assert dx._has_bn(dataclasses.replace(plain, layers={"norm1": _trace()}))
    assert dx._has_bn(dataclasses.replace(plain, run=dataclasses.replace(plain.run, info={"bn_layers": [{"name": "b"}]})))
    assert dx._has_bn(_data(layers=[]))


def test_a_users_own_precisebn_counts_only_when_it_averaged_training_images():
    data = _data(final=True)
    own = Evaluation.from_dict({"accuracy": {"test": 0.97}, "calibrated_on": "train"})
    transductive = Evaluation.from_dict({"accuracy": {"test": 0.99}, "calibrated_on": "test"})
    only_user = dataclasses.replace(data, evaluations={"final": data.evaluations["final"], "precisebn": own})
    assert dx._recalibrated(only_user) is own
    held_out = dataclasses.replace(data, evaluations={"final": data.evaluations["final"], "precisebn": transductive})
    assert dx._recalibrated(held_out) is None


def test_layer_figures_use_the_layers_own_epsilon_step_and_channel_count():
    trace = _trace(moving=(0.0, 0.1, 0.2, 0.3, 0.3), moving_var=(1.0,) * 5, pop_mean=0.0, pop_var=0.01)
    fig = layer_figures(trace, 0.5)
    assert fig.step == 120 and isinstance(fig.step, int) and fig.channels == CHANNELS
    assert fig.own_mean_gap == pytest.approx(0.3 / math.sqrt(0.01 + 0.5), rel=1e-5)


def test_scale_errors_in_words():
    assert dx.scale_text(0.0).endswith("(non-finite statistics)")
    assert dx.scale_text(1.001) == "divides by the right standard deviation (within 0.5 %)"
    assert dx.scale_text(1.5) == "divides by a standard deviation 1.5× too large, squashing the output"
    assert dx.scale_text(0.5) == "divides by a standard deviation 2× too small, blowing the output up"


def test_the_variance_bias_is_that_of_the_fewest_values_a_batch_gives_a_channel():
    rows = [{"name": "conv_bn", "values_per_image": 64}, {"name": "dense_bn", "values_per_image": 1}, {"name": "unknown"}]
    assert dx.variance_bias(_data(batch_size=4, info={"bn_layers": rows})) == pytest.approx(math.sqrt(4 / 3))
    assert math.isnan(dx.variance_bias(_data(batch_size=1, info={"bn_layers": rows[1:2]})))  # one value: no variance at all
    assert math.isnan(dx.variance_bias(_data(info={"bn_layers": rows[2:]})))


def test_the_moving_noise_is_the_worst_layers_and_skips_layers_that_did_not_measure_it():
    unmeasured = dataclasses.replace(_trace("norm1"), iid_mean_sd=np.zeros((0, CHANNELS), np.float32))
    measured = _trace("norm2", pop_var=0.25, iid_sd=0.05)  # a batch mean's SD of 0.1 population SD
    m = 0.9
    assert dx.moving_noise(_data(layers=[unmeasured, measured]), m) == pytest.approx(0.1 * math.sqrt((1 - m) / (1 + m)), rel=1e-5)
    assert math.isnan(dx.moving_noise(_data(layers=[unmeasured]), m))


# --- fine-tuning a pretrained model: statistics rewritten, or kept -----------------------------------
def test_fine_tuning_that_rewrote_pretrained_statistics_is_named_with_how_far_they_moved():
    """Pretrained at 40/100, rewritten to 45/400 against this data's 50/400: the mean moved 5/20 SD (a hair
    under the 0.25 line, ε included) and the SD 2× (over the 1.12 line); kept values, or 0/1 at the start, are not it."""
    rewritten = _trace(moving=(40.0, 42, 43, 44, 45), moving_var=(100.0, 200, 300, 350, 400))
    findings = diagnose(_data(layers=[rewritten], batch_size=4))
    top, moved = findings[0], _by_key(findings)["overwritten_in_fine_tuning"]
    assert top.cause == "overwritten_in_fine_tuning" and top.title == "Verdict: Fine-tuning rewrote the pretrained moving statistics"
    assert moved.numbers == pytest.approx(
        {"moved_sd": 5 / math.sqrt(400 + EPS), "scale_change": math.sqrt(400.001 / 100.001), "layers_moved": 1, "steps": 120, "batch_size": 4}
    )
    assert "after 120 steps at batch size 4" in top.detail and "carry mᵗ = 30%" in top.detail and "base.trainable = False" in top.remedies[0]
    assert _by_key(findings)["stale_initial_values"].severity == "info"
    _assert_consistent(findings)
    barely = _trace(moving=(44.9, 45, 45, 45, 45), moving_var=(399.0, 400, 400, 400, 400))  # 0.005 SD, 1.001×: kept, not rewritten
    assert "overwritten_in_fine_tuning" not in _by_key(diagnose(_data(layers=[barely])))
    assert "overwritten_in_fine_tuning" not in _by_key(diagnose(_data()))  # started at 0/1: not pretrained


def test_pretrained_statistics_kept_through_fit_are_frozen_as_intended_and_said_in_a_healthy_verdict():
    info = {"bn_layers": [{"name": "norm1", "trainable": False, **ROW}]}
    kept = _trace(moving=(48.0,) * 5, moving_var=(380.0,) * 5)
    findings = diagnose(_own({"final": {"train": 0.9, "val": 0.9, "test": 0.9, "fit": 0.9, "train_batchstats": 0.9}}, layers=[kept], info=info))
    top, frozen = findings[0], _by_key(findings)["frozen_as_intended"]
    assert top.cause == "healthy" and frozen.severity == "ok" and frozen.numbers == {"moved_sd": 0.0, "scale_change": 1.0, "frozen": 1, "steps": 120}
    assert top.detail.endswith(frozen.detail) and "moved at most 0.000 SDs" in frozen.detail and "1 of them frozen (trainable=False)" in frozen.detail
