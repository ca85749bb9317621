"""Train: start from a seed model, edit it, choose BN momentum, training and data, queue a run. "Copy
link" gives an address that reopens the form with the same settings (bnviz.forms.LINK_FIELDS)."""

from __future__ import annotations

import math
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from bnviz import forms
from bnviz.config import BLOCKS_RANGE, BN_ARGUMENTS, FILTERS_RANGE, SETTING, Norm, check_batch_size, validate
from bnviz.jobs import check_memory
from bnviz.labels import md_literal
from bnviz.presets import PRESETS, SEED_RESULTS
from bnviz.shapes import layer_table, param_counts
from bnviz.story import primer
from pages import common, data_source

common.frame_if_run_alone()

ss, KEEP = st.session_state, "session"  # persist_state: the form survives page switches
ADVANCED_BN = tuple(name for name in BN_ARGUMENTS if name != "momentum")  # momentum has its own slider


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


def link_value(field: str) -> object:
    """The form's current value of a link field (filters: the tuple of every block's filters)."""
    if field == "filters":
        return tuple(ss[f"train_filters_{i}"] for i in range(ss.train_blocks))
    return ss.get(f"train_{field}")


def apply_link() -> None:
    """Open the form on a shared link's settings (`?preset=bn&momentum=0.9&...`, bnviz.forms.LINK_FIELDS),
    then clear them from the address. A value the form cannot hold leaves its widget as it was and is
    marked beside it until that widget changes; nothing in a link raises."""
    query = {name: st.query_params[name] for name in forms.LINK_FIELDS if name in st.query_params}
    if not query:
        return
    values, problems = forms.parse_link(query)
    if "preset" in values:
        ss.train_preset = values.pop("preset")
        load_preset()
    filters = values.pop("filters", ())
    for i, count in enumerate(filters):
        ss[f"train_filters_{i}"] = count
    ss.train_blocks = len(filters) or ss.train_blocks
    if "momentum" in values:
        ss.train_momentum_scale = forms.nearest_momentum(values["momentum"])
    for name, value in values.items():
        ss[f"train_{name}"] = value
    ss.train_link_problems = {field: (message, link_value(field)) for field, message in problems.items()}
    for name in query:
        del st.query_params[name]


def copy_link(source: str) -> None:
    """A popover with the address that reopens this form with exactly these settings."""
    values = {field: link_value(field) for field in forms.LINK_FIELDS if field not in ("dataset", "folder")}
    if source in forms.LINKABLE_SOURCES:
        values |= {"dataset": source, "folder": ss.train_folder}
    layout = {common.LAYOUT_PARAM: "presentation"} if common.presented() else {}  # a teacher's link opens in the teacher's layout
    url = (st.context.url or "").split("?")[0] + "?" + urlencode(forms.link_query(values) | layout)
    with queue_slot.popover("Copy link", icon=":material/link:", use_container_width=True):
        st.code(url, language=None, wrap_lines=True)
        st.caption(
            "This address opens the Train page with these settings (copy it with the icon at its right)."
            + ("" if source in forms.LINKABLE_SOURCES else " An uploaded zip cannot travel in a link: the data set is left out.")
        )


if "train_preset" not in ss:
    ss.train_preset = "bn"
    load_preset()
common.defaults({f"train_{name}": SETTING[name].default for name in forms.FORM_SETTINGS})
common.defaults({"train_name": "", "train_dataset": "synthetic", "train_folder": "", "train_raw_pixels": False, **{f"train_filters_{i}": 16 for i in range(6)}})
apply_link()
errors, slot = {}, {}

head, queue_slot = st.columns([4, 1], vertical_alignment="bottom")
head.title("Train a model")
st.markdown(primer())
path = st.columns([1, 1, 2])
path[0].page_link(common.PAGE_FILES["story"], label="The Story: four models", icon=":material/school:")
path[1].page_link(common.PAGE_FILES["diagnose"], label="Diagnose a run", icon=":material/troubleshoot:")
path[2].caption(
    "Or train your own: start from a seed model, change what you like and queue it (top right). Training runs in a worker process; follow it on the Runs page."
)
model_col, train_col, data_col = st.columns(3, gap="large")
with model_col:
    st.subheader("Model")
    st.selectbox("Start from the seed model", list(PRESETS), key="train_preset", on_change=load_preset, persist_state=KEEP)
    slot["preset"] = st.empty()
    st.caption("Seed notebook: train {:.0%} · val {:.0%} · test {:.0%}".format(*SEED_RESULTS[ss.train_preset]))
    st.number_input("Conv blocks (Conv → norm → MaxPool)", *BLOCKS_RANGE, key="train_blocks", persist_state=KEEP)
    filters = tuple(
        c.number_input(f"Filters {i + 1}", *FILTERS_RANGE, key=f"train_filters_{i}", persist_state=KEEP) for i, c in enumerate(st.columns(ss.train_blocks))
    )
    slot["filters"] = st.empty()
    st.selectbox(SETTING["norm"].label, list(forms.NORM_LABELS), format_func=forms.NORM_LABELS.get, key="train_norm", persist_state=KEEP)
    slot["norm"] = st.empty()
    uses_bn = Norm(ss.train_norm).has_moving_stats
    st.radio(
        SETTING["placement"].label,
        list(forms.PLACEMENT_LABELS),
        format_func=forms.PLACEMENT_LABELS.get,
        key="train_placement",
        horizontal=True,
        disabled=not uses_bn,
        persist_state=KEEP,
    )
    slot["placement"] = st.empty()
    st.slider(SETTING["dropout"].label, 0.0, forms.DROPOUT_MAX, step=forms.DROPOUT_STEP, key="train_dropout", persist_state=KEEP)
    slot["dropout"] = st.empty()
    with st.expander("Advanced BN"):
        for name in ADVANCED_BN:
            common.setting_widget(name, f"train_{name}", disabled=not uses_bn, **({"format": "%.1e"} if name == "epsilon" else {}))
            slot[name] = st.empty()

