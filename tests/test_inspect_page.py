"""The Inspect page (AppTest): upload a .keras file and a zip, a worker inspects it, the page shows
the accuracy in both modes, the diagnosis and PreciseBN with the repaired model's download; a bad
file shows the job's one-line error; a step count the user knows goes into the job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bnviz.records import Evaluation, RunStatus
from bnviz.store import Store
from pages.diagnose_panels import HISTORY_NOTE
from tests.conftest import zip_bytes
from tests.test_app import errors, open_app
from tests.test_diagnose_page import inspected
from tests.test_inspect import image_files

JOB_TIMEOUT_S = 180


def upload_files(data, folder: Path) -> tuple[Path, Path]:
    """A trained residual model saved as mine.keras and a zip of class folders, images.zip, in `folder`."""
    import keras

    from tests.test_callback import residual_model

    keras.utils.set_random_seed(0)
    model = residual_model(data.num_classes)
    model.fit(data.x_train, data.y_train, batch_size=16, epochs=1, verbose=0)
    model.save(folder / "mine.keras")
    (folder / "images.zip").write_bytes(zip_bytes(image_files(data)))
    return folder / "mine.keras", folder / "images.zip"


@pytest.fixture(scope="module")
def upload(tiny_data, tmp_path_factory) -> dict[str, bytes]:
    """The two files' bytes by name."""
    return {path.name: path.read_bytes() for path in upload_files(tiny_data, tmp_path_factory.mktemp("upload"))}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh home folder, set before the AppTest starts its job manager."""
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    return tmp_path


def wait_jobs(home: Path) -> None:
    store, deadline = Store(home), time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline and any(j.status.active for j in store.list_jobs()):
        time.sleep(0.5)
    logs = "".join(p.read_text()[-3000:] for p in sorted((home / "logs").glob("*.log")))
    assert not any(j.status.active for j in store.list_jobs()), logs


def submit(at, model: tuple[str, bytes], data: tuple[str, bytes]):
    at.file_uploader(key="inspect_model_file").upload(model[0], model[1], "application/octet-stream").run()
    at.file_uploader(key="inspect_data_zip").upload(data[0], data[1], "application/zip").run()
    assert not errors(at) and not at.button(key="inspect_submit").disabled
    at.button(key="inspect_submit").click().run()
    return at


@pytest.mark.slow
def test_an_uploaded_model_is_inspected_in_a_worker_and_diagnosed(home, upload):
    at = open_app("inspect")
    assert at.button(key="inspect_submit").disabled and any("Nothing inspected yet" in i.value for i in at.info)
    submit(at, *[(name, upload[name]) for name in ("mine.keras", "images.zip")])
    wait_jobs(home)
    at.run()
    assert not at.exception and not [e for e in errors(at) if e.startswith("Inspection")], (at.exception, errors(at))
    (run,) = Store(home).list_runs()
    assert (run.name, run.status, run.info["source"]) == ("mine", "done", "inspect")
    accuracy = at.dataframe[0].value
    assert list(accuracy.columns) == ["train", "val", "test"] and accuracy[["train", "test"]].notna().all(axis=None)
    shown = " ".join(m.value for m in [*at.info, *at.warning, *at.error, *at.success])
    assert "training history is unknown" in shown
    at.button(key="inspect_recalibrate").click().run()
    assert [j.kind for j in Store(home).list_jobs(run_id=run.id)] == ["recalibrate"]
    wait_jobs(home)
    at.run()  # PreciseBN's result on the Inspect page itself
    assert "precisebn" in Store(home).evaluations(run.id)
    assert [b.proto.label for b in at.get("download_button")] == ["Download the recalibrated model (.keras)"]
    at.switch_page("pages/diagnose.py").run()
    assert any("cannot retrain it" in c.value for c in at.caption), "Diagnose offers no retraining lever for an inspected model"
    assert [b.proto.label for b in at.get("download_button")] == ["Download the recalibrated model (.keras)"]
    assert at.caption[0].value.startswith("done · a saved model, inspected (training history unknown) · 3 BN layers")


@pytest.mark.slow
def test_a_file_that_is_not_a_model_fails_its_job_with_one_line(home, upload):
    at = open_app("inspect")
    submit(at, ("notes.keras", b"just text"), ("images.zip", upload["images.zip"]))
    wait_jobs(home)
    at.run()
    assert errors(at) == ["Inspection failed: notes.keras is not a Keras model file: a .keras file is a zip holding config.json (File is not a zip file)."]
    assert Store(home).list_runs() == []


@pytest.mark.slow
def test_the_training_steps_the_user_knows_go_into_the_job(home, monkeypatch):
    monkeypatch.setattr("bnviz.jobs.JobManager.pump", lambda self: None)  # no worker: the job stays queued, its args as submitted
    model, images = home / "mine.keras", home / "images.zip"
    for path in (model, images):
        path.write_bytes(b"only its existence is checked here")
    at = open_app("inspect")
    at.radio(key="inspect_source").set_value("server").run()
    at.text_input(key="inspect_model_path").input(str(model)).run()
    at.text_input(key="inspect_data_path").input(str(images)).run()
    at.number_input(key="inspect_steps").set_value(300).run()
    at.button(key="inspect_submit").click().run()
    (job,) = Store(home).list_jobs(kinds=["inspect"])
    assert job.args == {"model": str(model), "data": str(images), "test": None, "name": "", "steps": 300}
    at.number_input(key="inspect_steps").set_value(0).run()  # 0: unknown
    at.button(key="inspect_submit").click().run()
    assert Store(home).list_jobs(kinds=["inspect"])[0].args["steps"] is None


@pytest.mark.slow
def test_a_finished_inspection_offers_precisebn_and_the_repaired_model_on_the_page(home, monkeypatch):
    monkeypatch.setattr("bnviz.jobs.JobManager.pump", lambda self: None)
    store = Store(home)
    job_id = store.enqueue_job("inspect", {"model": "mine.keras", "data": "images.zip"})
    store.finish_job(job_id, RunStatus.DONE)
    run_id = inspected(store, job=job_id)
    at = open_app("inspect")
    assert HISTORY_NOTE in [c.value for c in at.caption] and not at.get("download_button")
    at.button(key="inspect_recalibrate").click().run()
    (job,) = store.list_jobs(run_id=run_id, kinds=["recalibrate"])
    assert job.args == {"batches": 50} and at.title[0].value == "Inspect a saved model"  # queued from here; the page stays
    store.add_evaluation(run_id, "precisebn", Evaluation.from_dict({"accuracy": {"test": 0.9}, "batches": 50, "calibrated_on": "train"}))
    (store.models_dir / f"{run_id}-precisebn.keras").write_bytes(b"the worker's saved model")
    store.finish_job(job.id, RunStatus.DONE)  # what the worker leaves behind
    at.run()
    assert not at.exception, at.exception
    (table,) = [d.value for d in at.dataframe if "before (moving statistics)" in d.value.index]
    assert table.loc["after PreciseBN on train (50 batches)", "test"] == 0.9
    assert [b.proto.label for b in at.get("download_button")] == ["Download the recalibrated model (.keras)"]
