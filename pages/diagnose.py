"""Diagnose one run: accuracy in both BN modes, activations in training vs inference mode, drift of
the moving statistics, the EMA theory and the training curves. Open on a run with `?run=<id>`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bnviz import figures, levers
from bnviz.config import OWN_PRESET
from bnviz.diagnose import Finding
from bnviz.presets import SEED_RESULTS
from bnviz.records import RunStatus
from bnviz.store import Run
from pages import common

common.frame_if_run_alone()

ss = st.session_state


def fix_it(run: Run, verdict: Finding) -> None:
    """Recalibrate the run's BN statistics in a worker, or queue a one-change copy and compare."""
    st.subheader("Fix it")
    recal_col, lever_col = st.columns(2, gap="large")
    with recal_col:
        st.markdown("**Recalibrate (PreciseBN)**: recompute each BN layer's statistics over training batches with the "
                    "weights frozen. No retraining.")
        batches = st.number_input("Training batches", 1, 1000, 50, key="diagnose_batches")
        if st.button("Recalibrate", key="diagnose_recalibrate", icon=":material/tune:"):
            common.manager().recalibrate(run.id, int(batches))
        _recalibration(run.id)
    with lever_col:
        st.markdown("**What if…** queue a copy of this run with one change, then compare the two.")
        if run.config.preset == OWN_PRESET:
            st.caption("This is your own model (from `bnviz.Probe` or `bnviz inspect`): bnviz cannot retrain it. Change the momentum "
                       "of its BN layers in your script and train again with `bnviz.Probe`; PreciseBN here needs no retraining.")
        for lever, config in levers.options(run, verdict.cause, verdict.numbers.get("suggested_momentum")):
            if st.button(f"{lever.label} → {config.name.split(' · ')[-1]}", key=f"diagnose_lever_{lever.key}"):
                st.session_state["compare_open"] = [run.id, common.manager().submit(config, parent=run.id)]
                st.switch_page(common.PAGE_FILES["compare"])


def _recalibration(run_id: str) -> None:
    """The latest recalibration job's state while it is queued or running, its error if it did not
    finish, and the before/after table as soon as a "precisebn" evaluation exists."""
    jobs = common.store().list_jobs(run_id=run_id, kinds=["recalibrate"])
    if jobs and jobs[0].status.active:
        common.await_job(jobs[0].id, "Recalibrating", cancel_key="diagnose_recalibrate_cancel")
    elif jobs and jobs[0].status == RunStatus.CANCELLED:
        st.info("The last recalibration was cancelled before it ran.")
    elif jobs and jobs[0].status != RunStatus.DONE:
        st.error(f"Recalibration {jobs[0].status}: {jobs[0].error or 'no reason was recorded'}")
    evaluations = common.store().evaluations(run_id)
    if "precisebn" in evaluations and "final" in evaluations:
        before, after = evaluations["final"].accuracies(), evaluations["precisebn"].accuracies()
        st.dataframe({"": ["before (moving statistics)", f"after PreciseBN ({evaluations['precisebn'].batches} batches)"],
                      "test, inference": [before["test"], after["test"]], "test, batch statistics": [before["test_batchstats"], after["test_batchstats"]]},
                     hide_index=True, key="diagnose_precisebn")
        fixed = common.store().models_dir / f"{run_id}-precisebn.keras"
        if fixed.exists():
            st.download_button("Download the recalibrated model (.keras)", fixed.read_bytes, file_name=fixed.name, mime="application/octet-stream",
                               key="diagnose_download_precisebn", on_click="ignore", icon=":material/download:")


st.title("Diagnose a run")
runs = [r for r in common.store().list_runs() if r.status != RunStatus.QUEUED]
common.require(runs, "No run has started yet. Queue one on the Train page.", link="train", link_label="Train a model")
run = common.pick_run("diagnose_run", runs, default=common.newest_done(runs)[0])
data = common.load_run(run)
cfg, steps = run.config, data.steps_trained
epochs = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}"
st.caption(f"{run.status} · " + (common.own_model_text(run) or f"{cfg.arch.norm} normalisation"
           + (f" · momentum {run.momentum:g}" if cfg.arch.norm == "batch" else "")
           + f" · {steps:,} steps · {epochs} of batch {cfg.batch_size} · {cfg.input_size}px · data: {cfg.dataset}"))
