"""Plotly figures of stored run data: pure functions, `RunData` in, `go.Figure` out.

Conventions every figure keeps, so a reader learns them once:
- training mode (batch statistics) is vermillion and dotted, inference mode (moving statistics) is
  blue and solid, the population (PreciseBN) statistic is green and dashed;
- comparisons of several runs give each run one colour and keep the dash for the mode;
- a figure with nothing to show is an empty figure whose annotation says why (never an exception).

No Streamlit, TensorFlow or Keras here: the dashboard and the HTML report both call these.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from bnviz import figlayout, stats
from bnviz.diagnose import LAYER_GAP, LAYER_SCALE, all_layer_figures, layer_figures, ranked_layers
from bnviz.labels import unique_labels
from bnviz.records import LayerTrace, RunData

# Okabe–Ito colours (safe for the common colour-vision deficiencies).
TRAIN_COLOUR = "#D55E00"  # vermillion: training mode, batch statistics
INFER_COLOUR = "#0072B2"  # blue: inference mode, moving statistics
POP_COLOUR = "#009E73"  # bluish green: population statistics (what inference should use)
FIT_COLOUR = "#444444"  # what `fit` reports
RUN_COLOURS = ("#000000", "#E69F00", "#CC79A7", "#56B4E9", "#009E73", "#999999", "#0072B2", "#D55E00")
TRAIN_DASH, INFER_DASH, POP_DASH = "dot", "solid", "dash"

TRAIN_LABEL = "training mode (batch statistics)"
INFER_LABEL = "inference mode (moving statistics)"
POP_LABEL = "population (PreciseBN)"
FIT_LABEL = "fit: running epoch mean (training mode)"
SPLITS = ("train", "val", "test")
FIT_COLUMN = "train (fit)"  # what fit reported: batch statistics, running mean over the last epoch
ACCURACY_COLUMNS = (FIT_COLUMN, *(f"{s} (evaluate)" for s in SPLITS), *(f"{s} (batch stats)" for s in SPLITS))  # evaluate: inference mode

BASE_FONT, TITLE_FONT, LEGEND_FONT = 13, 16, 12  # px on screen; `scale` multiplies them (presentation layout: 2)
PRESENTATION_SCALE = 2.0  # the dashboard's presentation layout: text twice the screen size, for a projector
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(
    font=dict(family="Inter, 'Segoe UI', Helvetica, Arial, sans-serif", size=BASE_FONT, color="#222222"),
    colorway=RUN_COLOURS,
    title=dict(x=0.01, xanchor="left", font=dict(size=TITLE_FONT)),
    legend=dict(orientation="h", yref="container", y=0.005, yanchor="bottom", xanchor="left", x=0, font=dict(size=LEGEND_FONT)),
    margin=dict(l=70, r=30, t=90, b=60),
    hoverlabel=dict(namelength=-1),
)
TEMPLATE.layout.xaxis.update(showline=True, linecolor="#888888", ticks="outside", zeroline=False)
TEMPLATE.layout.yaxis.update(showline=True, linecolor="#888888", ticks="outside", zeroline=False)
TEMPLATE_NAME = "bnviz"
pio.templates[TEMPLATE_NAME] = TEMPLATE  # registered, so a process that draws only bnviz's figures can make it the default


def use_as_default_template() -> None:
    """Make TEMPLATE plotly's default in this process: figures then take it as plotly applies its default,
    unvalidated, where assigning it validates every property (~8 ms a figure; the dashboard's server, which
    draws nothing else). A library user's process keeps its own default: each figure sets TEMPLATE."""
    pio.templates.default = TEMPLATE_NAME


def frozen(built: object) -> object:
    """`built` (a figure, or a dict or tuple holding figures), each figure made to keep the dict it
    converts to: `to_dict` deep-copies the figure, and the dashboard's server converts a figure it shares
    for every session's rerun (~1 ms per 10 KB). Only for figures no one modifies again."""
    parts = built.values() if isinstance(built, dict) else built if isinstance(built, (tuple, list)) else [built]
    for fig in parts:
        if isinstance(fig, go.Figure):
            object.__setattr__(fig, "to_dict", functools.cache(fig.to_dict))  # plotly's setattr takes figure properties only
    return built


# --- shared helpers -------------------------------------------------------------------------
def _text(value: object) -> str:
    """Escape a user string (run name, layer) for Plotly's HTML-like labels."""
    return html.escape(str(value), quote=False)


def _style(fig: go.Figure, title: str, subtitle: str = "", height: int = 460, scale: float = 1.0, width: float | None = None, **layout: object) -> go.Figure:
    """Apply the shared template, a title that says what the chart shows, the text scale, and room for every
    text at `width` px (bnviz.figlayout.fit: at least `height` × `scale` px tall, taller when the text needs it)."""
    if pio.templates.default != TEMPLATE_NAME:
        layout["template"] = TEMPLATE
    fig.update_layout(height=height, title=dict(text=title, subtitle=dict(text=subtitle)), **layout)
    return figlayout.fit(scale_text(fig, scale), width or figlayout.DEFAULT_WIDTH)


