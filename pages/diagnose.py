"""Diagnose one run, top to bottom by importance: the verdict, the big figures, the chart that shows
the symptom (training curves), the chart that shows the cause (mᵗ), then remedies, the detailed
evidence and the secondary findings. A saved model (bnviz inspect) has no training history, so
neither of the two charts over the steps. Open on a run with `?run=<id>`."""

from __future__ import annotations

import streamlit as st

from bnviz import figures
from bnviz.diagnose import FEW_LAYERS, diagnose, gather, ordered_layers
from bnviz.labels import md_literal
from bnviz.live import records_version
from bnviz.presets import SEED_RESULTS
from bnviz.records import Run, RunData, RunStatus
from pages import common, diagnose_panels, slides

common.frame_if_run_alone()

ss = st.session_state
scale = common.scale()


def show(active: bool, run_id: str, status: str) -> None:
    """Everything about the run from its records as stored. While the run is queued or training the page
    draws again with each new record and status, and every few seconds with its new steps (common.follow);
    a status that moved on (queued → running → ended) reruns the page, which also stops the polling."""
    run = common.store().get_run(run_id)
    if run.status != status:
        st.rerun()
    data = common.load_run(run)
    header(run, data)
    if waiting(run, data):
        return
    # as the charts over the steps (per hundredth of the run, shared for STEPS_REDRAW_S): keyed on every step trained,
    # each poll of a long run would add an entry to the shared cache (64 entries) and push the figures out
    (top, *more), evidence = common.shared_steps_figure(("diagnosis",), data, lambda: (diagnose(data), gather(data)))
    diagnose_panels.verdict(run, top)
    diagnose_panels.figures_row(data, evidence)
    diagnose_panels.history_charts(data, scale)
    more = diagnose_panels.why(top, more)
    if run.status == RunStatus.DONE and run.config.arch.has_moving_stats:
        diagnose_panels.fix_it(run, top)
    scores(run, data)
    activations(run, data)
    st.subheader("More findings")
    diagnose_panels.secondary(more)
    compare_with(run)


def header(run: Run, data: RunData) -> None:
    """The run's status and settings in one line, and its error."""
    cfg, steps = run.config, data.steps_trained
    epochs = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}"
    st.caption(
        f"{run.status} · "
        + (
            common.own_model_text(run)
            or f"{cfg.arch.norm} normalisation"
            + (f" · momentum {run.momentum:g}" if cfg.arch.has_moving_stats else "")
            + f" · {steps:,} steps · {epochs} of batch {cfg.batch_size} · {cfg.input_size}px · data: {md_literal(cfg.dataset)}"
        )
    )
    if run.error:
        st.warning(md_literal(run.error))


def waiting(run: Run, data: RunData) -> bool:
    """While the run is queued, or training without a record yet, say so instead of figures that would
    read as results (mᵗ 100 % "after 0 steps"); True when that is all there is to show."""
    if run.status == RunStatus.QUEUED:
        st.info("**Queued**: waiting for a worker. This page follows the run into training by itself.", icon=":material/schedule:")
    elif run.status == RunStatus.RUNNING and not len(data.steps) and not len(data.probes):
        st.info(
            f"**Training started — waiting for the first record** ({common.store().progress(run.id).step} steps so far). The "
            "charts appear with it; this page follows the run by itself.",
            icon=":material/hourglass_top:",
        )
    else:
        return False
    return True


def scores(run: Run, data: RunData) -> None:
    """The final evaluation in both BN modes, once it exists."""
    cfg = run.config
    st.subheader(f"{common.score_title(run)}: inference mode vs batch statistics")
    if "final" not in data.evaluations:
        st.info("No final evaluation yet: the run has not finished.")
    else:
        table_col, note_col = st.columns([3, 2], gap="large")
        table = common.modes_table(run, data.evaluations["final"])
        if cfg.preset in SEED_RESULTS:
            table.loc[f"seed notebook, {cfg.preset} (inference)"] = SEED_RESULTS[cfg.preset]
        with table_col:
            common.table(common.styled(run, table), key="diagnose_accuracy")
        note_col.caption(
            "Inference mode is what `evaluate` and `predict` use: BN normalises with its moving statistics. Training "
            "mode normalises each batch with its own statistics. When training mode scores far higher, the weights are "
            "fine and the moving statistics are wrong."
        )


