"""Train: start from a seed model, edit it, choose BN momentum, training and data, queue a run."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from bnviz import forms
from bnviz.config import SETTING, ProbeConfig, RunConfig, check_batch_size, validate, with_settings
from bnviz.data import DataError
from bnviz.jobs import check_memory
from bnviz.presets import PRESETS, SEED_RESULTS
from bnviz.shapes import layer_table, param_counts
from pages import common

common.frame_if_run_alone()

ss, KEEP = st.session_state, "session"  # persist_state: the form survives page switches
ADVANCED_BN = ("epsilon", "center", "scale", "beta_initializer", "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer")


def load_preset() -> None:
    form = forms.form_from_preset(ss.train_preset)
    ss.train_blocks, ss.train_norm, ss.train_placement = len(form.filters), form.norm, form.placement
    ss.train_dropout, ss.train_momentum, ss.train_momentum_scale = form.dropout, form.momentum, forms.nearest_momentum(form.momentum)
    for i, filters in enumerate(form.filters):
        ss[f"train_filters_{i}"] = filters


def momentum_slid() -> None:
    ss.train_momentum = ss.train_momentum_scale


def momentum_typed() -> None:
    ss.train_momentum_scale = forms.nearest_momentum(ss.train_momentum)


if "train_preset" not in ss:
    ss.train_preset = "bn"
    load_preset()
d = RunConfig()
common.defaults({"train_batch_size": d.batch_size, "train_epochs": d.epochs, "train_learning_rate": d.learning_rate,
                 "train_seed": d.seed, "train_input_size": d.input_size, "train_optimizer": d.optimizer, "train_name": "",
                 "train_dataset": "synthetic", "train_folder": "", "train_raw_pixels": False,
                 "train_probe_every": d.probe.every, "train_probe_budget": d.probe.budget})
common.defaults({f"train_{name}": SETTING[name].default for name in ADVANCED_BN + ("shuffle",)})
common.defaults({f"train_filters_{i}": 16 for i in range(6)})
errors, slot, scan, blocked = {}, {}, None, False

st.title("Train a model")
st.caption("Start from one of the seed notebook's four models, change what you like and queue a run. "
           "Training happens in a worker process; follow it on the Runs page.")
model_col, train_col, data_col = st.columns(3, gap="large")
with model_col:
    st.subheader("Model")
    st.selectbox("Start from the seed model", list(PRESETS), key="train_preset", on_change=load_preset, persist_state=KEEP)
    st.caption("Seed notebook: train {:.0%} · val {:.0%} · test {:.0%}".format(*SEED_RESULTS[ss.train_preset]))
    st.number_input("Conv blocks (Conv → norm → MaxPool)", 1, 6, key="train_blocks", persist_state=KEEP)
    filters = tuple(c.number_input(f"Filters {i + 1}", 1, 512, key=f"train_filters_{i}", persist_state=KEEP)
                    for i, c in enumerate(st.columns(ss.train_blocks)))
    slot["filters"] = st.empty()
    st.selectbox("Normalisation", list(forms.NORM_LABELS), format_func=forms.NORM_LABELS.get, key="train_norm", persist_state=KEEP)
    uses_bn = ss.train_norm == "batch"
    st.radio("BN placement", list(forms.PLACEMENT_LABELS), format_func=forms.PLACEMENT_LABELS.get, key="train_placement",
             horizontal=True, disabled=not uses_bn, persist_state=KEEP)
    st.slider(SETTING["dropout"].label, 0.0, 0.9, step=0.05, key="train_dropout", persist_state=KEEP)
    slot["dropout"] = st.empty()
    with st.expander("Advanced BN"):
        for name in ADVANCED_BN:
            common.setting_widget(name, f"train_{name}", disabled=not uses_bn, **({"format": "%.1e"} if name == "epsilon" else {}))
            slot[name] = st.empty()

with train_col:
    st.subheader("Training")
    st.select_slider("BN momentum m: moving = m·moving + (1 − m)·batch", forms.MOMENTUM_STEPS, key="train_momentum_scale",
                     on_change=momentum_slid, disabled=not uses_bn, persist_state=KEEP)
    st.number_input("Exact momentum (Keras convention; PyTorch's momentum is 1 − m)", step=0.001, format="%.4f",
                    key="train_momentum", on_change=momentum_typed, disabled=not uses_bn, persist_state=KEEP)
    slot["momentum"] = st.empty()
    st.select_slider("Batch size", forms.BATCH_SIZES, key="train_batch_size", persist_state=KEEP)
    slot["batch_size"] = st.empty()
    common.setting_widget("epochs", "train_epochs")
    slot["epochs"] = st.empty()
    st.select_slider("Learning rate", forms.LEARNING_RATES, format_func="{:g}".format, key="train_learning_rate", persist_state=KEEP)
    st.slider(SETTING["input_size"].label, int(SETTING["input_size"].low), int(SETTING["input_size"].high), step=4, key="train_input_size",
              persist_state=KEEP)
    slot["input_size"] = st.empty()
    left, right = st.columns(2)
    common.setting_widget("optimizer", "train_optimizer", left)
    common.setting_widget("seed", "train_seed", right)
    common.setting_widget("shuffle", "train_shuffle")
    with st.expander("Probe: what is recorded, and when"):
        st.number_input("Probe every N steps (0: geometric, dense early where mᵗ moves fastest; epoch ends always)", 0, 100_000,
                        key="train_probe_every", persist_state=KEEP)
        st.select_slider("Time the probe may take inside training", forms.PROBE_BUDGETS, format_func=forms.probe_budget_label,
                         key="train_probe_budget", persist_state=KEEP,
                         help="Each record runs the probe batch and the population sample forward. Within this share of the "
                              "training time records are made as training goes (live charts on long runs); the rest are made "
                              "from weight snapshots when training ends, so training itself never slows by more.")

with data_col:
    st.subheader("Data")
    source = st.radio("Data set", list(forms.DATA_SOURCES), format_func=forms.DATA_SOURCES.get, key="train_dataset", persist_state=KEEP)
    if source == "folder":
        st.text_input("Folder path (one sub-folder per class, or train/ and test/ with those)", key="train_folder",
                      placeholder="/data/intel-images/seg_train", persist_state=KEEP)
        blocked = not ss.train_folder.strip()
        try:
            scan = None if blocked else common.scan(ss.train_folder.strip())
        except DataError as exc:
            errors["dataset"] = str(exc)
    elif source == "zip":
        upload = st.file_uploader("Zip of class sub-folders", type=["zip"], key="train_zip")
        blocked = upload is None
        if upload is not None and ss.get("train_zip_result", ("",))[0] != upload.file_id:
            try:
                ss.train_zip_result = (upload.file_id, forms.extract_upload(common.home_path(), upload.name, upload.getvalue()).path, "")
            except DataError as exc:
                ss.train_zip_result = (upload.file_id, "", str(exc))
        if upload is not None and ss.train_zip_result[2]:
            errors["dataset"] = ss.train_zip_result[2]
        elif upload is not None:
            scan = common.scan(ss.train_zip_result[1])
    slot["dataset"] = st.empty()
    st.checkbox("Feed raw 0–255 pixels (as the seed notebook did; no Rescaling layer)", key="train_raw_pixels", persist_state=KEEP,
                help="The presets scale pixels to 0–1 inside the model. On the embedded data, raw pixels keep the models without BN "
                     "from training in so few steps.")
    if scan:
        st.caption(f"{len(scan.classes)} classes ({', '.join(scan.classes)}) · {scan.files} files · {scan.layout} · `{scan.path}`")
    st.text_input("Run name (optional)", key="train_name", persist_state=KEEP)

momentum = ss.train_momentum if ss.train_momentum is not None else math.nan
arch = forms.arch_from_form(ss.train_preset, forms.ArchForm(filters, ss.train_norm, ss.train_placement, float(ss.train_dropout), momentum,
                                                                ss.train_raw_pixels))
preset, default_name = forms.run_name(ss.train_preset, arch)
config = RunConfig(arch=arch, preset=preset, name=ss.train_name.strip() or default_name, dataset=scan.path if scan else source,
                   input_size=int(ss.train_input_size), epochs=int(ss.train_epochs), batch_size=int(ss.train_batch_size),
                   optimizer=ss.train_optimizer, learning_rate=float(ss.train_learning_rate), seed=int(ss.train_seed),
                   probe=ProbeConfig(every=int(ss.train_probe_every), budget=float(ss.train_probe_budget)))
config = with_settings(config, shuffle=bool(ss.train_shuffle), **{name: ss[f"train_{name}"] for name in ADVANCED_BN})
counts = None
try:
    counts = param_counts(arch, config.input_size, num_classes=forms.num_classes(source, scan))
    check_memory(validate(config))
    check_batch_size(config.batch_size, forms.train_images(source, scan))
except ValueError as exc:
    errors.setdefault(forms.error_field(exc), str(exc))
for field, message in errors.items():
    slot.get(field, st).error(message)

st.divider()
steps = forms.estimated_steps(config, forms.train_images(source, scan))
cols = st.columns(4)
if counts:
    cols[0].metric("Parameters", f"{counts['total']:,}", help=f"{counts['trainable']:,} trainable")
    cols[1].metric("Moving statistics", f"{counts['non_trainable']:,}", help="Non-trainable: BN's moving mean and variance")
if steps:
    cols[2].metric("Training steps", f"≈ {steps:,}", help="Moving-average updates: one per training batch")
if steps and uses_bn and math.isfinite(momentum) and 0 <= momentum <= 1:
    out = forms.momentum_outlook(momentum, steps)
    cols[3].metric("Initial 0 / 1 left at the end", f"{out['remaining']:.1%}",
                   help="mᵗ: the weight the moving statistics still give their initial mean 0 and variance 1 after t steps")
    st.caption(f"With momentum {momentum:g} the moving average spans about {out['window']:.3g} batches and halves the weight of its "
               f"initial values every {out['half_life']:.2g} steps. After ≈ {steps:,} steps they still weigh {out['remaining']:.1%}"
               + (f": inference will use statistics that are partly not data. A momentum ≤ {out['suggested']:g} forgets them to below 1 %."
                  if out["remaining"] > 0.01 else "."))
if counts:
    with st.expander("Layers and output shapes"):
        rows = layer_table(arch, config.input_size, num_classes=forms.num_classes(source, scan))
        st.dataframe(pd.DataFrame([{"layer": r.name, "type": r.kind, "output": str(r.output_shape), "trainable": r.trainable,
                                    "non-trainable": r.non_trainable} for r in rows]), hide_index=True)

if st.button("Queue run", type="primary", key="train_queue", disabled=bool(errors) or blocked):
    try:
        ss.train_last_run = common.manager().submit(config)
    except ValueError as exc:
        st.error(str(exc))
if ss.get("train_last_run"):
    st.success(f"Queued run `{ss.train_last_run}`.")
    st.page_link(common.PAGE_FILES["runs"], label="Follow it on the Runs page", icon=":material/list:")
