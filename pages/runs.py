"""Runs: every run with its status, a live progress bar and a cancel button while it is active, a
delete button once it has ended; then the background jobs (training, recalibration, ...) with their
status, progress and error."""

from __future__ import annotations

import math
import time

import streamlit as st

from bnviz import uploads
from bnviz.labels import md_literal, unique_labels
from bnviz.live import activity
from bnviz.records import Run, RunStatus
from pages import common

common.frame_if_run_alone()

ss = st.session_state
SHOWN = 25

st.title("Runs")
store = common.store()
st.caption(uploads.usage_text(store.home))
runs = store.list_runs()
common.require(runs, "No runs yet. Queue one on the Train page.", link="train", link_label="Train a model")


def accuracy_line(run: Run) -> str:
    """'test (evaluate): **28%** · …': accuracies, or the loss for a values run; "–" where one is not a number."""
    final = store.evaluations(run.id).get("final")
    if final is None:
        return ""
    acc = common.scores(run, final)
    split = next((s for s in ("test", "val", "train") if s in acc), None)  # bnviz.Probe evaluates only the splits it was given
    if split is None:
        return ""

    def shown(key: str) -> str:
        return common.score_text(run, acc.get(key), places=0)

    name = f" {common.score_name(run)}" if common.is_values(run) else ""
    fit = f" · train (fit) {shown('fit')}" if "fit" in acc else ""
    train = f" · train (evaluate) {shown('train')}" if "train" in acc and split != "train" else ""
    return f"{split}{name} (evaluate): **{shown(split)}** · {split} with batch statistics {shown(split + '_batchstats')}{fit}{train}"


def progress_line(run: Run) -> None:
    p = store.progress(run.id)
    epochs = run.config.epochs
    text = "starting (loading data, building the model)"
    if p.total_steps:
        text = f"step {p.step:,}/{p.total_steps:,} · epoch {p.epoch}/{epochs}"
    if p.loss is not None:
        text += f" · loss {p.loss:.3f}" + (f" · accuracy {p.accuracy:.0%}" if p.accuracy is not None and math.isfinite(p.accuracy) else "")
    if p.total_steps and p.step >= p.total_steps:
        making = p.probe_records < p.probe_scheduled
        text += f" · making probe records ({p.probe_records}/{p.probe_scheduled})" if making else " · evaluating in both BN modes"
    st.progress(p.fraction, text=text)


def cancel(run: Run) -> None:
    common.manager().cancel(run.id)
    st.toast(f"Cancelling {md_literal(run.label)}")


def delete(run: Run) -> None:
    store.delete_run(run.id)
    st.toast(f"Deleted {md_literal(run.label)} and its model file")


def show(run: Run, label: str) -> None:
    with st.container(border=True):
        info, actions = st.columns([5, 1], vertical_alignment="center")
        with info:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
            cfg = run.config
            st.markdown(f"**{md_literal(label)}** {common.status_badge(run.status)} `{run.id}`")
            where = f" · trained on {md_literal(run.trained_on)}" if run.trained_on and run.status != RunStatus.QUEUED else ""
            st.caption(
                f"{when}{where} · "
                + (
                    common.own_model_text(run)
                    or f"{md_literal(cfg.dataset if len(cfg.dataset) < 40 else '…' + cfg.dataset[-38:])} · "
                    f"{cfg.input_size}px · {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} · batch {cfg.batch_size} · {cfg.arch.norm} norm"
                    + (f" · momentum {run.bn_momentum:g}" if run.bn_momentum is not None else " · momentum –")
                )
            )
            if run.status == RunStatus.RUNNING:
                progress_line(run)
            elif run.status == RunStatus.QUEUED and (waiting := [j.progress for j in store.list_jobs(run_id=run.id, kinds=["train"]) if j.progress]):
                st.caption(md_literal(waiting[0]))  # e.g. why a Ray run waits: the cluster cannot be reached
            elif run.status == RunStatus.DONE:
                st.markdown(accuracy_line(run))
            elif run.error:
                st.caption(md_literal(run.error))
        with actions:
            if run.status.active:
                st.button("Cancel", key=f"runs_cancel_{run.id}", disabled=run.cancel_requested, help="Stops at the next step", on_click=cancel, args=(run,))
            else:
                st.button("Delete", key=f"runs_delete_{run.id}", help="Removes the run's records and model file", on_click=delete, args=(run,))
            st.download_button(
                "Config",
                run.config.to_json(),
                file_name=f"bnviz-{run.id}.json",
                mime="application/json",
                key=f"runs_config_{run.id}",
                icon=":material/download:",
                help="This run's settings as JSON: python -m bnviz train --config FILE.json reproduces it",
            )
            if run.status != RunStatus.QUEUED:
                st.page_link(common.PAGE_FILES["diagnose"], label="Diagnose", icon=":material/troubleshoot:", query_params={"run": run.id})


def board(active: bool) -> None:
    """Every run's card and the jobs, drawn again as the runs move on while one is queued or training
    (common.follow; bnviz.live.activity counts them, as the sidebar does)."""
    runs = store.list_runs()
    if activity(runs).active != active:
        st.rerun()
    shown = runs if ss.get("runs_show_all") else runs[:SHOWN]
    labels = unique_labels(runs)
    for run in shown:
        show(run, labels[run.id])
    jobs_table()


def jobs_table() -> None:
    """The newest background jobs of every kind, as the store keeps them across restarts."""
    jobs = store.list_jobs()[:SHOWN]
    if jobs:
        st.subheader("Background jobs")
        st.dataframe(
            {
                "kind": [j.kind for j in jobs],
                "run": [j.run_id or "" for j in jobs],
                "status": [str(j.status) for j in jobs],
                "progress": [j.progress for j in jobs],
                "error": [j.error or "" for j in jobs],
                "queued": [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created)) for j in jobs],
            },
            hide_index=True,
            key="runs_jobs",
        )


common.follow(board, activity(runs).active)
if len(runs) > SHOWN:
    st.checkbox(f"Show all {len(runs)} runs", key="runs_show_all")

done = [r for r in runs if r.status == RunStatus.DONE]
if len(done) >= 2:
    st.subheader("Compare runs")
    labels = common.run_labels(done)
    picked = st.multiselect("Runs to compare", list(labels), default=list(labels)[:2], format_func=labels.get, key="runs_compare")
    st.page_link(
        common.PAGE_FILES["compare"], label="Open these in Compare", icon=":material/compare:", query_params={"runs": ",".join(picked)}, disabled=not picked
    )
