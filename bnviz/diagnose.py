"""Diagnosis: ranked findings, each a sentence with the measured numbers behind it, a severity
and its remedies. Pure functions over stored run data (`RunData`); no TensorFlow.

Momentum is always given in both conventions: Keras `momentum=m` is PyTorch `momentum=1−m`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bnviz.stats import (
    ema_window,
    half_life,
    init_weight,
    standardized_gap,
    steps_to_forget,
    suggest_momentum,
    torch_momentum,
    variance_ratio,
)
from bnviz.store import RunData

SEVERITIES = ("critical", "warning", "info", "ok")
GAP_CRITICAL, GAP_WARNING = 0.15, 0.05  # inference vs batch-statistics accuracy gap


@dataclass(frozen=True)
class Finding:
    key: str  # stable id: tests and the UI refer to findings by it
    severity: str  # critical | warning | info | ok
    title: str
    detail: str  # the sentence with the numbers
    remedies: tuple[str, ...] = ()
    numbers: dict[str, float] = field(default_factory=dict)


def momentum_text(m: float) -> str:
    """'momentum 0.99 (PyTorch: momentum=0.01)': the two frameworks define it in opposite directions."""
    return f"momentum {m:g} (PyTorch: momentum={torch_momentum(m):g})"


def _final(data: RunData) -> dict | None:
    final = data.evaluations.get("final")
    return final.accuracies() if final else None


def _steps_trained(data: RunData) -> int:
    if len(data.steps):
        return int(data.steps["step"].max())
    return int(data.probes["step"].max()) if len(data.probes) else 0


def _has_bn(data: RunData) -> bool:
    return data.run.config.arch.norm == "batch"


# --- individual checks: each returns a Finding or None ----------------------------------------
def mode_gap(data: RunData) -> Finding | None:
    """The decisive split: fine batch-statistics accuracy, poor inference accuracy."""
    acc = _final(data)
    if acc is None:
        if not len(data.probes):
            return None
        last = data.probes.iloc[-1]
        acc = {"test": last["acc_inference"], "test_batchstats": last["acc_train_mode"]}
    split = next((s for s in ("test", "val", "train") if s in acc), None)  # bnviz.Probe evaluates only the splits it was given
    if split is None:
        return None
    infer, batch = acc[split], acc[f"{split}_batchstats"]
    gap = batch - infer
    numbers = {"inference": infer, "batchstats": batch, "gap": gap}
    if gap < GAP_WARNING:
        return None
    severity = "critical" if gap >= GAP_CRITICAL else "warning"
    return Finding(
        "mode_gap", severity, "Inference uses wrong statistics, the weights are fine",
        f"{split.capitalize()} accuracy is {infer:.2f} in inference mode (moving statistics) but {batch:.2f} with batch "
        f"statistics, a gap of {gap:.2f}. The same weights do well when BN normalises with the statistics of the data it "
        "sees, so the moving mean/variance that inference uses are the problem, not overfitting.",
        ("Recalibrate the BN statistics (PreciseBN): one pass over training batches, no retraining.",
         "Lower the momentum or train longer so the moving averages forget their initial values."),
        numbers,
    )


def stale_initial_values(data: RunData) -> Finding | None:
    """How much of the initial moving values (mean 0, variance 1) survives: mᵗ."""
    if not _has_bn(data):
        return None
    m, t = data.run.config.arch.bn.momentum, _steps_trained(data)
    if t == 0:
        return None
    weight, window = float(init_weight(m, t)), ema_window(m)
    numbers = {"momentum": m, "steps": t, "init_weight": weight, "window": window, "half_life": half_life(m), "steps_to_1pct": steps_to_forget(m)}
    text = (f"After {t} steps with {momentum_text(m)}, the moving mean and variance still carry {weight:.0%} of their "
            f"initial values (mean 0, variance 1): weight mᵗ = {m:g}^{t}. The average spans about {window:.0f} batches "
            f"(half-life {half_life(m):.0f} steps); the initial weight drops below 1 % only after {steps_to_forget(m):.0f} steps.")
    if weight < 0.01:
        return Finding("stale_initial_values", "ok", "The moving averages have forgotten their initial values", text, (), numbers)
    suggested = suggest_momentum(t)
    severity = "critical" if weight >= 0.1 else "warning"
    return Finding(
        "stale_initial_values", severity, "The moving statistics still remember their initial values", text,
        (f"Lower the momentum to {suggested:g} (PyTorch: {torch_momentum(suggested):g}) or less: its initial weight after {t} steps is below 1 %.",
         f"Train for at least {steps_to_forget(m):.0f} steps at {momentum_text(m)}.",
         "Recalibrate the BN statistics (PreciseBN) after training."),
        numbers,
    )


def layer_statistics(data: RunData) -> list[Finding]:
    """Per BN layer: moving mean vs population mean in population SDs, and the variance ratio."""
    findings = []
    for name, trace in data.layers.items():
        i = -1
        gap = float(np.median(standardized_gap(trace.moving_mean[i], trace.pop_mean[i], trace.pop_var[i])))
        ratio = float(np.median(variance_ratio(trace.moving_var[i], trace.pop_var[i])))
        numbers = {"mean_gap_sd": gap, "variance_ratio": ratio, "step": int(trace.steps[i])}
        severity = "critical" if gap > 1 or not 0.5 <= ratio <= 2 else "warning" if gap > 0.25 or not 0.8 <= ratio <= 1.25 else "ok"
        findings.append(Finding(
            f"layer_{name}", severity, f"{name}: moving vs population statistics",
            f"At step {int(trace.steps[i])}, {name}'s moving mean is {gap:.2f} population standard deviations from the "
            f"population mean and its moving variance is {ratio:.3g}× the population variance (medians over "
            f"{trace.moving_mean.shape[1]} channels). Inference normalises this layer's input with these moving values: "
            f"{_scale_effect(ratio)}.",
            ("Recalibrate (PreciseBN) to replace the moving values by the population statistics.",) if severity != "ok" else (),
            numbers,
        ))
    return findings


def _scale_effect(ratio: float) -> str:
    """What a moving/population variance ratio does to the normalised output."""
    factor = float(np.sqrt(ratio))
    if factor >= 1:
        return f"it divides by a standard deviation {factor:.3g}× too large, squashing the output"
    return f"it divides by a standard deviation {1 / factor:.3g}× too small, blowing the output up"


def data_regime(data: RunData) -> Finding | None:
    """How far the first BN layer's population statistics sit from the initial moving values 0 and 1:
    the error of the moving statistics is about mᵗ·(initial − population), so far means fragile."""
    if not data.layers:
        return None
    trace = next(iter(data.layers.values()))
    offset = float(np.median(np.abs(trace.pop_mean[-1]) / np.sqrt(np.maximum(trace.pop_var[-1], 1e-12))))
    variance = float(np.median(trace.pop_var[-1]))
    far = offset > 0.5 or not 0.1 <= variance <= 10
    detail = (f"The first BN layer's input has a population mean {offset:.2f} standard deviations from 0 and a variance of "
              f"{variance:.3g} (medians over channels), against the initial moving values 0 and 1. The moving statistics are off "
              "by about mᵗ·(initial − population), so ")
    if far:
        detail += ("this run's data sits far from them: while the initial values linger, inference normalises with a mean and a "
                   "variance that belong to no data.")
    else:
        detail += "this run's data sits close to them: lingering initial values cost little."
    return Finding("data_regime", "info", "How far the data sits from the initial moving values", detail, (),
                   {"mean_offset_sd": offset, "variance": variance, "far": float(far)})


def batch_noise(data: RunData) -> Finding | None:
    """How noisy the batch statistics are at this batch size (the third error of the moving average)."""
    if not data.layers:
        return None
    noise = []
    for trace in data.layers.values():
        later = trace.steps > 0
        if later.sum() < 3:
            return None
        sd = np.sqrt(np.maximum(trace.pop_var[later], 1e-12))
        noise.append(float(np.nanmedian(np.nanstd((trace.batch_mean[later] - trace.pop_mean[later]) / sd, axis=0))))
    worst = max(noise)
    b = data.run.config.batch_size
    if worst < 0.1:
        return None
    return Finding("batch_noise", "warning" if worst >= 0.3 else "info", "Batch statistics are noisy at this batch size",
                   f"At batch size {b}, a batch's mean of a BN input varies by {worst:.2f} population standard deviations "
                   "between batches (worst layer, median channel). Small momenta track this noise; large ones average it out.",
                   ("Double the batch size.", "Keep a moderate momentum (0.9) instead of a very small one."),
                   {"noise_sd": worst, "batch_size": b})


def data_shift(data: RunData) -> Finding | None:
    """A shift between training and validation pixels is a data problem, not a BN one."""
    shift = data.run.info.get("data_shift")
    if not shift:
        return None
    d = abs(shift["val_pixel_mean"] - shift["train_pixel_mean"]) / max(shift["train_pixel_std"], 1e-6)
    if d < 0.2:
        return None
    return Finding("data_shift", "warning", "Training and validation images differ",
                   f"The validation pixels' mean differs from the training pixels' by {d:.2f} training standard deviations. "
                   "Population statistics learned on training data will not fit the validation data: a data problem, not a BN one.",
                   ("Check how the splits were made; shuffle before splitting.",), {"shift_sd": d})


def dropout_before_bn(data: RunData) -> Finding | None:
    """Dropout feeding a BN layer shifts the variance between training and inference."""
    kinds = [row["type"] for row in data.run.info.get("layers", [])]
    first_dropout = next((i for i, kind in enumerate(kinds) if kind == "Dropout"), None)
    if first_dropout is None or "BatchNormalization" not in kinds[first_dropout + 1 :]:
        return None
    return Finding("dropout_before_bn", "warning", "Dropout comes before BatchNormalization",
                   "A Dropout layer feeds a BN layer: in training BN sees the variance with dropout, at inference without it "
                   "(the variance shift), so the moving variance does not fit inference.",
                   ("Move Dropout after the last BN layer, or remove it.",), {})


def never_moved(data: RunData) -> Finding | None:
    """Moving statistics stuck at their initial values: a custom loop without training=True, or a frozen layer."""
    if not data.layers or _steps_trained(data) == 0:
        return None
    cfg = data.run.config.arch.bn
    stuck = []
    for name, trace in data.layers.items():
        if len(trace.steps) < 2:
            return None
        if np.allclose(trace.moving_mean[-1], trace.moving_mean[0]) and np.allclose(trace.moving_var[-1], trace.moving_var[0]):
            stuck.append(name)
    if not stuck or cfg.momentum >= 1:
        return None if not stuck else Finding("never_moved", "critical", "Momentum 1 freezes the moving statistics",
                                              f"With {momentum_text(cfg.momentum)} the moving statistics never change.", ("Use momentum 0.9–0.99.",), {})
    return Finding("never_moved", "critical", "The moving statistics never moved",
                   f"{', '.join(stuck)} still hold their initial moving values after {_steps_trained(data)} steps. In Keras this "
                   "happens when a custom training loop calls the model without training=True, or when the layer is frozen "
                   "(trainable=False makes BN run in inference mode).",
                   ("Call the model with training=True in custom loops.", "Unfreeze the BN layers, or recalibrate them (PreciseBN)."),
                   {"layers_stuck": len(stuck)})


def fit_vs_evaluate(data: RunData) -> Finding | None:
    """The report so many Keras users file: fit says 0.99, evaluate on the same data says 0.5."""
    acc = _final(data)
    if acc is None or "train" not in acc or not len(data.steps):
        return None
    fit_acc = float(data.steps["accuracy"].iloc[-1])
    gap = fit_acc - acc["train"]
    if gap < GAP_WARNING * 2:
        return None
    return Finding("fit_vs_evaluate", "critical" if gap >= GAP_CRITICAL else "warning", "fit and evaluate disagree on the same training data",
                   f"fit reported {fit_acc:.2f} accuracy during the last epoch, but evaluate on the same training images gives "
                   f"{acc['train']:.2f}. fit normalises each batch with its own statistics; evaluate uses the moving statistics. "
                   "The model did not forget anything between the two calls.",
                   ("See the inference vs batch-statistics gap above; fix the moving statistics, not the model.",),
                   {"fit_accuracy": fit_acc, "evaluate_accuracy": acc["train"]})


def model_notes(data: RunData) -> Finding | None:
    """What bnviz knows only about a model it did not build (bnviz.Probe, bnviz inspect): frozen BN
    layers, an unknown training history. The notes are written with the run (`info["notes"]`)."""
    notes = data.run.info.get("notes") or []
    if not notes:
        return None
    return Finding("model_notes", "info", "About this model", " ".join(notes), (), {"frozen_bn_layers": sum(
        1 for layer in data.run.info.get("bn_layers", []) if not layer.get("trainable", True))})


def verdict(findings: list[Finding], data: RunData) -> Finding:
    """The bottom line: BN is the cause, or it is not (and what to look at instead)."""
    acc = _final(data)
    if any(f.key in ("mode_gap", "never_moved") and f.severity == "critical" for f in findings):
        return Finding("verdict", "critical", "Verdict: BatchNormalization's running statistics cause the collapse",
                       "The weights classify well with batch statistics; inference fails because of the moving statistics.",
                       ("Recalibrate now (no retraining), then lower the momentum for the next run.",), {})
    if not _has_bn(data):
        detail = "This model has no BatchNormalization layer, so train and inference modes differ only by dropout."
    else:
        detail = "Inference and batch-statistics accuracy agree: the moving statistics are fine."
    remedies: tuple[str, ...] = ()
    if acc and acc.get("train", 0.0) - acc.get("val", 1.0) > 0.1:
        detail += f" Train accuracy {acc['train']:.2f} against val {acc['val']:.2f} points to overfitting."
        remedies = ("Add data augmentation or dropout, or use fewer parameters.",)
    return Finding("verdict", "ok", "Verdict: BN is not the cause", detail, remedies, {})


CHECKS: tuple[Callable[[RunData], Finding | None], ...] = (
    mode_gap, fit_vs_evaluate, stale_initial_values, never_moved, data_regime, batch_noise, data_shift, dropout_before_bn, model_notes,
)


def diagnose(data: RunData) -> list[Finding]:
    """All findings, the verdict first, then by severity (critical first)."""
    findings = [f for check in CHECKS if (f := check(data)) is not None] + layer_statistics(data)
    ranked = sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
    return [verdict(ranked, data), *ranked]


def as_text(findings: list[Finding]) -> str:
    """Plain-text rendering for the CLI and reports."""
    lines = []
    for f in findings:
        lines.append(f"[{f.severity.upper()}] {f.title}\n  {f.detail}")
        lines += [f"  → {r}" for r in f.remedies]
    return "\n".join(lines)
