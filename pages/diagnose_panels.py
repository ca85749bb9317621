"""Panels of the Diagnose page (not a page): the verdict, the row of big figures and the remedies,
in the order a reader needs them. The figures come from bnviz.diagnose, the one definition of each."""

from __future__ import annotations

import math

import streamlit as st

from bnviz import levers
from bnviz.config import OWN_PRESET
from bnviz.diagnose import Evidence, Finding, LayerFigures, all_layer_figures
from bnviz.glossary import GLOSSARY
from bnviz.records import ACTIVE, RunStatus
from bnviz.stats import init_weight
from bnviz.store import Run, RunData
from pages import common

SHOWS = {"critical": st.error, "warning": st.warning, "info": st.info, "ok": st.success}
SCALE_HELP = GLOSSARY["scale error"] + " Against the input inference really feeds the layer (else the training-mode population)."


def verdict(run: Run, top: Finding) -> None:
    """The verdict alone; while the run trains, a pending line that refreshes itself."""
    if top.cause == "pending" and run.status in ACTIVE:
        _pending(run.id)
    else:
        SHOWS[top.severity](f"**{top.title}**\n\n{top.detail}")  # its remedies come under "Fix it", after the evidence


@st.fragment(run_every=2)
def _pending(run_id: str) -> None:
    """'Verdict pending — step n/N', polled from the store; the whole page reruns once the run has
    ended (its final evaluation and the PreciseBN evidence are stored before it is marked done), so
    the verdict and every chart see them. Waiting for the status, not the evaluation, also keeps the
    cached run data (keyed on the status) from going stale and the page from rerunning in a loop."""
    if common.store().get_run(run_id).status not in ACTIVE:
        st.rerun()
    progress = common.store().progress(run_id)
    total = f"/{progress.total_steps}" if progress.total_steps else ""
    st.info(f"**Verdict pending — step {progress.step}{total}**\n\nThe verdict needs the final evaluation, made when training "
            "ends; this line refreshes itself and the page reloads when it exists.", icon=":material/hourglass_top:")


def worst_layer(data: RunData) -> LayerFigures | None:
    """The BN layer whose scale error is furthest from 1 (inference's figure where stored)."""
    def off(f: LayerFigures) -> float:
        s = f.infer_scale if math.isfinite(f.infer_scale) else f.own_scale
        return max(s, 1 / s) if math.isfinite(s) and s > 0 else -1.0
    layers = all_layer_figures(data) if data.layers else []
    return max(layers, key=off, default=None)


def _percent(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else "–"


def figures_row(data: RunData, ev: Evidence | None) -> None:
    """Big figures: fit vs evaluate on the training images, held-out accuracy, mᵗ, worst scale error."""
    fit = ev.fit if ev else (float(data.steps["accuracy"].iloc[-1]) if len(data.steps) else math.nan)
    weight = ev.init_weight if ev else (float(init_weight(data.run.momentum, data.steps_trained)) if data.run.config.arch.norm == "batch" else math.nan)
    cols = st.columns(5)
    cols[0].metric("train (fit)", _percent(fit), help=GLOSSARY["train (fit)"])
    train = ev.train if ev else math.nan
    cols[1].metric("train (evaluate)", _percent(train), delta=None if not math.isfinite(train * fit) else f"{100 * (train - fit):+.1f} points vs fit",
                   help=GLOSSARY["train (evaluate)"])
    if ev:
        cols[2].metric(f"{ev.split} (evaluate)", _percent(ev.inference), help="Held-out accuracy in inference mode.")
    cols[3].metric("initial values left, mᵗ", _percent(weight) if weight >= 0.001 or not math.isfinite(weight) else "< 0.1%",
                   help=GLOSSARY["mᵗ"])
    if (worst := worst_layer(data)) is not None:
        scale = worst.infer_scale if math.isfinite(worst.infer_scale) else worst.own_scale
        where = "at inference" if math.isfinite(worst.infer_scale) else "vs the population"
        cols[4].metric("worst scale error", f"{scale:.3g}×", delta=f"{worst.name}, {where}", delta_color="off", delta_arrow="off", help=SCALE_HELP)


def fix_it(run: Run, top: Finding) -> None:
    """Recalibrate the run's BN statistics in a worker, or queue a one-change copy and compare."""
    st.subheader("Fix it")
    for remedy in top.remedies:
        st.markdown(f"- {remedy}")
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
        for lever, config in levers.options(run, top.cause, top.numbers.get("suggested_momentum")):
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


def why(top: Finding, findings: list[Finding]) -> list[Finding]:
    """The finding the verdict names and the layer where the error starts, open below the charts;
    returns the other findings. Their remedies lead "Fix it"."""
    cause = [f for f in findings if f.key == top.cause]
    first_layer = next((f for f in findings if f.key.startswith("layer_") and f.severity in ("critical", "warning")), None)
    shown = cause + ([first_layer] if first_layer and top.cause != "pending" else [])
    if shown:
        st.subheader("Why")
        for finding in shown:
            SHOWS[finding.severity](f"**{finding.title}**\n\n{finding.detail}")
    return [f for f in findings if f not in shown]


def secondary(findings: list[Finding]) -> None:
    """Every finding after the verdict, critical first, folded so the evidence above stays in view."""
    if findings:
        major = sum(f.severity in ("critical", "warning") for f in findings)
        with st.expander(f"{len(findings)} more finding{'s' * (len(findings) > 1)} ({major} critical or warning)", expanded=False):
            for finding in findings:
                SHOWS[finding.severity](f"**{finding.title}**\n\n{common.finding_text(finding)}")

