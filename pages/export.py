"""Export: any chart as PNG, SVG, PDF or standalone HTML, a run's data as CSV, and a one-file HTML
report. Bytes are made only when a download button is clicked."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import streamlit as st

from bnviz import export, figures
from bnviz.diagnose import FEW_LAYERS, ordered_layers
from bnviz.labels import unique_labels
from bnviz.records import RunStatus
from pages import common

common.frame_if_run_alone()

st.title("Export")
runs = [r for r in common.store().list_runs() if r.status != RunStatus.QUEUED]
common.require(runs, "No run has started yet. Queue one on the Train page.", link="train", link_label="Train a model")
common.export_request("export_run", "export_others", [r.id for r in runs])
run = common.pick_run("export_run", runs, default=common.newest_done(runs)[0])
data = common.load_run(run)
others = st.multiselect(
    "Compare with (adds comparison charts and report sections)",
    [r.id for r in runs if r.id != run.id],
    key="export_others",
    format_func=common.run_labels(runs).get,
)
common.keep_export_runs([run.id, *others])
datas = [data, *(common.load_run(r) for r in runs if r.id in others)]
static_ok, reason = export.static_export_available()
if not static_ok:
    st.warning(f"PNG, SVG and PDF are not available here: {reason}. Standalone HTML works.")

charts: dict[str, Callable[[], go.Figure]] = {"Training curves": lambda: figures.training_curves(data)}
if run.config.arch.has_moving_stats:
    charts["EMA theory"] = lambda: figures.ema_theory_figure(run.momentum, data.steps_trained)
if len(data.layers) > FEW_LAYERS:
    charts["Every BN layer at a glance"] = lambda: figures.layer_overview_figure(data)
for layer in ordered_layers(data):  # built only when picked: 53 layers are 159 names, one chart
    charts[f"Activation histograms · {layer}"] = lambda layer=layer: figures.activation_histograms(data, layer)
    charts[f"Drift · {layer}"] = lambda layer=layer: figures.drift_figure(data, layer)
    charts[f"Channel gap · {layer}"] = lambda layer=layer: figures.channel_gap_figure(data, layer)
if len(datas) > 1:
    charts["Comparison · final accuracy"] = lambda: figures.final_accuracy_figure(datas)
    charts["Comparison · probe accuracy"] = lambda: figures.compare_accuracy_figure(datas)
    for layer in [name for name in ordered_layers(data) if all(name in d.layers for d in datas)]:
        charts[f"Comparison · drift · {layer}"] = lambda layer=layer: figures.compare_drift_figure(datas, layer)

st.subheader("One chart")
st.caption("PNG, SVG and PDF are static images; HTML is the interactive chart in a file that works offline.")
common.ensure_choice("export_chart", list(charts), next(iter(charts)))
chart_col, size_col = st.columns([2, 1])
name = chart_col.selectbox("Chart", list(charts), key="export_chart")
layout = "presentation" if common.presented() else "screen"
if st.session_state.get("_export_size_layout") != layout:  # the layout's size, until the reader picks another
    st.session_state["export_size"] = st.session_state["_export_size_layout"] = layout
preset = size_col.radio(
    "Size and fonts",
    list(export.SIZE_PRESETS),
    key="export_size",
    horizontal=True,
    help="screen: as shown here · presentation: 1280×720, the projector's size, text twice the screen's (26 px) as in the "
    "presentation layout · slide: 1600×900, 24 px text · paper: 700×440, 10 px text",
)
size = export.SIZE_PRESETS[preset]
size_tag = f"{preset}-{size.width}x{size.height}" if size.width else preset  # two sizes of one chart never share a name
stem = common.slug(f"{common.run_stem(run)}-{name}")
for col, fmt in zip(st.columns(len(export.FORMATS)), export.FORMATS, strict=True):
    col.download_button(
        f"{fmt.upper()}",
        lambda fmt=fmt, build=charts[name]: export.figure_bytes(build(), fmt, preset),
        file_name=f"{stem}-{size_tag}.{fmt}",
        mime=export.MIME_TYPES[fmt],
        key=f"export_{fmt}",
        on_click="ignore",
        icon=":material/download:",
        disabled=fmt in export.STATIC_FORMATS and not static_ok,
        width="stretch",
    )
with st.expander("Preview", expanded=False):
    common.chart(export.sized(charts[name](), preset), key="export_preview")

st.subheader("Run data")
csv_col, probes_col = st.columns(2)
csv_col.download_button(
    "Metrics per step (CSV)",
    lambda: export.run_csv(data),
    file_name=f"{run.id}-steps.csv",
    mime="text/csv",
    key="export_run_csv",
    on_click="ignore",
    icon=":material/table:",
    width="stretch",
)
probes_col.download_button(
    "BN statistics per probe (CSV)",
    lambda: export.probes_csv(data),
    file_name=f"{run.id}-probes.csv",
    mime="text/csv",
    key="export_probes_csv",
    on_click="ignore",
    icon=":material/table:",
    width="stretch",
)

st.subheader("Report")
st.caption(
    "One HTML file with a contents list, the accuracy table, each run's findings and its charts"
    + (", and the comparison" if len(datas) > 1 else "")
    + "; no chart twice. It works offline."
)
default_title = f"bnviz report: {', '.join(unique_labels([d.run for d in datas]).values())}"
title = st.text_input("Report title", key="export_title", placeholder=default_title).strip() or default_title
st.download_button(
    "HTML report (one file)",
    lambda: export.html_report(datas, title).encode("utf-8"),
    file_name=f"bnviz-report-{run.id}.html",
    mime="text/html",
    key="export_report",
    on_click="ignore",
    icon=":material/description:",
    type="primary",
)
