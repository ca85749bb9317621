"""Inspect a saved model: upload a .keras file and a zip of class folders (or name files on the
server); a worker loads it in Keras safe mode, evaluates it in both BN modes, records every BN layer
and diagnoses it. The result says what a post-mortem can tell, and PreciseBN runs from here, with the
recalibrated model's download. This process never loads the model: the "inspect" job runs in a
worker (bnviz.tf.inspect.inspect_job)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from bnviz import forms
from bnviz.data import DataError
from bnviz.labels import md_literal
from bnviz.records import Job, RunStatus
from pages import common, diagnose_panels

common.frame_if_run_alone()

ss = st.session_state

st.title("Inspect a saved model")
st.caption(
    "For a model you trained yourself: bnviz loads it in Keras safe mode (no Lambda or custom code runs), evaluates it "
    "with moving statistics and with batch statistics, records every BatchNormalization layer once and explains the gap. "
    f"Files up to {forms.MAX_UPLOAD_BYTES // 2**20} MB. From a terminal: `bnviz inspect model.keras --data images.zip`."
)
source = st.radio(
    "Files",
    ["upload", "server"],
    horizontal=True,
    key="inspect_source",
    format_func={"upload": "Upload a .keras file and a zip", "server": "Files on this server"}.get,
)


def job_args() -> dict | None:
    """The job's arguments: the files from the chosen source, a name and the training steps if known; None until complete."""
    left, right = st.columns(2, gap="large")
    name = left.text_input("Name", key="inspect_name", placeholder="my-resnet")
    steps = left.number_input(
        "Training steps (if you know them)",
        min_value=0,
        value=None,
        step=1,
        key="inspect_steps",
        placeholder="unknown",
        help="Moving-average updates the model took in training (one per batch). With it the diagnosis weighs the "
        "initial values by mᵗ; without it, by the fingerprint they leave in the statistics.",
    )
    files = server_files(left, right) if source == "server" else uploaded_files(left, right)
    if files is None:
        return None
    return files | {"name": name or files.get("name", ""), "steps": int(steps) if steps else None}


def server_files(left: DeltaGenerator, right: DeltaGenerator) -> dict | None:
    """Paths named on this server; None until the model and images are named and exist."""
    model = left.text_input("Model file (.keras)", key="inspect_model_path")
    data = right.text_input("Images: a folder of class sub-folders, or a zip", key="inspect_data_path")
    test = right.text_input("Separate test images (optional)", key="inspect_test_path")
    missing = [p for p in (model, data, test) if p and not Path(p).expanduser().exists()]
    if missing:
        st.error(f"Not found on this server: {md_literal(', '.join(missing))}")
    if not (model and data) or missing:
        return None
    return {"model": str(Path(model).expanduser()), "data": str(Path(data).expanduser()), "test": str(Path(test).expanduser()) if test else None}


def uploaded_files(left: DeltaGenerator, right: DeltaGenerator) -> dict | None:
    """The uploads written to the home folder, named after the model file; None until both are given."""
    model = left.file_uploader("Model (.keras)", type=["keras"], key="inspect_model_file")
    data = right.file_uploader("Images: a zip of class sub-folders", type=["zip"], key="inspect_data_zip")
    if not (model and data):
        return None
    try:
        paths = [forms.save_upload(common.home_path(), f.name, f.getvalue()) for f in (model, data)]
    except DataError as exc:
        st.error(md_literal(exc))
        return None
    return {"model": str(paths[0]), "data": str(paths[1]), "test": None, "name": Path(model.name).stem}


args = job_args()
if st.button("Inspect", type="primary", key="inspect_submit", disabled=args is None, icon=":material/search:"):
    ss.inspect_job = common.manager().submit_job("inspect", args)

jobs = common.store().list_jobs(kinds=["inspect"])
common.require(jobs, "Nothing inspected yet: choose a model and its images, then press Inspect.")
job_id = ss.get("inspect_job") if ss.get("inspect_job") in {j.id for j in jobs} else jobs[0].id


def result(job: Job) -> None:
    """The inspected run: what a post-mortem has, accuracy in both modes, the findings, PreciseBN and its download."""
    run = next((r for r in common.store().list_runs() if r.info.get("job") == job.id), None)
    common.require(run, "The inspected run was deleted.")
    data = common.load_run(run)
    st.subheader(f"{md_literal(run.name)} · {len(run.info.get('bn_layers', []))} BatchNormalization layers")
    st.caption(diagnose_panels.HISTORY_NOTE)
    common.table(common.styled(run, common.modes_table(run, data.evaluations["final"])), key="inspect_accuracy")
    common.show_findings(data)
    if run.config.arch.has_moving_stats:
        st.subheader("Recalibrate (PreciseBN)")
        diagnose_panels.precisebn(run, "inspect")
    st.page_link(common.PAGE_FILES["diagnose"], label="Every chart on the Diagnose page", icon=":material/troubleshoot:", query_params={"run": run.id})


job = common.store().get_job(job_id)
if job.status.active:
    common.await_job(job.id, "Inspecting", cancel_key="inspect_cancel")
elif job.status != RunStatus.DONE:
    st.error(f"Inspection {job.status}: {md_literal(job.error or 'no reason was recorded')}")
else:
    result(job)
