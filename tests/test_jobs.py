"""The one job channel: jobs of any kind in the store, drained by the same worker, with status,
progress and error that survive a restart and show on the Runs page; typed records."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bnviz import jobs
from bnviz.config import ConfigError
from bnviz.executors import WorkerLimits
from bnviz.jobs import resident_mb
from bnviz.presets import preset_config
from bnviz.records import Evaluation, JobStatus, RunStatus
from bnviz.store import Store
from bnviz.tf.worker import drain_queue
from tests.conftest import APP_TIMEOUT_S
from tests.test_app import errors

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def echo_job(store: Store, job, progress) -> None:
    """A test handler: reports progress, then fails or finishes as its args say."""
    progress(f"working on {job.args['word']}")
    if job.args.get("fail"):
        raise ValueError(f"cannot do {job.args['word']}\nsecond line stays in the log")


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setitem(jobs.JOB_HANDLERS, "echo", "tests.test_jobs:echo_job")


def test_worker_drains_jobs_of_any_kind_and_records_how_each_ended(tmp_path, echo, monkeypatch):
    monkeypatch.setitem(jobs.JOB_HANDLERS, "missing", "bnviz.no_such_module:handler")
    store = Store(tmp_path)
    ok = store.enqueue_job("echo", {"word": "this"})
    bad = store.enqueue_job("echo", {"word": "that", "fail": True})
    missing = store.enqueue_job("missing")
    assert drain_queue(str(tmp_path)) == 3
    after = {j.id: j for j in Store(tmp_path).list_jobs()}  # a new handle: everything is in the file
    assert (after[ok].status, after[ok].progress, after[ok].error) == (JobStatus.DONE, "working on this", None)
    assert after[bad].status == "failed" and after[bad].error == "ValueError: cannot do that"
    assert after[missing].status == "failed" and "not available in this installation" in after[missing].error
    assert all(j.owner and j.owner.pid and j.finished for j in after.values())


def test_unknown_kind_is_refused_at_submit(tmp_path):
    with pytest.raises(ValueError, match="Unknown job kind"):
        jobs.JobManager(Store(tmp_path)).submit_job("nope", {})


def test_a_queued_run_has_its_train_job_and_cancelling_the_run_cancels_it(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"))
    (job,) = store.list_jobs(run_id=run_id)
    assert (job.kind, job.status) == ("train", JobStatus.QUEUED)
    store.request_cancel(run_id)
    assert store.get_job(job.id).status == JobStatus.CANCELLED and store.claim_job() is None


def test_list_jobs_filters_by_run_kind_and_status(tmp_path, echo):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    recal = store.enqueue_job("recalibrate", {"batches": 5}, run_id)
    store.enqueue_job("echo", {"word": "x"})
    assert [j.id for j in store.list_jobs(run_id=run_id)] == [recal]
    assert [j.kind for j in store.list_jobs(kinds=["echo"])] == ["echo"]
    assert len(store.list_jobs(status=[JobStatus.QUEUED])) == 2 and store.list_jobs(status=[JobStatus.DONE]) == []


def test_statuses_are_stored_as_the_same_strings(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    store.finish(run_id, RunStatus.DONE)
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "done"
    run = store.get_run(run_id)
    assert run.status is RunStatus.DONE and f"{run.status}" == "done" and json.dumps(run.status) == '"done"'


def test_evaluation_round_trips_through_the_stored_json():
    stored = {
        "accuracy": {"train": 0.5, "val": 0.4, "test": 0.46, "train_batchstats": 0.99, "val_batchstats": 0.97, "test_batchstats": 0.98, "fit": 0.99},
        "loss": {"train": 2.0, "val": 2.1, "test": 2.2, "train_batchstats": 0.1, "val_batchstats": 0.2, "test_batchstats": 0.3},
        "batches": 30,
        "samples": 960,
    }
    ev = Evaluation.from_dict(stored)
    assert ev.accuracy["test"] == 0.46 and ev.accuracy_batchstats["test"] == 0.98 and ev.loss_batchstats["val"] == 0.2
    assert ev.fit_accuracy == 0.99 and ev.batches == 30 and ev.to_dict() == stored
    bare = Evaluation.from_dict({"accuracy": {"test": 0.5}})
    assert math.isnan(bare.accuracy_of("fit")) and "fit" not in bare.to_dict()["accuracy"] and math.isnan(bare.accuracy_of("val"))


@pytest.mark.slow
def test_runs_page_lists_jobs_with_status_progress_and_error(tmp_path, echo, monkeypatch):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    store.enqueue_job("echo", {"word": "that", "fail": True}, run_id)
    drain_queue(str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
    at.run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, at.exception
    (table,) = [d.value for d in at.dataframe if "kind" in d.value.columns]
    assert table.iloc[0][["kind", "run", "status", "progress", "error"]].tolist() == ["echo", run_id, "failed", "working on that", "ValueError: cannot do that"]


@pytest.mark.slow
def test_failed_recalibration_shows_its_reason_on_diagnose_after_a_restart(tmp_path, monkeypatch):
    """A recalibration job for a run without a model file fails in the worker; a fresh dashboard
    (nothing in memory) reads the job from the store and shows why, on the run's Diagnose page."""
    from bench.fake import write_run

    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    store = Store(tmp_path)
    run_id = write_run(store, preset_config("bn", input_size=24), total_steps=40, steps_per_epoch=20)  # done, no model file
    job_id = store.enqueue_job("recalibrate", {"batches": 3}, run_id)
    drain_queue(str(tmp_path))
    job = store.get_job(job_id)
    assert job.status == JobStatus.FAILED and job.error == f"Run {run_id} has no finished model to recalibrate (status: done)."
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
    at.query_params["run"] = run_id
    at.run()
    at.switch_page("pages/diagnose.py").run()
    assert not at.exception, at.exception
    assert f"Recalibration failed: {job.error}" in errors(at)


