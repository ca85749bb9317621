"""The top of a diagnosis, as data: the big figures under the verdict and the one-line fix. The
Diagnose page shows them as metrics and a notebook as HTML (bnviz.notebook); both come from here.
No Streamlit, TensorFlow or Keras."""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go

from bnviz import figures
from bnviz.diagnose import BN_CAUSES, Evidence, Finding, LayerFigures, all_layer_figures, fingerprint, steps_known
from bnviz.glossary import GLOSSARY
from bnviz.records import Run, RunData
from bnviz.stats import init_weight

SCALE_HELP = GLOSSARY["scale error"] + " Against the input inference really feeds the layer (else the training-mode population)."
FINGERPRINT_HELP = (
    "A saved model's training steps are unknown: w is the share of the initial values (0 and 1) that fits its moving "
    "statistics best, moving ≈ w·initial + (1 − w)·population (see the finding on initial values)."
)
RETRAIN_CAUSES = ("non_iid_batches", "dropout_before_bn")  # fixed by changing how the model trains, not by new statistics


@dataclass(frozen=True)
class Headline:
    """One big figure: what it is, its value as shown, an optional note under it (`signed`: a change,
    coloured by its sign), and a tooltip."""

    label: str
    value: str
    note: str | None = None
    help: str = ""
    signed: bool = False


def inspected(run: Run) -> bool:
    """A saved model inspected after the fact: no training history (steps, fit, mᵗ over time)."""
    return run.info.get("source") == "inspect"


def worst_layer(data: RunData) -> LayerFigures | None:
    """The BN layer whose scale error is furthest from 1 (inference's figure where stored)."""

    def off(f: LayerFigures) -> float:
        return max(f.scale, 1 / f.scale) if math.isfinite(f.scale) and f.scale > 0 else -1.0

    layers = all_layer_figures(data) if data.layers else []
    return max(layers, key=off, default=None)


def percent(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else "–"


def _shown(ev: Evidence | None, value: float) -> str:
    """A score as the row shows it: accuracy in percent, else the loss itself; "–" where not measured."""
    return ev.metric.show(value) if ev is not None and ev.metric.is_loss and math.isfinite(value) else percent(value)


def _last_fit(data: RunData) -> float:
    """fit's accuracy at the last step row; NaN without one (a saved model, a loss-only model)."""
    value = data.steps["accuracy"].iloc[-1] if len(data.steps) else None
    return math.nan if value is None else float(value)


def _initial_values(data: RunData, ev: Evidence | None) -> Headline:
    """mᵗ after the steps taken (or the count the user gave); for a saved model without one, the w its
    statistics' fingerprint fits."""
    t = steps_known(data)
    if t is None:
        return Headline("initial values left, w (fingerprint)", percent(fingerprint(data)[0]), help=FINGERPRINT_HELP)
    weight = ev.init_weight if ev else (float(init_weight(data.run.momentum, t)) if data.run.config.arch.has_moving_stats else math.nan)
    shown = percent(weight) if weight >= 0.001 or not math.isfinite(weight) else "< 0.1%"
    return Headline("initial values left, mᵗ", shown, help=GLOSSARY["mᵗ"])


def _worst_scale(worst: LayerFigures) -> Headline:
    """The worst layer's scale error, at inference where measured, else against the population."""
    where = "at inference" if math.isfinite(worst.infer_scale) else "vs the population"
    return Headline("worst scale error", f"{worst.scale:.3g}×", f"{worst.name}, {where}", SCALE_HELP)


def headline_figures(data: RunData, ev: Evidence | None) -> list[Headline]:
    """Fit vs evaluate on the training images, held-out accuracy (the loss where targets are not
    classes), the initial values left, the worst scale error. A saved model has no fit to show."""
    fit, train = (ev.fit, ev.train) if ev else (_last_fit(data), math.nan)
    points = math.isfinite(train * fit) and not (ev and ev.metric.is_loss)
    cells = [] if inspected(data.run) else [Headline("train (fit)", _shown(ev, fit), help=GLOSSARY["train (fit)"])]
    cells.append(
        Headline(
            "train (evaluate)", _shown(ev, train), f"{100 * (train - fit):+.1f} points vs fit" if points else None, GLOSSARY["train (evaluate)"], signed=True
        )
    )
    if ev:
        cells.append(Headline(f"{ev.split} (evaluate)", _shown(ev, ev.inference), help=f"Held-out {ev.metric.name} in inference mode."))
    cells.append(_initial_values(data, ev))
    if (worst := worst_layer(data)) is not None:
        cells.append(_worst_scale(worst))
    return cells


def history_figures(data: RunData, height: int = 420, scale: float = 1.0, width: float | None = None) -> dict[str, go.Figure]:
    """The symptom (training curves, "curves") and the cause (mᵗ over the steps, "theory"), as the top of
    Diagnose draws them, their text laid out for charts `width` px wide (side by side: about half a
    page); a saved model has no curves, and mᵗ only after the step count its user gave."""
    shown = {} if inspected(data.run) else {"curves": figures.training_curves(data, height=height, scale=scale, width=width)}
    if data.run.config.arch.has_moving_stats and (steps := steps_known(data)) is not None:
        shown["theory"] = figures.ema_theory_figure(data.run.momentum, steps, height=height, scale=scale, width=width)
    return shown


def fix_line(top: Finding, recalibrate_call: str = "run.recalibrate()") -> str | None:
    """The first thing to do, in one line: the verdict's first remedy, and for wrong BN statistics that
    `recalibrate_call` repairs the model without retraining. None when nothing is wrong."""
    if top.severity not in ("critical", "warning") or not top.remedies:
        return None
    first = top.remedies[0]
    if top.cause in BN_CAUSES and top.cause not in RETRAIN_CAUSES:
        return f"{first} Now, without retraining: `{recalibrate_call}` (PreciseBN)."
    return first