def activations(run: Run, data: RunData) -> None:
    """A BN layer's activations in both modes at a probe step, and the drift of its moving statistics;
    beyond FEW_LAYERS layers, first every layer's error in one chart, and the picker opens on the layer furthest off
    (up to FEW_LAYERS, as the seed's models, on the first: the story follows the error from there)."""
    cfg = run.config
    if not data.layers:
        if run.status == RunStatus.RUNNING and cfg.arch.has_moving_stats and cfg.probe.enabled:
            st.info(
                f"No probe record yet. To keep training at full speed the probe spends at most {cfg.probe.budget:.0%} of the "
                "training time on records; the rest are made when training ends (a few seconds for a short run)."
            )
        else:
            st.info("No BatchNormalization probe records: the run has no BN layer, or ran with the probe off.")
    else:
        version, layers, deep = records_version(data), ordered_layers(data), len(data.layers) > FEW_LAYERS
        if deep:
            overview(data, version)
        st.subheader("Activations: training mode vs inference mode")
        pick_col, step_col = st.columns([1, 3])
        common.ensure_choice("diagnose_layer", layers, common.ranked_layer_names(data)[0] if deep else layers[0])  # deep: the one furthest off
        layer = pick_col.selectbox("BN layer (network order; at first the one furthest off)" if deep else "BN layer", layers, key="diagnose_layer")
        probe_steps = [int(s) for s in data.layers[layer].steps]
        key = f"diagnose_step_live{len(probe_steps)}" if run.status.active else "diagnose_step"  # training: a fresh slider per record, on the newest
        common.ensure_choice(key, probe_steps, probe_steps[-1])
        if len(probe_steps) > 1:
            step_col.select_slider("Probe step", probe_steps, key=key)
        index = probe_steps.index(ss[key])
        histograms = common.shared_figure(("histograms", version, layer, index, scale), lambda: figures.activation_histograms(data, layer, index, scale=scale))
        common.chart(histograms, key="diagnose_histograms")

        st.subheader("Moving statistics vs the population" if common.inspected(run) else "Drift of the moving statistics")
        channels = data.layers[layer].moving_mean.shape[1]
        options = [None, *range(channels)]
        common.ensure_choice("diagnose_channel", options, None)
        channel = st.columns([1, 3])[0].selectbox(
            "Channel", options, key="diagnose_channel", format_func=lambda c: "mean over channels" if c is None else f"channel {c}"
        )
        drift = common.shared_figure(("drift", version, layer, channel, scale), lambda: figures.drift_figure(data, layer, channel, scale=scale))
        common.chart(drift, key="diagnose_drift")
        gap = common.shared_figure(("gap", version, layer, scale), lambda: figures.channel_gap_figure(data, layer, scale=scale))
        common.chart(gap, key="diagnose_gap")


def overview(data: RunData, version: tuple) -> None:
    """Every BN layer of a deep network in one chart (ResNet50 has 53), so the reader knows which to pick below."""
    st.subheader("Every BN layer at a glance")
    fig = common.shared_figure(("overview", version, scale), lambda: figures.layer_overview_figure(data, scale=scale))
    common.chart(fig, key="diagnose_overview")


def compare_with(run: Run) -> None:
    """A link to Compare with another done run."""
    runs = common.store().list_runs()
    others = [r for r in runs if r.id != run.id and r.status == RunStatus.DONE]
    if others:
        st.subheader("Compare with another run")
        common.ensure_choice("diagnose_compare_with", [r.id for r in others], others[0].id)
        other = st.selectbox("Other run", [r.id for r in others], key="diagnose_compare_with", format_func=common.run_labels(runs).get)
        st.page_link(common.PAGE_FILES["compare"], label="Open both in Compare", icon=":material/compare:", query_params={"runs": f"{run.id},{other}"})


runs = common.store().list_runs()
if common.presented() and (started := [r for r in runs if r.status != RunStatus.QUEUED]):
    slides.diagnose(started)
title_col, pick_col = st.columns([1, 1], vertical_alignment="bottom")
title_col.title("Diagnose a run")
common.require(runs, "No run yet. Queue one on the Train page.", link="train", link_label="Train a model")
with pick_col:
    chosen = common.pick_run("diagnose_run", runs, default=common.newest_done(runs)[0])
common.follow(show, chosen.status.active, chosen.id, chosen.status, runs=[chosen.id])
