"""Panels of the Diagnose page (not a page): the verdict, the row of big figures and the remedies,
in the order a reader needs them; PreciseBN's panel serves the Inspect page too. The figures come
from bnviz.diagnose, the one definition of each."""

from __future__ import annotations

import streamlit as st

from bnviz import levers
from bnviz.config import OWN_PRESET
from bnviz.diagnose import Evidence, Finding
from bnviz.labels import md_literal
from bnviz.records import ACTIVE, Evaluation, Run, RunData, RunStatus
from bnviz.summary import headline_figures, history_figures
from pages import common

SHOWS = {"critical": st.error, "warning": st.warning, "unknown": st.warning, "info": st.info, "ok": st.success}
HISTORY_NOTE = (
    "A saved model has no training history: no curves over the steps, no fit accuracy, and mᵗ only from a step count you "
    "give. What it has: the accuracy in both BN modes, each BN layer's moving statistics against this data's population, "
    "the fingerprint of stale initial values, and what PreciseBN recovers."
)


def verdict(run: Run, top: Finding) -> None:
    """The verdict alone; while the run trains, a pending line with its step (the page follows the run)."""
    if top.cause == "pending" and run.status in ACTIVE:
        _pending(run.id)
    else:
        SHOWS[top.severity](common.finding_markdown(top, remedies=False))  # its remedies come under "Fix it", after the evidence


def _pending(run_id: str) -> None:
    """'Verdict pending — step n/N', read from the store on each poll of the Diagnose page."""
    progress = common.store().progress(run_id)
    total = f"/{progress.total_steps}" if progress.total_steps else ""
    st.info(
        f"**Verdict pending — step {progress.step}{total}**\n\nThe verdict needs the final evaluation, made when training "
        "ends. Until then the charts below show the records stored so far and follow the run by themselves.",
        icon=":material/hourglass_top:",
    )


def figures_row(data: RunData, ev: Evidence | None) -> None:
    """The big figures under the verdict (bnviz.summary.headline_figures), one metric each."""
    for col, cell in zip(st.columns(5), headline_figures(data, ev), strict=False):
        plain = {} if cell.signed else {"delta_color": "off", "delta_arrow": "off"}
        note = cell.note if cell.signed or cell.note is None else md_literal(cell.note)  # a signed note's sign sets its arrow; others may name a layer
        col.metric(cell.label, cell.value, delta=note, help=cell.help, **plain)


def history_charts(data: RunData, scale: float) -> None:
    """The symptom beside the cause (bnviz.summary.history_figures). A saved model has neither history
    nor, without a step count, mᵗ: one caption says so."""
    if common.inspected(data.run):
        st.caption(HISTORY_NOTE)
    width = common.chart_width(2)
    charts = common.shared_steps_figure(("history", scale, width), data, lambda: history_figures(data, scale=scale, width=width))
    for col, (key, fig) in zip(common.side_by_side(2) if charts else [], charts.items(), strict=False):
        with col:
            common.chart(fig, key=f"diagnose_{key}")


def fix_it(run: Run, top: Finding) -> None:
    """Recalibrate the run's BN statistics in a worker, or queue a one-change copy and compare."""
    st.subheader("Fix it")
    for remedy in top.remedies:
        st.markdown(f"- {md_literal(remedy)}")
    recal_col, lever_col = st.columns(2, gap="large")
    with recal_col:
        st.markdown("**Recalibrate (PreciseBN)**: recompute each BN layer's statistics over training batches with the weights frozen. No retraining.")
        precisebn(run, "diagnose")
    with lever_col:
        st.markdown("**What if…** queue a copy of this run with one change, then compare the two.")
        if run.config.preset == OWN_PRESET:
            st.caption(
                "This is your own model (from `bnviz.Probe` or `bnviz inspect`): bnviz cannot retrain it. Change the momentum "
                "of its BN layers in your script and train again with `bnviz.Probe`; PreciseBN here needs no retraining."
            )
        for lever, config in levers.options(run, top.cause, top.numbers.get("suggested_momentum")):
            if st.button(f"{lever.label} → {config.name.split(' · ')[-1]}", key=f"diagnose_lever_{lever.key}"):
                st.session_state["compare_open"] = [run.id, common.manager().submit(config, parent=run.id)]
                st.switch_page(common.PAGE_FILES["compare"])