@pytest.mark.slow
def test_a_queued_recalibration_can_be_cancelled_from_diagnose(tmp_path, monkeypatch):
    from bench.fake import write_run

    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    monkeypatch.setattr("bnviz.jobs.JobManager.pump", lambda self: None)  # no worker: the job stays queued
    store = Store(tmp_path)
    run_id = write_run(store, preset_config("bn", input_size=24), total_steps=40, steps_per_epoch=20)
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
    at.query_params["run"] = run_id
    at.run()
    at.switch_page("pages/diagnose.py").run()
    at.button(key="diagnose_recalibrate").click().run()
    (job,) = store.list_jobs(run_id=run_id, kinds=["recalibrate"])
    assert job.status == JobStatus.QUEUED and job.args == {"batches": 50}
    at.button(key="diagnose_recalibrate_cancel").click().run()
    assert not at.exception, at.exception
    assert store.get_job(job.id).status == JobStatus.CANCELLED
    assert "The last recalibration was cancelled before it ran." in [i.value for i in at.info]
    assert not any("Recalibration" in e.value for e in at.error)


def test_a_worker_stops_after_max_jobs_and_leaves_the_rest_queued(tmp_path, echo, capsys):
    store = Store(tmp_path)
    ids = [store.enqueue_job("echo", {"word": str(i)}) for i in range(5)]
    limits = WorkerLimits(max_jobs=2)
    assert [drain_queue(str(tmp_path), limits=limits) for _ in range(4)] == [2, 2, 1, 0]  # each a worker's share
    assert [store.get_job(i).status for i in ids] == [JobStatus.DONE] * 5
    assert len(re.findall(r"bnviz worker \d+: 2 jobs, \d+ MB resident \(the limit of 2\); a fresh worker takes the rest", capsys.readouterr().err)) == 2


def test_a_worker_above_its_memory_ceiling_stops_after_each_job(tmp_path, echo, capsys):
    store = Store(tmp_path)
    ids = [store.enqueue_job("echo", {"word": str(i)}) for i in range(3)]
    assert resident_mb() > 1  # this test process: tens of MB
    assert drain_queue(str(tmp_path), limits=WorkerLimits(max_rss_mb=1)) == 1
    assert [store.get_job(i).status for i in ids] == [JobStatus.DONE, JobStatus.QUEUED, JobStatus.QUEUED]
    assert re.search(r"bnviz worker \d+: 1 jobs, \d+ MB resident \(above 1 MB\); a fresh worker takes the rest", capsys.readouterr().err)


def test_worker_limits_come_from_the_environment_and_bad_ones_are_refused(tmp_path, monkeypatch):
    assert WorkerLimits.from_env({}) == WorkerLimits() == WorkerLimits(20, 2048.0)
    assert WorkerLimits.from_env({"BNVIZ_WORKER_MAX_JOBS": "3", "BNVIZ_WORKER_MAX_RSS_MB": "900.5"}).args() == ["--max-jobs", "3", "--max-rss-mb", "900.5"]
    for key, bad in (("BNVIZ_WORKER_MAX_JOBS", "0"), ("BNVIZ_WORKER_MAX_JOBS", "2.5"), ("BNVIZ_WORKER_MAX_RSS_MB", "nan"), ("BNVIZ_WORKER_MAX_RSS_MB", "-1")):
        with pytest.raises(ConfigError, match=rf"^{key} must be a positive .*number. Received: {key}='{bad}'; unset it for the default"):
            WorkerLimits.from_env({key: bad})
    monkeypatch.setenv("BNVIZ_WORKER_MAX_JOBS", "3")
    assert jobs.JobManager(Store(tmp_path)).executors[0].limits.max_jobs == 3  # what the launcher passes its workers
    monkeypatch.setenv("BNVIZ_WORKER_MAX_JOBS", "lots")
    with pytest.raises(ConfigError, match="BNVIZ_WORKER_MAX_JOBS"):
        jobs.JobManager(Store(tmp_path))  # refused where the dashboard shows ConfigError in one line


def test_the_background_pump_ends_with_its_manager(tmp_path):
    """The dashboard caches one manager per home; a manager that is dropped (a cleared cache, a test's
    home) must stop pumping, or it would start workers for that home forever."""
    manager = jobs.JobManager(Store(tmp_path), poll_seconds=0.05)
    manager.start_background()
    thread = manager._thread
    assert thread.is_alive()
    del manager  # no cycle holds it: reference counting frees it at once
    thread.join(timeout=5)
    assert not thread.is_alive()