def scale_text(fig: go.Figure, scale: float) -> go.Figure:
    """`fig` with every text (title, subtitle, axes, ticks, legend, annotations and subplot titles)
    `scale` times the template's size, and the margins and height grown to match, so a chart projected in a
    classroom stays readable from the back row (scale 2: 26 px text, 32 px titles). Wrapping and room for the
    wrapped text: bnviz.figlayout.fit, after this."""
    if scale == 1:
        return fig
    margin = TEMPLATE.layout.margin
    fig.update_layout(
        font_size=BASE_FONT * scale,
        title_font_size=TITLE_FONT * scale,
        title_subtitle_font_size=BASE_FONT * scale,
        legend_font_size=LEGEND_FONT * scale,
        margin=dict(l=margin.l * scale, r=margin.r * scale, t=margin.t * scale, b=margin.b * scale),
    )
    if fig.layout.height:
        fig.update_layout(height=round(fig.layout.height * scale))
    for note in fig.layout.annotations:
        note.font.size = (note.font.size or BASE_FONT) * scale
    return fig


def empty_figure(title: str, message: str, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """A blank figure whose centred annotation says why there is nothing to plot."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=16, color="#666666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, title, height=320, scale=scale, width=width)


def _layer_or_message(data: RunData, layer: str) -> LayerTrace | str:
    """The layer's trace, or a sentence saying why there is none."""
    if not data.layers:
        return "No BN probe records yet (the run has no BatchNormalization layer, or has not probed)"
    if layer not in data.layers:
        return f"No probe records for layer {_text(layer)}; this run has: {_text(', '.join(data.layers))}"
    if len(data.layers[layer].steps) == 0:
        return "No probe records yet"
    return data.layers[layer]


def _per_step(values: np.ndarray, channel: int | None) -> np.ndarray:
    """One value per probe step: that channel, or the mean over channels ignoring NaN."""
    values = np.asarray(values, dtype=float)
    if channel is not None:
        return values[:, channel]
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def own_gap_series(data: RunData, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Per probe step, the layer's mean gap and scale error against the training-mode population,
    as bnviz.diagnose defines them (`LayerFigures.own_*`, medians over channels): one definition
    for the findings, the big figures and every chart."""
    trace, eps = data.layers[layer], data.epsilon(layer)
    rows = [layer_figures(trace, eps, i) for i in range(len(trace.steps))]
    return np.array([f.own_mean_gap for f in rows]), np.array([f.own_scale for f in rows])


def _finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop points whose y is NaN (batch statistics do not exist at step 0)."""
    keep = np.isfinite(np.asarray(y, dtype=float))
    return np.asarray(x)[keep], np.asarray(y, dtype=float)[keep]


def _line(x: Sequence, y: Sequence, name: str, colour: str, dash: str = "solid", width: float = 2.5, **kw: object) -> go.Scatter:
    """A line-with-markers trace in the shared style; NaN points are dropped."""
    x, y = _finite(np.asarray(x), np.asarray(y))
    return go.Scatter(x=x, y=y, name=name, mode="lines+markers", line=dict(color=colour, dash=dash, width=width), marker=dict(size=5), **kw)


def _hline(fig: go.Figure, y: float, line: dict, note: str = "", axes: str = "") -> None:
    """A line across the panel of axes x`axes`/y`axes` at `y`, its `note` at the right end: what
    `add_hline` draws, as a plain shape (add_hline spends ~10 ms locating the panel)."""
    fig.add_shape(type="line", xref=f"x{axes} domain", yref=f"y{axes}", x0=0, x1=1, y0=y, y1=y, line=line)
    if note:
        fig.add_annotation(text=note, xref=f"x{axes} domain", yref=f"y{axes}", x=1, y=y, xanchor="right", yanchor="bottom", showarrow=False)


def _vline(fig: go.Figure, x: float, line: dict, note: dict) -> None:
    """A line up the (single) panel at `x` with the annotation `note` beside its top: `add_vline` as a plain shape."""
    fig.add_shape(type="line", xref="x", yref="y domain", x0=x, x1=x, y0=0, y1=1, line=line)
    fig.add_annotation(xref="x", yref="y domain", x=x, showarrow=False, **note)


MAX_LINE_POINTS = 600  # a step curve beyond this is drawn from each stretch's lowest and highest point: the shape at ~700 px, a fifth of the bytes


def _step_line(steps: pd.DataFrame, column: str, name: str, colour: str, **kw: object) -> go.Scatter:
    """`_line` of one column of the step rows, thinned to MAX_LINE_POINTS (`envelope`)."""
    x, y = envelope(*_finite(steps["step"].to_numpy(), steps[column].to_numpy(dtype=float)), MAX_LINE_POINTS)
    return _line(x, y, name, colour, **kw)


def envelope(x: np.ndarray, y: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` points of the line (x, y): each of limit/2 stretches keeps its lowest and highest
    point, in order, so spikes and an epoch's resets stay drawn (plain striding would skip them)."""
    if len(x) <= limit:
        return x, y
    keep = []
    for part in np.array_split(np.arange(len(y)), limit // 2):
        keep.extend(sorted({part[np.argmin(y[part])], part[np.argmax(y[part])]}))
    return x[keep], y[keep]


def _mode_lines(
    steps: Sequence,
    train: Sequence,
    infer: Sequence,
    prefix: str = "",
    colours: tuple[str, str] = (TRAIN_COLOUR, INFER_COLOUR),
    group: str | None = None,
) -> list[go.Scatter]:
    """The same quantity in training mode (dotted) and inference mode (solid)."""
    return [
        _line(steps, train, f"{prefix}{TRAIN_LABEL}", colours[0], TRAIN_DASH, legendgroup=group),
        _line(steps, infer, f"{prefix}{INFER_LABEL}", colours[1], INFER_DASH, legendgroup=group),
    ]


def _percent_axis(fig: go.Figure, row: int | None = None, col: int | None = None, title: str = "accuracy") -> None:
    """An accuracy axis from 0 to 100 %."""
    fig.update_yaxes(title_text=title, range=[0, 1.02], tickformat=".0%", row=row, col=col)


def _log_axis(fig: go.Figure, row: int, title: str) -> None:
    """A log y axis; ticks only at powers of ten when the data span one, so labels stay unambiguous."""
    values = np.concatenate([np.asarray(t.y, dtype=float) for t in fig.select_traces(row=row, col=1) if t.y is not None] or [np.ones(1)])
    values = values[np.isfinite(values) & (values > 0)]
    decades = np.log10(values.max() / values.min()) if values.size else 0.0
    fig.update_yaxes(title_text=title, type="log", dtick=1 if decades >= 1 else None, row=row, col=1)


def _run_colour(index: int) -> str:
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def _chance(data: RunData) -> float | None:
    """1 / number of classes, when the run recorded its classes."""
    classes = (data.run.info or {}).get("data", {}).get("classes") or []
    return 1.0 / len(classes) if classes else None


def _probe_accuracies(data: RunData, step: int) -> str:
    """'training mode 62 % · inference mode 18 %' at `step`, or '' when not probed then."""
    rows = data.probes[data.probes["step"] == step] if len(data.probes) else data.probes
    if not len(rows):
        return ""
    return f"probe {_modes_text(rows.iloc[-1], ' · ')}"


def _modes_text(row, joiner: str) -> str:
    """A probe record's two modes: accuracy in percent, or the loss where the targets are not classes (accuracy NaN)."""
    if np.isfinite(row["acc_train_mode"]):
        return f"accuracy: training mode {row['acc_train_mode']:.0%}{joiner}inference mode {row['acc_inference']:.0%}"
    return f"loss: training mode {row['loss_train_mode']:.3g}{joiner}inference mode {row['loss_inference']:.3g}"


# --- one run ----------------------------------------------------------------------------------
def activation_histograms(data: RunData, layer: str, probe_index: int = -1, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Histograms of one BN layer's output on the validation probe batch in both modes at one probe
    step: where the two differ, inference feeds the next layer numbers it never saw in training."""
    trace = _layer_or_message(data, layer)
    title = f"{_text(layer)}: BN output in training vs inference mode"
    if isinstance(trace, str):
        return empty_figure(title, trace, scale=scale, width=width)
    index = int(np.clip(probe_index if probe_index >= 0 else len(trace.steps) + probe_index, 0, len(trace.steps) - 1))
    step = int(trace.steps[index])
    edges = np.asarray(trace.hist_edges[index], dtype=float)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    modes = ((trace.hist_train[index], TRAIN_LABEL, TRAIN_COLOUR), (trace.hist_infer[index], INFER_LABEL, INFER_COLOUR))
    fig = make_subplots(rows=1, cols=2, shared_xaxes=True, horizontal_spacing=0.08, subplot_titles=[name for _, name, _ in modes])
    for col, (counts, name, colour) in enumerate(modes, start=1):
        fig.add_bar(
            x=centres,
            y=counts,
            width=widths,
            name=name,
            marker=dict(color=colour, line=dict(width=0)),
            customdata=np.stack([edges[:-1], edges[1:]], axis=1),
            hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y} values<extra>" + name + "</extra>",
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="BN output value", row=1, col=col)
    fig.update_layout(bargap=0, hovermode="closest", showlegend=False)
    fig.update_yaxes(title_text="number of values", row=1, col=1)
    subtitle = f"side by side, each with its own count axis; end bins hold the values beyond them · {_probe_accuracies(data, step)}"
    return _style(fig, f"{_text(layer)} output on the validation probe batch {_when(data, step)}", subtitle, scale=scale, width=width)


def _when(data: RunData, step: int) -> str:
    """'at step 114', or 'in the saved model' for an inspected model (its one record has no step of its own)."""
    return "in the saved model" if data.run.info.get("source") == "inspect" else f"at step {step}"


def drift_figure(data: RunData, layer: str, channel: int | None = None, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Moving mean/variance against the training batch's and the population's over the steps: the
    moving statistics start at 0 and 1 and close only a (1 − mᵗ) share of the distance."""
    trace = _layer_or_message(data, layer)
    where = "mean over channels" if channel is None else f"channel {channel}"
    title = f"{_text(layer)} ({where}): moving statistics vs batch and population statistics"
    if isinstance(trace, str):
        return empty_figure(title, trace, scale=scale, width=width)
    channels = trace.moving_mean.shape[1]
    if channel is not None and not 0 <= channel < channels:
        return empty_figure(title, f"Layer {_text(layer)} has channels 0 to {channels - 1}; received channel {channel}", scale=scale, width=width)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=("mean of the BN input", "variance of the BN input (log scale)"),
    )
    for row, (moving, batch, pop) in enumerate(
        ((trace.moving_mean, trace.batch_mean, trace.pop_mean), (trace.moving_var, trace.batch_var, trace.pop_var)), start=1
    ):
        lines = (
            _line(trace.steps, _per_step(batch, channel), "training batch (used in training mode)", TRAIN_COLOUR, TRAIN_DASH),
            _line(trace.steps, _per_step(moving, channel), "moving average (used in inference mode)", INFER_COLOUR, INFER_DASH),
            _line(trace.steps, _per_step(pop, channel), f"{POP_LABEL}: what inference should use", POP_COLOUR, POP_DASH),
        )
        for line in lines:
            line.update(legendgroup=line.name, showlegend=row == 1)
            fig.add_trace(line, row=row, col=1)
    fig.update_yaxes(title_text="mean", row=1, col=1)
    _log_axis(fig, 2, "variance")
    fig.update_xaxes(title_text="training step" if data.run.info.get("source") != "inspect" else "the saved model (one record)", row=2, col=1)
    gap, scale_error = own_gap_series(data, layer)
    subtitle = (
        f"momentum {data.run.momentum:g}: after t steps the initial values (0 and 1) still weigh {data.run.momentum:g}ᵗ · "
        f"{_when(data, int(trace.steps[-1]))}, against the population: mean gap {gap[-1]:.3g} SDs, scale error {scale_error[-1]:.3g}× "
        "(medians over channels)"
    )
    measured = len(trace.measured().steps)
    if measured < len(trace.steps):
        subtitle += f" · population measured at {measured} of {len(trace.steps)} probe steps"
    return _style(fig, title, subtitle, height=640, hovermode="x unified", scale=scale, width=width)


THEORY_POINTS = 300


def _theory_steps(momentum: float, steps: int) -> np.ndarray:
    """Integer steps from 0 far enough to show the run's point and the forgetting (≤ THEORY_POINTS: a smooth curve)."""
    forget = stats.steps_to_forget(momentum) if momentum < 1 else 2 * max(steps, 10)
    end = int(min(max(1.6 * steps, 1.1 * forget, 20), 100_000))
    return np.unique(np.linspace(0, end, min(end + 1, THEORY_POINTS)).round().astype(int))


def _momentum_name(momentum: float, this_run: bool) -> str:
    """Legend entry: momentum in both conventions, window and half-life."""
    window, half, torch = stats.ema_window(momentum), stats.half_life(momentum), stats.torch_momentum(momentum)
    run = " (this run)" if this_run else ""
    return f"m = {momentum:g}{run} · PyTorch momentum {torch:g} · window {window:.3g} steps · half-life {half:.2g} steps"


def _share(weight: float) -> str:
    """A weight as a percentage with one decimal, '< 0.1%' below that."""
    return f"{weight:.1%}" if weight >= 0.001 else "< 0.1%"


def ema_theory_figure(
    momentum: float, steps_trained: int, compare: Sequence[float] = (0.99, 0.9, 0.8), height: int = 460, scale: float = 1.0, width: float | None = None
) -> go.Figure:
    """Weight mᵗ the initial moving values (mean 0, variance 1) still carry after t steps, for the
    run's momentum and a few others: the share of inference's statistics that is not data."""
    momenta = [float(momentum)]
    momenta += [m for m in dict.fromkeys(float(c) for c in compare) if not np.isclose(m, momentum)]
    t = _theory_steps(float(momentum), int(steps_trained))
    fig = go.Figure()
    colours = iter(RUN_COLOURS[1:])
    for i, m in enumerate(momenta):
        this = i == 0
        fig.add_scatter(
            x=t,
            y=stats.init_weight(m, t),
            name=_momentum_name(m, this),
            mode="lines",
            line=dict(color=RUN_COLOURS[0] if this else next(colours), width=4.5 if this else 2, dash="solid" if this else "dash"),
        )
    remaining = float(stats.init_weight(momentum, steps_trained))
    fig.add_scatter(x=[steps_trained], y=[remaining], mode="markers", marker=dict(size=11, color=RUN_COLOURS[0]), showlegend=False, hoverinfo="skip")
    _vline(
        fig,
        steps_trained,
        dict(color="#666666", dash="dot"),
        dict(text=f"after {steps_trained} steps: {_share(remaining)} left", xanchor="left", yanchor="top", y=0.97, bgcolor="rgba(255,255,255,0.8)"),
    )
    _hline(fig, 0.01, dict(color="#999999", width=1, dash="dot"), "1 %")
    fig.update_xaxes(title_text="training steps t (moving-average updates)")
    fig.update_yaxes(title_text="weight of the initial value, mᵗ", range=[0, 1.02], tickformat=".0%")
    fig.update_layout(hovermode="x unified")  # the template's legend: below the plot, where long names fit
    subtitle = "moving = m·moving + (1 − m)·batch, starting from mean 0 and variance 1"
    return _style(fig, "The cause: initial values left, mᵗ", subtitle, height=height, scale=scale, width=width)


def channel_gap_figure(data: RunData, layer: str, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Heatmap channel × probe step of |moving mean − population mean| / √(population variance + ε)
    (the units BN divides by): which channels inference mis-centres, and how slowly the error shrinks."""
    trace = _layer_or_message(data, layer)
    title = f"{_text(layer)}: error of the moving mean, per channel, in population standard deviations"
    if isinstance(trace, str):
        return empty_figure(title, trace, scale=scale, width=width)
    trace = trace.measured()  # the records between carry no population
    gap = stats.standardized_gap(trace.moving_mean.astype(float), trace.pop_mean.astype(float), trace.pop_var.astype(float), data.epsilon(layer))
    fig = go.Figure(
        go.Heatmap(
            x=trace.steps,
            y=np.arange(gap.shape[1]),
            z=gap.T,
            colorscale="Viridis",
            zmin=0,
            colorbar=dict(title=dict(text="mean gap (population SDs)", side="right")),
            hovertemplate="step %{x}, channel %{y}: %{z:.2f} std<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="training step (records that measured the population, evenly spaced)", type="category")
    fig.update_yaxes(title_text="channel", autorange="reversed")
    return _style(
        fig, title, "0 = inference centres this channel exactly as the population does", height=max(360, 160 + 14 * gap.shape[1]), scale=scale, width=width
    )


OVERVIEW_ROW_PX, OVERVIEW_ROWS = 20, 60  # px per layer at scale 1 (a line of tick text), and the rows the height grows for (ResNet50: 53)
OFF_SCALE = 4.0  # the colour saturates at 4 warning thresholds (a mean gap of 1 SD: critical)


def layer_overview_figure(data: RunData, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Every BN layer in network order, one row each, at the last record: the mean gap of its moving mean and
    the scale error of its moving variance against what inference really feeds it (the training-mode
    population where that was not measured), coloured in units of each one's warning threshold
    (bnviz.diagnose.LayerFigures.off_parts): which of a network's 53 layers to look at first."""
    title = "Every BN layer at inference: how far its moving statistics are off"
    if not data.layers:
        return empty_figure(title, "No BN probe records yet (the run has no BatchNormalization layer, or has not probed)", scale=scale, width=width)
    rows = all_layer_figures(data)
    rank = {f.name: i for i, f in enumerate(ranked_layers(rows), start=1)}
    names = [_text(f.name) for f in rows]
    where = {True: "against the input inference feeds it", False: "against the training-mode population (inference not measured)"}
    custom = [[[f.mean_gap, f.scale, rank[f.name], where[np.isfinite(f.infer_scale)]]] * 2 for f in rows]
    fig = go.Figure(
        go.Heatmap(
            z=[f.off_parts for f in rows],
            x=["mean gap", "scale error"],
            y=names,
            customdata=custom,
            zmin=0,
            zmax=OFF_SCALE,
            colorscale="YlOrRd",
            colorbar=dict(title=dict(text="× the warning threshold", side="right"), tickvals=[0, 1, 2, 3, 4], ticktext=["0", "1", "2", "3", "≥ 4"]),
            hovertemplate="%{y}<br>mean gap %{customdata[0]:.3g} SDs · scale error %{customdata[1]:.3g}×<br>"
            f"rank %{{customdata[2]}} of {len(rows)} (furthest off first), %{{customdata[3]}}<extra></extra>",
            xgap=2,
            ygap=1,
        )
    )
    fig.update_xaxes(showline=False, ticks="")
    fig.update_yaxes(type="category", autorange="reversed", showline=False, ticks="", title_text="BN layer (network order)")
    worst = ", ".join(_text(f.name) for f in ranked_layers(rows)[:3] if np.isfinite(f.off) and f.off > 1)
    units = f"colour: × the warning threshold ({LAYER_GAP[0]:g} SDs, {LAYER_SCALE[0]:g}×); {len(rows)} layers at step {rows[0].step}"
    subtitle = f"{units}; furthest off: {worst}" if worst else f"{units}: none off"
    height = 200 + OVERVIEW_ROW_PX * min(len(rows), OVERVIEW_ROWS)
    return _style(fig, title, subtitle, height=height, scale=scale, width=width)


def training_curves(data: RunData, height: int = 620, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Loss and accuracy per step as `fit` reports them, with the probe accuracy in both modes:
    the gap between the two modes opening while `fit` looks fine is the BN collapse."""
    title = "The symptom: fit climbs, inference stays behind"
    if not len(data.steps) and not len(data.probes):
        return empty_figure(title, "No training steps recorded yet", scale=scale, width=width)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=(0.4, 0.6), subplot_titles=("loss", "accuracy"))
    if len(data.steps):
        for row, column in ((1, "loss"), (2, "accuracy")):
            fit = _step_line(data.steps, column, FIT_LABEL, FIT_COLOUR, width=2, legendgroup="fit", showlegend=row == 1)
            fig.add_trace(fit, row=row, col=1)
    if len(data.probes):
        for line in _mode_lines(data.probes["step"], data.probes["acc_train_mode"], data.probes["acc_inference"], "probe accuracy, "):
            fig.add_trace(line, row=2, col=1)
    if (chance := _chance(data)) is not None:
        _hline(fig, chance, dict(color="#999999", width=1, dash="dot"), "chance", axes="2")
    fig.update_traces(marker=dict(size=4))
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    _percent_axis(fig, row=2, col=1)
    fig.update_xaxes(title_text="training step", row=2, col=1)
    end = data.probes.iloc[-1] if len(data.probes) else None
    last = "" if end is None else f": at step {int(end['step'])} {_modes_text(end, ' vs ')}"
    return _style(fig, title, f"fit vs the probe batch in training and inference mode{last}", height=height, hovermode="x unified", scale=scale, width=width)


def _live_score(data: RunData) -> tuple[str, str, str, str]:
    """(fit column, probe training-mode column, probe inference column, axis title): accuracy, else
    the loss where the run records no accuracy (targets that are not classes)."""
    if len(data.steps) and data.steps["accuracy"].notna().any():
        return "accuracy", "acc_train_mode", "acc_inference", "accuracy"
    return "loss", "loss_train_mode", "loss_inference", "loss"


def live_figure(data: RunData, total_steps: int | None = None, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """A training run as it goes, small enough to redraw every few seconds: fit's score and the probe
    batch in both modes (left), mᵗ over the whole run with the current step marked (right)."""
    step = data.steps_trained
    fit_column, train_column, infer_column, axis = _live_score(data)
    fig = make_subplots(
        rows=1, cols=2, column_widths=(0.6, 0.4), horizontal_spacing=0.1, subplot_titles=(f"{axis}: fit vs the probe batch", "initial values left, mᵗ")
    )
    if len(data.steps):
        fig.add_trace(_step_line(data.steps, fit_column, FIT_LABEL, FIT_COLOUR, width=1.5), row=1, col=1)
    if len(data.probes):
        for line in _mode_lines(data.probes["step"], data.probes[train_column], data.probes[infer_column], "probe, "):
            fig.add_trace(line.update(mode="lines+markers"), row=1, col=1)
    if axis == "accuracy":
        _percent_axis(fig, row=1, col=1)
    if data.run.config.arch.has_moving_stats:
        m = data.run.momentum
        t = np.unique(np.linspace(0, max(total_steps or 0, step, 1), 200).round().astype(int))
        fig.add_trace(_line(t, stats.init_weight(m, t), f"mᵗ at m = {m:g}", RUN_COLOURS[0], width=2), row=1, col=2)
        fig.add_trace(
            go.Scatter(
                x=[step],
                y=[float(stats.init_weight(m, step))],
                mode="markers",
                marker=dict(size=10, color=RUN_COLOURS[0]),
                name=f"now: {_share(float(stats.init_weight(m, step)))}",
            ),
            row=1,
            col=2,
        )
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(title_text="training step")
    total = f"/{total_steps:,}" if total_steps else ""
    last = "" if not len(data.probes) else f" · probe at step {int(data.probes['step'].iloc[-1])}: {_modes_text(data.probes.iloc[-1], ' vs ')}"
    return _style(
        fig,
        f"bnviz · {_text(data.run.label)} · step {step:,}{total}",
        f"{len(data.probes)} probe records{last}",
        height=380,
        scale=scale,
        width=width,
    )


# --- several runs -----------------------------------------------------------------------------
def _run_names(runs: Sequence[RunData]) -> dict[str, str]:
    """Run id → legend name: short and unique among `runs`, no hash id (the id goes in the hover)."""
    return {run_id: _text(label) for run_id, label in unique_labels([d.run for d in runs]).items()}


def _with_id(traces: Sequence[go.Scatter], run_id: str, y_format: str = ".3g") -> Sequence[go.Scatter]:
    """Traces whose hover names the run's id, which legends leave out."""
    for t in traces:
        t.update(hovertemplate=f"%{{fullData.name}}<br>step %{{x}}: %{{y:{y_format}}}<br>run {_text(run_id)}<extra></extra>")
    return traces


def compare_accuracy_figure(runs: Sequence[RunData], scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Probe accuracy of each run in both modes over the steps (colour = run, dash = mode)."""
    title = "Probe accuracy per run: training mode (dotted) vs inference mode (solid)"
    probed = [(i, d) for i, d in enumerate(runs) if len(d.probes)]
    if not probed:
        return empty_figure(title, "No runs selected" if not runs else "No probe records yet", scale=scale, width=width)
    fig, names = go.Figure(), _run_names(runs)
    for i, d in probed:
        colour = _run_colour(i)
        lines = _mode_lines(d.probes["step"], d.probes["acc_train_mode"], d.probes["acc_inference"], f"{names[d.run.id]} · ", (colour, colour), d.run.id)
        fig.add_traces(_with_id(lines, d.run.id, ".1%"))
    _percent_axis(fig, title="probe accuracy (validation batch)")
    fig.update_xaxes(title_text="training step")
    return _style(fig, title, height=500, hovermode="closest", scale=scale, width=width)


def compare_drift_figure(runs: Sequence[RunData], layer: str, scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Per run, how far the moving statistics of one layer are from the population's over steps."""
    title = f"{_text(layer)}: how far each run's moving statistics are from the population's"
    having = [(i, d) for i, d in enumerate(runs) if layer in d.layers and len(d.layers[layer].steps)]
    if not having:
        return empty_figure(title, "No runs selected" if not runs else f"No run has probe records for layer {_text(layer)}", scale=scale, width=width)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=(
            "mean gap: |moving − population mean| / population SD (0 is right; median over channels)",
            "scale error: √((moving + ε)/(population + ε)) (1 is right; median over channels, log scale)",
        ),
    )
    names = _run_names(runs)
    for i, d in having:
        t = d.layers[layer]
        gap, ratio = own_gap_series(d, layer)
        for row, y in ((1, gap), (2, ratio)):
            line = _line(t.steps, y, names[d.run.id], _run_colour(i), legendgroup=d.run.id, showlegend=row == 1)
            fig.add_trace(_with_id([line], d.run.id)[0], row=row, col=1)
    _hline(fig, 1, dict(color="#999999", width=1, dash="dot"), axes="2")
    fig.update_yaxes(title_text="mean gap (population SDs)", rangemode="tozero", row=1, col=1)
    _log_axis(fig, 2, "scale error")
    fig.update_xaxes(title_text="training step", row=2, col=1)
    return _style(fig, title, height=640, hovermode="closest", scale=scale, width=width)


def _accuracy(data: RunData, evaluation: str, split: str) -> float:
    """One stored accuracy (`split` like 'test' or 'test_batchstats'), NaN when missing."""
    found = data.evaluations.get(evaluation)
    return found.accuracy_of(split) if found else float("nan")


def accuracy_frame(runs: Sequence[RunData], evaluation: str = "final") -> pd.DataFrame:
    """The seed notebook's table: one row per run, what fit reported, then train/val/test accuracy
    as evaluate gives it (inference mode) and with batch statistics (NaN where not evaluated yet)."""
    keys = ["fit", *SPLITS, *(f"{s}_batchstats" for s in SPLITS)]
    rows = [[_accuracy(d, evaluation, key) for key in keys] for d in runs]
    names = unique_labels([d.run for d in runs])
    index = pd.Index([names[d.run.id] for d in runs], name="run")
    return pd.DataFrame(rows, index=index, columns=list(ACCURACY_COLUMNS), dtype=float)


def story_table(data: RunData, seed: tuple[float, float, float]) -> pd.DataFrame:
    """One run beside the seed notebook: what fit reported, then every split in both BN modes (the
    seed reported fit's train accuracy and evaluate's val/test, in inference mode)."""
    nan = float("nan")
    rows = {FIT_COLUMN: (_accuracy(data, "final", "fit"), seed[0])}
    rows |= {f"{s} (evaluate)": (_accuracy(data, "final", s), seed[i] if i else nan) for i, s in enumerate(SPLITS)}
    rows |= {f"{s} (batch stats)": (_accuracy(data, "final", f"{s}_batchstats"), nan) for s in SPLITS}
    return pd.DataFrame(rows.values(), index=list(rows), columns=["bnviz", "seed notebook"], dtype=float)


def percent_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as percentage text with "–" where there is no figure: st.dataframe shows a missing
    value as "None" whatever a Styler's na_rep says, and a table for people must not."""
    return frame.map(lambda v: f"{v:.0%}" if np.isfinite(v) else "–")


def final_accuracy_figure(runs: Sequence[RunData], scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Grouped bars per run: val and test accuracy in inference mode vs with batch statistics; a
    large difference means the weights are fine and the moving statistics are not."""
    title = "Final accuracy: inference mode vs batch statistics"
    frame = accuracy_frame(runs).dropna(how="all")
    if frame.empty:
        return empty_figure(title, "No runs selected" if not runs else "No final evaluation yet", scale=scale, width=width)
    labels = [_text(label) for label in frame.index]
    fig = go.Figure()
    for split, pattern in (("val", "/"), ("test", "")):
        for mode, colour, name in (("evaluate", INFER_COLOUR, INFER_LABEL), ("batch stats", TRAIN_COLOUR, TRAIN_LABEL)):
            values = frame[f"{split} ({mode})"]
            fig.add_bar(
                x=labels,
                y=values,
                name=f"{split} · {name}",
                marker=dict(color=colour, pattern=dict(shape=pattern, fillmode="overlay", fgcolor="white")),
                text=[f"{v:.0%}" if np.isfinite(v) else "" for v in values],
                textposition="outside",
                cliponaxis=False,
            )
    # The legend says what the colours and hatching mean; always shown, in the template's place below the plot (a legend
    # above it, at container y > 1, is drawn off the chart by the browser), two entries per row.
    fig.update_layout(barmode="group", bargroupgap=0.08, hovermode="closest", showlegend=True, legend=dict(entrywidthmode="fraction", entrywidth=0.5))
    _percent_axis(fig, title="accuracy")
    return _style(fig, title, "hatched: validation set · plain: test set", height=520, scale=scale, width=width)


# --- sweeps -----------------------------------------------------------------------------------
def _sweep_frame(runs: Sequence[RunData]) -> pd.DataFrame:
    """One row per finished run of a sweep: momentum, batch size, test accuracy in both modes."""
    rows = [
        {
            "momentum": d.run.momentum,
            "batch_size": d.run.config.batch_size,
            "inference": _accuracy(d, "final", "test"),
            "batchstats": _accuracy(d, "final", "test_batchstats"),
        }
        for d in runs
    ]
    frame = pd.DataFrame(rows, columns=["momentum", "batch_size", "inference", "batchstats"])
    return frame.dropna(subset=["inference"]).sort_values(["batch_size", "momentum"])


SWEEP_AXES = ("momentum", "window")  # the x axis of sweep_figure: m itself, or the EMA window 1/(1 − m) on a log axis


def sweep_figure(runs: Sequence[RunData], x_axis: str = "momentum", scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Test accuracy against momentum, inference mode vs batch statistics, one colour per batch
    size: where the two modes part, the moving statistics are what fails. `x_axis="window"` plots
    against the EMA window 1/(1 − m) on a log axis, which spreads 0.9, 0.99 and 0.999 (10, 100 and
    1000 steps) evenly instead of crowding them into the right edge; m = 1 (no window) is left out."""
    title = "Momentum sweep: test accuracy in both BN modes"
    frame = _sweep_frame(runs)
    if x_axis == "window":
        frame = frame[frame["momentum"] < 1].assign(momentum=lambda f: 1 / (1 - f["momentum"]))
    if frame.empty:
        return empty_figure(title, "No finished runs in this sweep yet", scale=scale, width=width)
    fig = go.Figure()
    for i, (batch, rows) in enumerate(frame.groupby("batch_size")):
        colours = (TRAIN_COLOUR, INFER_COLOUR) if frame["batch_size"].nunique() == 1 else (_run_colour(i), _run_colour(i))
        fig.add_traces(_mode_lines(rows["momentum"], rows["batchstats"], rows["inference"], f"batch {batch} · ", colours, f"b{batch}"))
    _percent_axis(fig, title="test accuracy")
    if x_axis == "window":
        fig.update_xaxes(title_text="EMA window 1/(1 − m) in steps (log scale; m = 0.9 → 10, 0.99 → 100)", type="log")
    else:
        fig.update_xaxes(title_text="BN momentum m (Keras; PyTorch uses 1 − m)")
    return _style(fig, title, "dotted: batch statistics · solid: moving statistics (what evaluate uses)", scale=scale, width=width)


def sweep_heatmap(runs: Sequence[RunData], scale: float = 1.0, width: float | None = None) -> go.Figure:
    """Inference-mode test accuracy over momentum × batch size."""
    title = "Momentum × batch size: inference-mode test accuracy"
    frame = _sweep_frame(runs)
    if frame.empty or frame["batch_size"].nunique() < 2:
        return empty_figure(title, "A heatmap needs finished runs with at least two batch sizes", scale=scale, width=width)
    grid = frame.pivot_table(index="batch_size", columns="momentum", values="inference", aggfunc="mean")
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[f"{m:g}" for m in grid.columns],
            y=[str(b) for b in grid.index],
            zmin=0,
            zmax=1,
            colorscale="Cividis",
            colorbar=dict(title=dict(text="test acc", side="right"), tickformat=".0%"),
            text=[[f"{v:.0%}" if np.isfinite(v) else "" for v in row] for row in grid.values],
            texttemplate="%{text}",
        )
    )
    fig.update_xaxes(title_text="BN momentum m", type="category")
    fig.update_yaxes(title_text="batch size", type="category")
    return _style(fig, title, scale=scale, width=width)
