"""Momentum sweep: queue a grid of momentum (and batch size) values as one sweep, then see test
accuracy in both BN modes against momentum, and a heatmap when two axes vary."""

from __future__ import annotations

import time

import streamlit as st

from bnviz import figures, forms
from bnviz.config import ConfigError, validate
from bnviz.labels import md_literal
from bnviz.live import activity
from bnviz.presets import PRESETS, preset_config
from bnviz.records import RunStatus
from pages import common

common.frame_if_run_alone()

st.title("Momentum sweep")
st.caption("Keras momentum m (PyTorch uses 1 − m). Each cell is a full training run; they queue behind each other.")
left, right = st.columns(2, gap="large")
preset = left.selectbox("Model", [p for p in PRESETS if PRESETS[p]().has_moving_stats], key="sweep_preset")
momenta = left.multiselect("Momentum values", forms.MOMENTUM_STEPS, default=[0.5, 0.8, 0.9, 0.95, 0.99], key="sweep_momenta")
batches = right.multiselect("Batch sizes", forms.BATCH_SIZES, default=[32], key="sweep_batches")
epochs = common.setting_widget("epochs", "sweep_epochs", right, value=preset_config(preset).epochs)
size = common.setting_widget("input_size", "sweep_input_size", right, value=preset_config(preset).input_size)
st.caption(f"{len(momenta) * len(batches)} runs")
if st.button("Queue sweep", type="primary", key="sweep_queue", disabled=not (momenta and batches)):
    sweep = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        for b in batches:
            for m in momenta:
                config = preset_config(preset, epochs=epochs, input_size=size, batch_size=b, name=f"{preset} m={m:g} b={b}")
                common.manager().submit(validate(config.with_momentum(m)), sweep=sweep)
        st.session_state.sweep_shown = sweep
    except ConfigError as exc:
        st.error(md_literal(exc))

sweeps = sorted({r.sweep for r in common.store().list_runs() if (r.sweep or "").startswith("sweep-")}, reverse=True)
common.require(sweeps, "No sweep yet: pick values and queue one (or run `python -m bnviz sweep --momentum 0.5,0.8,0.9,0.99`).")
common.ensure_choice("sweep_shown", sweeps, sweeps[0])
shown = st.selectbox("Sweep", sweeps, key="sweep_shown")


def show(active: bool, sweep: str) -> None:
    """The sweep's count and charts, drawn again whenever one of its runs changes status (common.follow;
    each run is read once it is done)."""
    runs = common.store().list_runs(sweep=sweep)
    now = activity(runs)
    if now.active != active:
        st.rerun()
    done = [common.load_run(r) for r in runs if r.status == RunStatus.DONE]
    st.caption(f"{now.done} of {now.total} runs done" + (f" · {now.running} training · {now.queued} queued" if now.active else ""))
    x_axis = st.radio(
        "Horizontal axis",
        figures.SWEEP_AXES,
        key="sweep_x_axis",
        horizontal=True,
        format_func={"momentum": "momentum m", "window": "EMA window 1/(1 − m), log scale"}.get,
        help="The window spreads 0.9, 0.99 and 0.999 (10, 100, 1000 steps) evenly; momentum 1 has no window and is left out",
    )
    common.chart(figures.sweep_figure(done, x_axis), key="sweep_chart")
    if len({r.config.batch_size for r in runs}) > 1:
        common.chart(figures.sweep_heatmap(done), key="sweep_heatmap")


sweep_runs = common.store().list_runs(sweep=shown)
common.follow(show, activity(sweep_runs).active, shown, runs=[r.id for r in sweep_runs], detail=False)