with train_col:
    st.subheader("Training")
    st.select_slider(
        SETTING["momentum"].label, forms.MOMENTUM_STEPS, key="train_momentum_scale", on_change=momentum_slid, disabled=not uses_bn, persist_state=KEEP
    )
    st.number_input(
        f"Exact momentum ({SETTING['momentum'].help})",
        step=0.001,
        format="%.4f",
        key="train_momentum",
        on_change=momentum_typed,
        disabled=not uses_bn,
        persist_state=KEEP,
    )
    slot["momentum"] = st.empty()
    forecast = st.container()
    st.select_slider(SETTING["batch_size"].label, forms.BATCH_SIZES, key="train_batch_size", persist_state=KEEP)
    slot["batch_size"] = st.empty()
    common.setting_widget("epochs", "train_epochs")
    slot["epochs"] = st.empty()
    st.select_slider(SETTING["learning_rate"].label, forms.LEARNING_RATES, format_func="{:g}".format, key="train_learning_rate", persist_state=KEEP)
    slot["learning_rate"] = st.empty()
    st.slider(
        SETTING["input_size"].label,
        int(SETTING["input_size"].low),
        int(SETTING["input_size"].high),
        step=forms.INPUT_SIZE_STEP,
        key="train_input_size",
        persist_state=KEEP,
    )
    slot["input_size"] = st.empty()
    left, right = st.columns(2)
    common.setting_widget("optimizer", "train_optimizer", left)
    common.setting_widget("seed", "train_seed", right)
    slot["optimizer"], slot["seed"] = left.empty(), right.empty()
    common.setting_widget("shuffle", "train_shuffle")
    slot["shuffle"] = st.empty()
    with st.expander("Probe: what is recorded, and when"):
        common.setting_widget("probe_every", "train_probe_every")
        slot["probe_every"] = st.empty()
        st.select_slider(
            SETTING["probe_budget"].label,
            forms.PROBE_BUDGETS,
            format_func=forms.probe_budget_label,
            key="train_probe_budget",
            persist_state=KEEP,
            help=SETTING["probe_budget"].help,
        )
        slot["probe_budget"] = st.empty()

with data_col:
    st.subheader("Data")
    source = st.radio("Data set", list(forms.DATA_SOURCES), format_func=forms.DATA_SOURCES.get, key="train_dataset", persist_state=KEEP)
    scan, error, blocked = data_source.folder_or_zip(source)
    if error:
        errors["dataset"] = error
    slot["dataset"] = st.empty()
    st.checkbox(
        "Feed raw 0–255 pixels (as the seed notebook did; no Rescaling layer)",
        key="train_raw_pixels",
        persist_state=KEEP,
        help="The presets scale pixels to 0–1 inside the model. On the embedded data, raw pixels keep the models without BN from training in so few steps.",
    )
    slot["raw_pixels"] = st.empty()
    if scan:
        st.caption(f"{len(scan.classes)} classes ({md_literal(', '.join(scan.classes))}) · {scan.files} files · {scan.layout} · `{scan.path}`")
    st.text_input("Run name (optional)", key="train_name", persist_state=KEEP)

momentum = ss.train_momentum if ss.train_momentum is not None else math.nan
form = forms.ArchForm(filters, ss.train_norm, ss.train_placement, float(ss.train_dropout), momentum, ss.train_raw_pixels)
config = forms.form_config(ss.train_preset, form, {name: ss[f"train_{name}"] for name in forms.FORM_SETTINGS}, ss.train_name, scan.path if scan else source)
arch, counts = config.arch, None
try:
    counts = param_counts(arch, config.input_size, num_classes=forms.num_classes(source, scan))
    check_memory(validate(config))
    check_batch_size(config.batch_size, forms.train_images(source, scan))
except ValueError as exc:
    errors.setdefault(forms.error_field(exc), str(exc))
for field, (message, value) in ss.get("train_link_problems", {}).items():
    if link_value(field) == value:  # the link's bad value is marked until its widget changes
        errors.setdefault(field, message)
for field, message in errors.items():
    slot.get(field, st).error(md_literal(message))

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
    forecast.metric(
        "Initial values 0 / 1 left at the end, mᵗ",
        f"{out['remaining']:.1%}",
        help="mᵗ: the weight the moving statistics still give their initial mean 0 and variance 1 after t steps",
    )
    forecast.caption(forms.outlook_text(momentum, out))
if counts:
    with st.expander("Layers and output shapes"):
        rows = layer_table(arch, config.input_size, num_classes=forms.num_classes(source, scan))
        st.dataframe(
            pd.DataFrame(
                [{"layer": r.name, "type": r.kind, "output": str(r.output_shape), "trainable": r.trainable, "non-trainable": r.non_trainable} for r in rows]
            ),
            hide_index=True,
        )

if queue_slot.button("Queue run", type="primary", key="train_queue", disabled=bool(errors) or blocked, use_container_width=True):
    try:
        ss.train_last_run = common.manager().submit(config)
    except ValueError as exc:
        st.error(md_literal(exc))
copy_link(source)
if ss.get("train_last_run"):
    st.success(f"Queued run `{ss.train_last_run}`.")
    st.page_link(common.PAGE_FILES["runs"], label="Follow it on the Runs page", icon=":material/list:")
