"""Compare runs: probe accuracy in both modes, final accuracy, drift of one BN layer. Open on given
runs with `?runs=<id>,<id>` or `st.session_state["compare_open"] = [ids]`."""

from __future__ import annotations

import streamlit as st

from bnviz import figures
from bnviz.diagnose import ordered_layers
from bnviz.labels import pair_of_interest
from pages import common, slides

common.frame_if_run_alone()

scale = common.scale()
runs = common.store().list_runs()
if common.presented() and runs:
    slides.compare(runs)
st.title("Compare runs")
common.require(runs, "No run yet. Queue some on the Train page, e.g. the bn and final presets.", link="train", link_label="Train a model")
picked = common.pick_runs(
    "compare_runs",
    runs,
    default=pair_of_interest(runs),
    label="Runs to compare (at first: the newest run and its parent, a what-if copy's original, or its seed twin)",
)
common.require(picked, "Pick one or more runs to compare.")
st.page_link(
    common.PAGE_FILES["export"],
    label="Export these runs: charts and a report",
    icon=":material/download:",
    query_params={"runs": ",".join(r.id for r in picked)},
)


def show(active: bool, statuses: dict[str, str]) -> None:
    """The chosen runs' figures from their records as stored, drawn again as they move on while one is
    queued or training (common.follow); a status that moved on reruns the page."""
    now = {r.id: r for r in common.store().list_runs() if r.id in statuses}
    if {i: r.status for i, r in now.items()} != statuses:
        st.rerun()
    datas = [common.load_run(now[i]) for i in statuses]
    if active:
        st.caption("Some of these runs are still queued or training: the charts follow their records as they are stored.")

    st.subheader("Final accuracy")
    frame = figures.accuracy_frame(datas)
    common.table(frame.style.format("{:.1%}", na_rep="–"), key="compare_accuracy_table")
    common.chart(figures.final_accuracy_figure(datas, scale=scale), key="compare_final")

    st.subheader("Probe accuracy during training")
    common.chart(figures.compare_accuracy_figure(datas, scale=scale), key="compare_accuracy")

    st.subheader("Moving statistics against the population")
    shared = [layer for layer in ordered_layers(datas[0]) if all(layer in d.layers for d in datas)]
    if not shared:
        st.info("These runs share no BatchNormalization layer with probe records, so there is no drift to compare.")
        return
    worst = next(name for name in common.ranked_layer_names(datas[0]) if name in shared)  # in the first run
    common.ensure_choice("compare_layer", shared, worst)
    layer = st.columns([1, 3])[0].selectbox("BN layer (network order; at first the one furthest off in the first run)", shared, key="compare_layer")
    common.chart(figures.compare_drift_figure(datas, layer, scale=scale), key="compare_drift")


common.follow(show, any(r.status.active for r in picked), {r.id: r.status for r in picked}, runs=[r.id for r in picked])