if run.status == RunStatus.RUNNING:
    st.info("This run is still training: the charts show its records so far. Rerun the page (R) to update them.")
if run.error:
    st.warning(run.error)

verdict = common.show_findings(data)
if run.status == RunStatus.DONE and cfg.arch.norm == "batch":
    fix_it(run, verdict)

st.subheader("Accuracy: inference mode vs batch statistics")
frame = figures.accuracy_frame([data])
if frame.isna().all(axis=None):
    st.info("No final evaluation yet: the run has not finished.")
else:
    table_col, note_col = st.columns([3, 2], gap="large")
    row = frame.iloc[0]
    table = pd.DataFrame({s: [row[f"{s} (inference)"], row[f"{s} (batch stats)"]] for s in figures.SPLITS},
                         index=["inference mode (moving statistics)", "training mode (batch statistics)"])
    if cfg.preset in SEED_RESULTS:
        table.loc[f"seed notebook, {cfg.preset} (inference)"] = SEED_RESULTS[cfg.preset]
    table_col.dataframe(table.style.format("{:.1%}"), key="diagnose_accuracy")
    note_col.caption("Inference mode is what `evaluate` and `predict` use: BN normalises with its moving statistics. Training "
                     "mode normalises each batch with its own statistics. When training mode scores far higher, the weights are "
                     "fine and the moving statistics are wrong.")

layers = list(data.layers)
if not layers:
    if run.status == RunStatus.RUNNING and cfg.arch.norm == "batch" and cfg.probe.enabled:
        st.info(f"No probe record yet. To keep training at full speed the probe spends at most {cfg.probe.budget:.0%} of the "
                "training time on records; the rest are made when training ends (a few seconds for a short run).")
    else:
        st.info("No BatchNormalization probe records: the run has no BN layer, or ran with the probe off.")
else:
    st.subheader("Activations: training mode vs inference mode")
    pick_col, step_col = st.columns([1, 3])
    common.ensure_choice("diagnose_layer", layers, layers[0])
    layer = pick_col.selectbox("BN layer", layers, key="diagnose_layer")
    probe_steps = [int(s) for s in data.layers[layer].steps]
    common.ensure_choice("diagnose_step", probe_steps, probe_steps[-1])
    if len(probe_steps) > 1:
        step_col.select_slider("Probe step", probe_steps, key="diagnose_step")
    common.chart(figures.activation_histograms(data, layer, probe_steps.index(ss.diagnose_step)), key="diagnose_histograms")

    st.subheader("Drift of the moving statistics")
    channels = data.layers[layer].moving_mean.shape[1]
    options = [None, *range(channels)]
    common.ensure_choice("diagnose_channel", options, None)
    channel = st.columns([1, 3])[0].selectbox("Channel", options, key="diagnose_channel",
                                              format_func=lambda c: "mean over channels" if c is None else f"channel {c}")
    common.chart(figures.drift_figure(data, layer, channel), key="diagnose_drift")
    common.chart(figures.channel_gap_figure(data, layer), key="diagnose_gap")

if cfg.arch.norm == "batch":
    st.subheader("Why: what the moving average still remembers")
    common.chart(figures.ema_theory_figure(run.momentum, steps), key="diagnose_theory")

st.subheader("Training curves")
common.chart(figures.training_curves(data), key="diagnose_curves")

others = [r for r in runs if r.id != run.id and r.status == RunStatus.DONE]
if others:
    st.subheader("Compare with another run")
    common.ensure_choice("diagnose_compare_with", [r.id for r in others], others[0].id)
    other = st.selectbox("Other run", [r.id for r in others], key="diagnose_compare_with",
                         format_func={r.id: common.run_label(r) for r in others}.get)
    st.page_link(common.PAGE_FILES["compare"], label="Open both in Compare", icon=":material/compare:",
                 query_params={"runs": f"{run.id},{other}"})