def precisebn(run: Run, page: str) -> None:
    """PreciseBN for a finished run, on Diagnose and Inspect (widget keys start with `page`): the
    button that queues it in a worker, the job's state, then the before/after table and the download."""
    batches = st.number_input("Training batches", 1, 1000, 50, key=f"{page}_batches")
    if st.button(
        "Recalibrate",
        key=f"{page}_recalibrate",
        icon=":material/tune:",
        help="Recompute every BN layer's statistics over the training images with the weights frozen; no retraining.",
    ):
        common.manager().recalibrate(run.id, int(batches))
    _recalibration_job(run.id, page)
    evaluations = common.store().evaluations(run.id)
    if "precisebn" in evaluations and "final" in evaluations:
        _before_after(run, evaluations["final"], evaluations["precisebn"], page)
        _download(run.id, page)


def _recalibration_job(run_id: str, page: str) -> None:
    """The latest recalibration job's state while it is queued or running, its error if it did not finish."""
    jobs = common.store().list_jobs(run_id=run_id, kinds=["recalibrate"])
    if jobs and jobs[0].status.active:
        common.await_job(jobs[0].id, "Recalibrating", cancel_key=f"{page}_recalibrate_cancel")
    elif jobs and jobs[0].status == RunStatus.CANCELLED:
        st.info("The last recalibration was cancelled before it ran.")
    elif jobs and jobs[0].status != RunStatus.DONE:
        st.error(f"Recalibration {jobs[0].status}: {md_literal(jobs[0].error or 'no reason was recorded')}")


def precisebn_label(after: Evaluation) -> str:
    """'after PreciseBN on train (50 batches)'; calibrating on other images than the training images is transductive."""
    on = after.calibrated_on or "train"  # evaluations stored before the split was recorded averaged over training images
    return f"after PreciseBN on {on} ({after.batches} batches)" + ("" if on == "train" else " (transductive)")


def _before_after(run: Run, before: Evaluation, after: Evaluation, page: str) -> None:
    """Inference mode before and after PreciseBN, batch statistics for reference, every split."""
    table = common.score_table(
        run, {"before (moving statistics)": (before, ""), precisebn_label(after): (after, ""), "batch statistics (for reference)": (before, "_batchstats")}
    )
    common.table(common.styled(run, table), key=f"{page}_precisebn")
    if (after.calibrated_on or "train") != "train":
        st.warning(
            f"Transductive: calibrated on the {after.calibrated_on} images and scored on them, so its {after.calibrated_on} "
            "figures are no evidence that the weights are fine."
        )


def _download(run_id: str, page: str) -> None:
    """The recalibrated model's download, once the worker has saved it."""
    fixed = common.store().models_dir / f"{run_id}-precisebn.keras"
    if fixed.exists():
        st.download_button(
            "Download the recalibrated model (.keras)",
            fixed.read_bytes,
            file_name=fixed.name,
            mime="application/octet-stream",
            key=f"{page}_download_precisebn",
            on_click="ignore",
            icon=":material/download:",
        )


def why(top: Finding, findings: list[Finding]) -> list[Finding]:
    """The finding the verdict names and the layer where the error starts, open below the charts;
    returns the other findings. Their remedies lead "Fix it"."""
    cause = [f for f in findings if f.key == top.cause]
    first_layer = next((f for f in findings if f.key.startswith("layer_") and f.severity in ("critical", "warning")), None)
    shown = cause + ([first_layer] if first_layer and top.cause != "pending" else [])
    if shown:
        st.subheader("Why")
        for finding in shown:
            SHOWS[finding.severity](common.finding_markdown(finding, remedies=False))
    return [f for f in findings if f not in shown]


def secondary(findings: list[Finding]) -> None:
    """Every finding after the verdict, critical first, folded so the evidence above stays in view."""
    if findings:
        major = sum(f.severity in ("critical", "warning") for f in findings)
        with st.expander(f"{len(findings)} more finding{'s' * (len(findings) > 1)} ({major} critical or warning)", expanded=False):
            for finding in findings:
                SHOWS[finding.severity](common.finding_markdown(finding))
