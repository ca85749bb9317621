"""bnviz.figures on hand-made RunData with known numbers and on one real tiny training run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from bnviz import figures as F
from bnviz.config import RunConfig
from bnviz.records import LayerTrace, Run, RunData
from bnviz.store import Evaluation

STEPS = np.array([0, 10, 20])


def make_run(name: str = "synthetic", momentum: float = 0.99, run_id: str = "20260101-000000-abcdef") -> Run:
    config = RunConfig(name=name).with_momentum(momentum)
    return Run(
        id=run_id,
        name=name,
        preset="bn",
        config=config,
        status="done",
        created=0.0,
        started=0.0,
        finished=1.0,
        heartbeat=1.0,
        pid=None,
        error=None,
        steps_per_epoch=10,
        total_steps=20,
        cancel_requested=False,
        sweep=None,
        parent=None,
        model_path=None,
        info={"data": {"classes": ["a", "b", "c", "d"]}},
    )


def make_layer(name: str = "norm1") -> LayerTrace:
    """2 channels, 3 probes: moving mean 0 vs population mean 5 (std 2) → gap 2.5 everywhere."""
    probes, channels, bins = len(STEPS), 2, 4
    batch_mean = np.array([[np.nan, np.nan], [4.0, 6.0], [5.0, 7.0]])
    return LayerTrace(
        layer=name,
        steps=STEPS,
        moving_mean=np.zeros((probes, channels)),
        moving_var=np.array([[1.0, 16.0]] * probes),
        batch_mean=batch_mean,
        batch_var=np.where(np.isnan(batch_mean), np.nan, 4.0),
        pop_mean=np.full((probes, channels), 5.0),
        pop_var=np.full((probes, channels), 4.0),
        hist_edges=np.tile(np.linspace(-2.0, 2.0, bins + 1), (probes, 1)),
        hist_train=np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]),
        hist_infer=np.array([[4, 3, 2, 1], [8, 7, 6, 5], [12, 11, 10, 9]]),
    )


def make_data(name: str = "synthetic", momentum: float = 0.99, run_id: str = "20260101-000000-abcdef", evaluated: bool = True) -> RunData:
    steps = pd.DataFrame({"step": np.arange(1, 21), "epoch": np.repeat([1, 2], 10), "loss": np.linspace(2, 0.5, 20), "accuracy": np.linspace(0.3, 0.99, 20)})
    probes = pd.DataFrame(
        {
            "step": STEPS,
            "epoch": [0, 1, 2],
            "acc_train_mode": [0.25, 0.8, 0.95],
            "acc_inference": [0.25, 0.3, 0.46],
            "loss_train_mode": [1.4, 0.6, 0.2],
            "loss_inference": [1.4, 2.0, 1.8],
        }
    )
    accuracy = {"train": 0.5, "val": 0.44, "test": 0.46, "train_batchstats": 0.99, "val_batchstats": 0.97, "test_batchstats": 0.98}
    evaluations = {"final": Evaluation.from_dict({"accuracy": accuracy, "loss": {}})} if evaluated else {}
    return RunData(run=make_run(name, momentum, run_id), steps=steps, probes=probes, layers={"norm1": make_layer()}, evaluations=evaluations)


def empty_data() -> RunData:
    steps = pd.DataFrame(columns=["step", "epoch", "loss", "accuracy"])
    probes = pd.DataFrame(columns=["step", "epoch", "acc_train_mode", "acc_inference", "loss_train_mode", "loss_inference"])
    return RunData(run=make_run(), steps=steps, probes=probes)


def annotations(fig: go.Figure) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


def by_name(fig: go.Figure) -> dict[str, go.BaseTraceType]:
    return {t.name: t for t in fig.data}


# --- synthetic data with known numbers --------------------------------------------------------
def test_histograms_show_the_stored_counts_on_the_stored_edges():
    data = make_data()
    fig = F.activation_histograms(data, "norm1")
    traces = by_name(fig)
    np.testing.assert_array_equal(traces[F.TRAIN_LABEL].y, [9, 10, 11, 12])
    np.testing.assert_array_equal(traces[F.INFER_LABEL].y, [12, 11, 10, 9])
    np.testing.assert_allclose(traces[F.TRAIN_LABEL].x, [-1.5, -0.5, 0.5, 1.5])
    np.testing.assert_allclose(traces[F.TRAIN_LABEL].width, [1, 1, 1, 1])
    assert traces[F.TRAIN_LABEL].marker.color == F.TRAIN_COLOUR and traces[F.INFER_LABEL].marker.color == F.INFER_COLOUR
    assert "step 20" in fig.layout.title.text
    assert "95%" in fig.layout.title.subtitle.text and "46%" in fig.layout.title.subtitle.text


def test_histograms_at_an_earlier_probe_and_out_of_range_index():
    data = make_data()
    fig = F.activation_histograms(data, "norm1", probe_index=1)
    assert "step 10" in fig.layout.title.text and "80%" in fig.layout.title.subtitle.text
    np.testing.assert_array_equal(by_name(fig)[F.TRAIN_LABEL].y, [5, 6, 7, 8])
    assert "step 20" in F.activation_histograms(data, "norm1", probe_index=99).layout.title.text


def test_drift_averages_channels_and_skips_nan_batch_statistics():
    fig = F.drift_figure(make_data(), "norm1")
    means = [t for t in fig.data if t.yaxis == "y"]
    traces = {t.name.split(" ")[0]: t for t in means}
    np.testing.assert_array_equal(traces["training"].x, [10, 20])  # step 0 has no batch statistics
    np.testing.assert_allclose(traces["training"].y, [5.0, 6.0])
    np.testing.assert_allclose(traces["moving"].y, [0, 0, 0])
    np.testing.assert_allclose(traces["population"].y, [5, 5, 5])
    variances = [t for t in fig.data if t.yaxis == "y2"]
    np.testing.assert_allclose(next(t for t in variances if t.name.startswith("moving")).y, [8.5, 8.5, 8.5])
    assert fig.layout.yaxis2.type == "log"
    assert sum(t.showlegend is not False for t in fig.data) == 3


def test_drift_for_one_channel_and_a_missing_channel():
    fig = F.drift_figure(make_data(), "norm1", channel=1)
    batch = next(t for t in fig.data if t.yaxis == "y" and t.name.startswith("training"))
    np.testing.assert_allclose(batch.y, [6.0, 7.0])
    assert "channel 1" in fig.layout.title.text
    assert "channels 0 to 1" in annotations(F.drift_figure(make_data(), "norm1", channel=5))


def test_gap_heatmap_is_moving_minus_population_in_population_stds():
    fig = F.channel_gap_figure(make_data(), "norm1")
    heat = fig.data[0]
    np.testing.assert_allclose(np.asarray(heat.z), np.full((2, 3), 5 / np.sqrt(4 + 1e-3)))  # |0 − 5| / √(4 + ε)
    np.testing.assert_array_equal(heat.x, STEPS)
    np.testing.assert_array_equal(heat.y, [0, 1])


def test_ema_theory_curve_is_m_to_the_t_with_both_conventions_in_the_legend():
    fig = F.ema_theory_figure(0.99, 40)
    curves = [t for t in fig.data if t.mode == "lines"]
    assert len(curves) == 3  # the run's 0.99 is not repeated from `compare`
    bold = curves[0]
    np.testing.assert_allclose(bold.y, 0.99 ** np.asarray(bold.x))
    assert bold.line.width > curves[1].line.width
    assert "this run" in bold.name and "PyTorch momentum 0.01" in bold.name and "window 100 steps" in bold.name and "half-life 69" in bold.name
    assert "PyTorch momentum 0.2" in curves[2].name and "window 5 steps" in curves[2].name
    assert fig.layout.shapes[0].x0 == 40
    assert "66.9%" in annotations(fig)  # 0.99 ** 40 = 0.669
    assert max(bold.x) >= 458  # long enough to show the forgetting (1 % after 459 steps)


def test_ema_theory_other_momentum_and_edge_values():
    fig = F.ema_theory_figure(0.8, 0, compare=(0.8, 0.9, 0.9))
    assert [t.name.split(" ")[2] for t in fig.data if t.mode == "lines"] == ["0.8", "0.9"]
    for momentum in (0.0, 1.0):
        assert isinstance(F.ema_theory_figure(momentum, 10), go.Figure)


def test_training_curves_show_fit_and_both_probe_modes():
    data = make_data()
    fig = F.training_curves(data)
    traces = by_name(fig)
    probe_train = traces[f"probe accuracy, {F.TRAIN_LABEL}"]
    probe_infer = traces[f"probe accuracy, {F.INFER_LABEL}"]
    np.testing.assert_allclose(probe_train.y, [0.25, 0.8, 0.95])
    np.testing.assert_allclose(probe_infer.y, [0.25, 0.3, 0.46])
    assert probe_train.line.color == F.TRAIN_COLOUR and probe_infer.line.color == F.INFER_COLOUR
    assert probe_train.line.dash == F.TRAIN_DASH and probe_infer.line.dash == F.INFER_DASH
    loss = next(t for t in fig.data if t.yaxis == "y")
    np.testing.assert_allclose(loss.y, data.steps["loss"])


def test_long_step_curves_keep_each_stretchs_lowest_and_highest_point():
    data = make_data()
    steps = np.arange(1, 5001)
    loss = np.cos(steps / 300.0) + 2
    loss[1234] = 9.0  # a spike striding would skip
    data = RunData(run=data.run, steps=pd.DataFrame({"step": steps, "epoch": 1, "loss": loss, "accuracy": 0.5}), probes=data.probes, layers=data.layers)
    fitted = next(t for t in F.training_curves(data).data if t.yaxis == "y")
    assert len(fitted.x) <= F.MAX_LINE_POINTS and np.all(np.diff(fitted.x) > 0)
    assert max(fitted.y) == 9.0 and min(fitted.y) == pytest.approx(loss.min()) and fitted.x[0] == 1 and fitted.x[-1] == 5000
    short = F.envelope(np.arange(10), np.arange(10.0), F.MAX_LINE_POINTS)
    np.testing.assert_array_equal(short[1], np.arange(10.0))  # short curves are drawn whole


def test_the_template_as_plotlys_default_draws_the_same_figures():
    import plotly.io as pio

    data, before = make_data(), pio.templates.default
    builders = (lambda: F.training_curves(data, scale=2), lambda: F.activation_histograms(data, "norm1"), lambda: F.empty_figure("t", "nothing"))
    assigned = [b().to_json() for b in builders]
    try:
        F.use_as_default_template()
        assert [b().to_json() for b in builders] == assigned
    finally:
        pio.templates.default = before


def test_a_frozen_figure_converts_once_to_what_plotly_would_give():
    import plotly.io as pio

    data = make_data()
    fresh = F.training_curves(data).to_dict()
    fig = F.training_curves(data)
    figs = {"curves": fig, "histograms": F.activation_histograms(data, "norm1")}
    assert F.frozen(figs) is figs and F.frozen((fig, "not a figure")) == (fig, "not a figure")
    converted = fig.to_dict()
    assert fig.to_dict() is converted and pio.to_json(converted) == pio.to_json(fresh)  # what Streamlit sends, once per figure
    assert F.training_curves(data).to_dict() is not F.training_curves(data).to_dict()  # figures not frozen convert afresh


def test_compare_accuracy_colour_per_run_dash_per_mode():
    runs = [make_data("a", run_id="20260101-000000-aaaaaa"), make_data("b", 0.8, "20260101-000000-bbbbbb")]
    fig = F.compare_accuracy_figure(runs)
    assert len(fig.data) == 4
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert [t.line.dash for t in fig.data] == [F.TRAIN_DASH, F.INFER_DASH] * 2
    assert fig.data[2].name.startswith("b m=0.8")


def test_compare_drift_gap_and_median_scale_error_include_epsilon():
    runs = [make_data("a", run_id="20260101-000000-aaaaaa"), make_data("b", 0.8, "20260101-000000-bbbbbb")]
    fig = F.compare_drift_figure(runs, "norm1")
    gap, ratio = [t for t in fig.data if t.yaxis == "y"], [t for t in fig.data if t.yaxis == "y2"]
    assert len(gap) == len(ratio) == 2
    eps = runs[0].run.config.arch.bn.epsilon  # BN divides by √(var + ε)
    np.testing.assert_allclose(gap[0].y, [5 / np.sqrt(4 + eps)] * 3, rtol=1e-9)
    scale = (np.sqrt((1 + eps) / (4 + eps)) + np.sqrt((16 + eps) / (4 + eps))) / 2  # median of the two channels, as diagnose defines it
    np.testing.assert_allclose(ratio[0].y, [scale] * 3, rtol=1e-9)
    assert "No run has" in annotations(F.compare_drift_figure(runs, "norm9"))


def test_accuracy_frame_and_final_bars():
    runs = [make_data("a", run_id="20260101-000000-aaaaaa"), make_data("b", run_id="20260101-000000-bbbbbb", evaluated=False)]
    frame = F.accuracy_frame(runs)
    assert list(frame.columns) == list(F.ACCURACY_COLUMNS)
    assert list(frame.index) == [r.run.label for r in runs]
    assert frame.loc[runs[0].run.label, "test (evaluate)"] == 0.46
    assert frame.loc[runs[0].run.label, "test (batch stats)"] == 0.98
    assert frame.loc[runs[1].run.label].isna().all()
    fig = F.final_accuracy_figure(runs)
    bars = by_name(fig)
    assert list(bars[f"test · {F.INFER_LABEL}"].y) == [0.46]  # the unevaluated run is left out
    assert list(bars[f"val · {F.TRAIN_LABEL}"].y) == [0.97]
    assert bars[f"test · {F.INFER_LABEL}"].marker.color == F.INFER_COLOUR
    legend = fig.layout.legend  # the legend for the colours, where the template puts it: under the plot, in view
    assert fig.layout.showlegend and legend.yref == "container" and legend.yanchor == "bottom" and 0 <= legend.y < 0.05


def test_user_strings_are_escaped_in_figures():
    data = make_data("<b>x</b>")
    names = [t.name for t in F.compare_accuracy_figure([data]).data]
    assert all("&lt;b&gt;x&lt;/b&gt;" in n for n in names)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda d: F.activation_histograms(d, "norm1"), "No BN probe records yet"),
        (lambda d: F.drift_figure(d, "norm1"), "No BN probe records yet"),
        (lambda d: F.drift_figure(d, "norm1", channel=0), "No BN probe records yet"),
        (lambda d: F.channel_gap_figure(d, "norm1"), "No BN probe records yet"),
        (F.training_curves, "No training steps recorded yet"),
        (lambda d: F.compare_accuracy_figure([d]), "No probe records yet"),
        (lambda d: F.compare_drift_figure([d], "norm1"), "No run has probe records"),
        (lambda d: F.final_accuracy_figure([d]), "No final evaluation yet"),
        (lambda d: F.compare_accuracy_figure([]), "No runs selected"),
        (lambda d: F.final_accuracy_figure([]), "No runs selected"),
    ],
)
def test_empty_runs_give_an_annotated_empty_figure(build, message):
    fig = build(empty_data())
    assert isinstance(fig, go.Figure) and not fig.data
    assert message in annotations(fig)
    assert fig.layout.title.text


def test_empty_frames_and_layers_without_probes():
    assert F.accuracy_frame([empty_data()]).isna().all().all()
    assert F.accuracy_frame([]).empty
    data = make_data()
    trace = data.layers["norm1"]
    no_probes = LayerTrace(trace.layer, STEPS[:0], *(np.zeros((0, 2)) for _ in range(6)), np.zeros((0, 5)), np.zeros((0, 4)), np.zeros((0, 4)))
    data = RunData(data.run, data.steps, data.probes.iloc[:0], {"norm1": no_probes})
    assert "No probe records yet" in annotations(F.activation_histograms(data, "norm1"))
    assert "No probe records yet" in annotations(F.channel_gap_figure(data, "norm1"))
    assert len(F.training_curves(data).data) == 2  # fit loss and accuracy, no probe lines


# --- one real tiny training run ---------------------------------------------------------------
def tiny_run(tmp_path_factory) -> RunData:
    """A real `bn` run (input 24, 1 epoch), trained once per test session in its temp folder and
    loaded from there by every module that asks again (training takes ~10 s)."""
    from bnviz.presets import preset_config
    from bnviz.store import Store
    from bnviz.tf.train import execute_run

    store = Store(tmp_path_factory.getbasetemp() / "tiny-bn-run")
    done = store.list_runs(status=["done"])
    if not done:
        run_id = store.create_run(preset_config("bn", input_size=24, epochs=1), status="running")
        execute_run(store, run_id)
        done = [store.get_run(run_id)]
    assert done[0].status == "done", done[0].error
    return store.load_run(done[0].id)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> RunData:
    return tiny_run(tmp_path_factory)


@pytest.mark.slow
def test_every_figure_builds_from_a_real_run(real_run):
    assert real_run.layers, "the bn preset should record its BN layers"
    for layer, trace in real_run.layers.items():
        hist = F.activation_histograms(real_run, layer)
        np.testing.assert_array_equal(by_name(hist)[F.TRAIN_LABEL].y, trace.hist_train[-1])
        np.testing.assert_array_equal(by_name(hist)[F.INFER_LABEL].y, trace.hist_infer[-1])
        assert f"step {int(trace.steps[-1])}" in hist.layout.title.text
        drift = F.drift_figure(real_run, layer)
        assert len(drift.data) == 6 and not annotations(drift).startswith("No")
        assert f"population measured at {len(trace.measured().steps)} of {len(trace.steps)} probe steps" in drift.layout.title.subtitle.text
        assert len(F.drift_figure(real_run, layer, channel=0).data) == 6
        gap = F.channel_gap_figure(real_run, layer).data[0]
        measured = trace.measured()  # every population_every-th record and the last: the others have no population to gap against
        assert measured.steps[-1] == trace.steps[-1] and len(measured.steps) < len(trace.steps)
        assert np.isnan(trace.pop_mean[np.isin(trace.steps, measured.steps, invert=True)]).all()
        assert np.asarray(gap.z).shape == (trace.moving_mean.shape[1], len(measured.steps)) and list(gap.x) == measured.steps.tolist()
        np.testing.assert_allclose(np.asarray(gap.z)[:, 0], np.abs(trace.pop_mean[0]) / np.sqrt(trace.pop_var[0] + real_run.epsilon(layer)), rtol=1e-5)
    curves = F.training_curves(real_run)
    np.testing.assert_allclose(by_name(curves)[f"probe accuracy, {F.INFER_LABEL}"].y, real_run.probes["acc_inference"])
    assert real_run.steps_trained == real_run.run.total_steps
    theory = F.ema_theory_figure(real_run.run.momentum, real_run.steps_trained)
    np.testing.assert_allclose(theory.data[0].y, 0.99 ** np.asarray(theory.data[0].x))
    layer = next(iter(real_run.layers))
    for fig in (F.compare_accuracy_figure([real_run]), F.compare_drift_figure([real_run], layer), F.final_accuracy_figure([real_run])):
        assert fig.data
    assert F.accuracy_frame([real_run]).notna().all().all()


# --- presentation scale ----------------------------------------------------------------------
def text_sizes(fig: go.Figure) -> dict[str, float]:
    """The font sizes a figure's reader sees, the template's where the figure sets none."""
    layout, template = fig.layout, F.TEMPLATE.layout
    sizes = {
        "text": layout.font.size or template.font.size,
        "title": layout.title.font.size or template.title.font.size,
        "legend": layout.legend.font.size or template.legend.font.size,
    }
    sizes |= {f"annotation {i}": note.font.size or sizes["text"] for i, note in enumerate(layout.annotations)}
    return sizes


SCALED = {
    "histograms": lambda d, s: F.activation_histograms(d, "norm1", scale=s),
    "drift": lambda d, s: F.drift_figure(d, "norm1", scale=s),
    "gap": lambda d, s: F.channel_gap_figure(d, "norm1", scale=s),
    "theory": lambda d, s: F.ema_theory_figure(0.99, 100, scale=s),
    "curves": lambda d, s: F.training_curves(d, scale=s),
    "compare accuracy": lambda d, s: F.compare_accuracy_figure([d], scale=s),
    "compare drift": lambda d, s: F.compare_drift_figure([d], "norm1", scale=s),
    "final": lambda d, s: F.final_accuracy_figure([d], scale=s),
    "sweep": lambda d, s: F.sweep_figure([d], scale=s),
    "empty": lambda d, s: F.empty_figure("nothing", "because", scale=s),
}


@pytest.mark.parametrize("name", list(SCALED))
def test_scale_two_doubles_every_text_of_every_figure(name):
    """The presentation layout's figures: title, axes, legend and every annotation (subplot titles,
    the mᵗ marker's label) at least twice the screen size, margins and height grown to hold them."""
    screen, projected = SCALED[name](make_data(), 1.0), SCALED[name](make_data(), 2.0)
    small, large = text_sizes(screen), text_sizes(projected)
    assert small.keys() == large.keys() and small["text"] == F.BASE_FONT
    assert all(large[k] >= 2 * small[k] for k in small), (small, large)
    assert large["title"] >= 32 and large["text"] >= 26 and large["legend"] >= 24
    assert projected.layout.margin.t >= 2 * screen.layout.margin.t - 1  # room for the text: bnviz.figlayout.fit
    assert projected.layout.height > screen.layout.height


def test_sweep_on_the_ema_window_axis_is_log_and_leaves_out_m_one():
    runs = [make_data(momentum=m, run_id=f"20260101-000000-{i:06d}") for i, m in enumerate((1.0, 0.99, 0.9))]
    by_m = F.sweep_figure(runs)
    assert list(by_name(by_m)[f"batch 32 · {F.INFER_LABEL}"].x) == [0.9, 0.99, 1.0]
    window = F.sweep_figure(runs, "window")
    np.testing.assert_allclose(by_name(window)[f"batch 32 · {F.INFER_LABEL}"].x, [10, 100], rtol=1e-9)  # 1/(1 − m); m = 1 has none
    assert window.layout.xaxis.type == "log" and "1/(1 − m)" in window.layout.xaxis.title.text
    assert "No finished runs" in annotations(F.sweep_figure(runs[:1], "window"))
