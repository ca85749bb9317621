"""Inspect a saved model: upload a .keras file and a zip of class folders (or name files on the
server); a worker loads it in Keras safe mode, evaluates it in both BN modes, records every BN layer
and diagnoses it. PreciseBN is queued from here and followed on Diagnose, which offers the
recalibrated model's download. This process never loads the model: the "inspect" job runs in a
worker (bnviz.inspect.inspect_job)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from bnviz import forms
from bnviz.data import DataError
from bnviz.records import Job, RunStatus
from pages import common

common.frame_if_run_alone()

ss = st.session_state

st.title("Inspect a saved model")
st.caption("For a model you trained yourself: bnviz loads it in Keras safe mode (no Lambda or custom code runs), evaluates it "
           "with moving statistics and with batch statistics, records every BatchNormalization layer once and explains the gap. "
           f"Files up to {forms.MAX_UPLOAD_BYTES // 2**20} MB. From a terminal: `bnviz inspect model.keras --data images.zip`.")
source = st.radio("Files", ["upload", "server"], horizontal=True, key="inspect_source",
                  format_func={"upload": "Upload a .keras file and a zip", "server": "Files on this server"}.get)


def job_args() -> dict | None:
    """The job's arguments from the chosen source, uploads written to the home folder; None until complete."""
    left, right = st.columns(2, gap="large")
    name = left.text_input("Name", key="inspect_name", placeholder="my-resnet")
    if source == "server":
        model = left.text_input("Model file (.keras)", key="inspect_model_path")
        data = right.text_input("Images: a folder of class sub-folders, or a zip", key="inspect_data_path")
        test = right.text_input("Separate test images (optional)", key="inspect_test_path")
        missing = [p for p in (model, data, test) if p and not Path(p).expanduser().exists()]
        if missing:
            st.error(f"Not found on this server: {', '.join(missing)}")
        if not (model and data) or missing:
            return None
        return {"model": str(Path(model).expanduser()), "data": str(Path(data).expanduser()),
                "test": str(Path(test).expanduser()) if test else None, "name": name}
    model = left.file_uploader("Model (.keras)", type=["keras"], key="inspect_model_file")
    data = right.file_uploader("Images: a zip of class sub-folders", type=["zip"], key="inspect_data_zip")
    if not (model and data):
        return None
    try:
        paths = [forms.save_upload(common.home_path(), f.name, f.getvalue()) for f in (model, data)]
    except DataError as exc:
        st.error(str(exc))
        return None
    return {"model": str(paths[0]), "data": str(paths[1]), "test": None, "name": name or Path(model.name).stem}


args = job_args()
if st.button("Inspect", type="primary", key="inspect_submit", disabled=args is None, icon=":material/search:"):
    ss.inspect_job = common.manager().submit_job("inspect", args)

jobs = common.store().list_jobs(kinds=["inspect"])
common.require(jobs, "Nothing inspected yet: choose a model and its images, then press Inspect.")
job_id = ss.get("inspect_job") if ss.get("inspect_job") in {j.id for j in jobs} else jobs[0].id


def result(job: Job) -> None:
    """The inspected run: accuracy in both modes, the findings, PreciseBN and downloads."""
    run = next((r for r in common.store().list_runs() if r.info.get("job") == job.id), None)
    common.require(run, "The inspected run was deleted.")
    data = common.load_run(run)
    st.subheader(f"{run.name} · {len(run.info.get('bn_layers', []))} BatchNormalization layers")
    acc = data.evaluations["final"].accuracies()
    st.dataframe({"": ["inference mode (moving statistics)", "training mode (batch statistics)"],
                  **{s: [acc.get(s), acc.get(f"{s}_batchstats")] for s in ("train", "val", "test")}}, hide_index=True, key="inspect_accuracy")
    common.show_findings(data)
    if run.config.arch.norm == "batch" and st.button("Recalibrate (PreciseBN)", key="inspect_recalibrate", icon=":material/tune:",
                                                     help="Recompute every BN layer's statistics over the training images, no retraining; "
                                                          "Diagnose then shows before/after and offers the recalibrated model's download."):
        common.manager().recalibrate(run.id, 50)
        ss.diagnose_open = run.id
        st.switch_page(common.PAGE_FILES["diagnose"])
    st.page_link(common.PAGE_FILES["diagnose"], label="Every chart on the Diagnose page", icon=":material/troubleshoot:",
                 query_params={"run": run.id})


job = common.store().get_job(job_id)
if job.status.active:
    common.await_job(job.id, "Inspecting", cancel_key="inspect_cancel")
elif job.status != RunStatus.DONE:
    st.error(f"Inspection {job.status}: {job.error or 'no reason was recorded'}")
else:
    result(job)
