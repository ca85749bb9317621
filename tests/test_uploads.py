"""bnviz.uploads: uploads referenced by a run or an active job are kept, the rest go after the
retention period, deleting a run removes its own upload, and nothing outside uploads/ is touched."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from bnviz import forms, uploads
from bnviz.config import ConfigError
from bnviz.jobs import JobManager
from bnviz.presets import preset_config
from bnviz.records import JobStatus, RunStatus
from bnviz.store import Store
from tests.test_app import open_app
from tests.test_cli import bnviz
from tests.test_reliability import class_zip

DAY = 86400.0


def upload(home: Path, name: str, size: int = 1000, age_days: float = 0.0) -> Path:
    """An upload folder holding one file of `size` bytes, last modified `age_days` ago."""
    folder = uploads.uploads_dir(home) / name
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "0.png").write_bytes(b"x" * size)
    stamp = time.time() - age_days * DAY
    os.utime(folder, (stamp, stamp))
    return folder


def names(home: Path) -> set[str]:
    return {p.name for p in uploads.uploads_dir(home).iterdir()}


def train_run(store: Store, data: Path, status: str = RunStatus.DONE) -> str:
    """A run whose config names `data` as its image folder (what the Train page queues for a zip)."""
    run_id = store.create_run(preset_config("bn").replace(dataset=str(data)), status=RunStatus.RUNNING)
    if status != RunStatus.RUNNING:
        store.finish(run_id, status)
    return run_id


def inspect_run(store: Store, model: Path, data: Path) -> str:
    """A finished inspect job and its run, which names the job in its info (as bnviz.tf.inspect does)."""
    job = store.enqueue_job("inspect", {"model": str(model), "data": str(data), "test": None})
    store.claim_job()
    run_id = store.create_run(preset_config("bn").replace(preset="own"), status=RunStatus.RUNNING)
    store.start(run_id, os.getpid(), 0, 0, {"job": job, "source": "inspect"})
    store.finish(run_id, RunStatus.DONE)
    store.finish_job(job, JobStatus.DONE)
    return run_id


def test_gc_keeps_what_runs_and_active_jobs_use_and_removes_old_unused_uploads(tmp_path):
    store = Store(tmp_path)
    for status in (RunStatus.DONE, RunStatus.FAILED, RunStatus.INTERRUPTED):
        train_run(store, upload(tmp_path, f"{status}-run", age_days=30) / "cats")
    running = upload(tmp_path, "running-run", age_days=30)
    train_run(store, running, status=RunStatus.RUNNING)
    finished = upload(tmp_path, "finished-job", size=3000, age_days=30)  # a failed inspect job: no run refers to it
    failed = store.enqueue_job("inspect", {"model": str(finished / "cats" / "0.png"), "data": str(finished)})
    store.claim_job()
    store.finish_job(failed, JobStatus.FAILED, error="bad model")
    queued = upload(tmp_path, "queued-job", age_days=30)
    store.enqueue_job("inspect", {"model": str(queued / "cats" / "0.png"), "data": str(queued)})
    upload(tmp_path, "old", size=2000, age_days=8)
    upload(tmp_path, "recent", age_days=6)
    (tmp_path / "uploads" / "stray.zip").write_bytes(b"z" * 500)  # a file, not a folder
    os.utime(tmp_path / "uploads" / "stray.zip", (0, 0))
    before = names(tmp_path)

    dry = uploads.collect(store, dry_run=True)
    assert names(tmp_path) == before
    assert sorted(dry.removed) == ["finished-job", "old", "stray.zip"] and dry.freed_bytes == 5500
    assert dry.text().splitlines()[0] == "Would remove 3 uploads, 5.4 KiB to free: finished-job, old, stray.zip"

    done = uploads.collect(store)
    assert names(tmp_path) == before - {"finished-job", "old", "stray.zip"}
    assert done.text() == ("Removed 3 uploads, 5.4 KiB freed: finished-job, old, stray.zip\nKept 5 used by runs or active jobs, 1 newer than 7 days.")
    assert (done.kept_referenced, done.kept_recent) == (["done-run", "failed-run", "interrupted-run", "queued-job", "running-run"], ["recent"])


def test_the_retention_comes_from_the_environment_or_days(tmp_path, monkeypatch):
    store = Store(tmp_path)
    upload(tmp_path, "two-days", age_days=2)
    monkeypatch.setenv(uploads.RETENTION_ENV, "3")
    assert uploads.collect(store).removed == [] and uploads.collect(store, days=1.5).removed == ["two-days"]
    for bad in ("-1", "nan", "soon"):
        monkeypatch.setenv(uploads.RETENTION_ENV, bad)
        with pytest.raises(ConfigError, match=re.escape(f"(BNVIZ_UPLOAD_RETENTION_DAYS or --days). Received: '{bad}'")):
            uploads.collect(store)


def test_deleting_a_run_removes_the_uploads_only_it_used(tmp_path):
    store = Store(tmp_path)
    shared, own, spare = (upload(tmp_path, name) for name in ("shared", "own", "spare"))
    first, second = train_run(store, shared / "cats"), train_run(store, shared)
    zipped = forms.save_upload(tmp_path, "data.zip", b"PK zip")
    model = forms.save_upload(tmp_path, "model.keras", b"PK model")
    inspected = inspect_run(store, model, zipped)
    mine = train_run(store, own)
    store.delete_run(mine)
    assert names(tmp_path) == {"shared", "spare", zipped.parent.name, model.parent.name}
    store.delete_run(first)
    assert "shared" in names(tmp_path)  # the second run still trains on it
    store.delete_run(second)
    store.delete_run(inspected)  # its uploads are named by its job's arguments
    assert names(tmp_path) == {"spare"}  # never used by a run: left to the retention period


def test_removal_never_follows_a_symlink_out_of_uploads(tmp_path):
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "precious.txt").write_text("mine")
    home = tmp_path / "home"
    store = Store(home)
    folder = upload(home, "with-link", age_days=30)
    (folder / "cats" / "escape").symlink_to(outside / "keep")
    (uploads.uploads_dir(home) / "link").symlink_to(outside, target_is_directory=True)
    os.utime(uploads.uploads_dir(home) / "link", (0, 0), follow_symlinks=False)
    assert sorted(uploads.collect(store).removed) == ["link", "with-link"]
    assert (outside / "keep" / "precious.txt").read_text() == "mine" and names(home) == set()
    linked = tmp_path / "elsewhere"
    upload(linked, "old", age_days=30)
    uploads.uploads_dir(home).rmdir()
    uploads.uploads_dir(home).symlink_to(uploads.uploads_dir(linked))
    assert uploads.collect(store).removed == [] and (uploads.uploads_dir(linked) / "old").is_dir()  # a symlinked uploads folder is left alone


def test_the_job_manager_collects_expired_uploads_at_most_hourly(tmp_path):
    manager = JobManager(Store(tmp_path))
    upload(tmp_path, "first", age_days=30)
    manager.collect_uploads_when_due()
    upload(tmp_path, "second", age_days=30)
    manager.collect_uploads_when_due()
    assert names(tmp_path) == {"second"}


@pytest.mark.slow
def test_bnviz_gc_prints_two_lines_and_refuses_bad_days(tmp_path):
    upload(tmp_path, "old", size=2048, age_days=30)
    dry = bnviz("gc", "--dry-run", home=tmp_path)
    assert dry.returncode == 0 and dry.stdout.splitlines()[0] == "Would remove 1 upload, 2.0 KiB to free: old" and names(tmp_path) == {"old"}
    done = bnviz("gc", home=tmp_path)
    assert done.stdout == "Removed 1 upload, 2.0 KiB freed: old\nKept 0 used by runs or active jobs, 0 newer than 7 days.\n" and names(tmp_path) == set()
    bad = bnviz("gc", "--days", "-2", home=tmp_path)
    assert (
        bad.returncode == 2
        and bad.stderr == "bnviz gc: error: The upload retention must be a number of days ≥ 0 (BNVIZ_UPLOAD_RETENTION_DAYS or --days). Received: '-2'\n"
    )


def test_the_runs_page_shows_the_space_uploads_use(tmp_path, monkeypatch):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    train_run(Store(tmp_path), upload(tmp_path, "pets", size=3 * 2**20))
    at = open_app("runs")
    assert not at.exception
    assert "Uploads: 3.0 MiB in 1 upload; those no run or active job uses are removed after 7 days; `bnviz gc` removes them now." in [
        c.value for c in at.caption
    ]


@pytest.mark.slow
def test_the_train_page_extracts_a_removed_upload_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    content = class_zip({"cats": 6, "dogs": 6})
    at = open_app()
    at.select_slider(key="train_batch_size").set_value(4)
    at.radio(key="train_dataset").set_value("zip").run()
    at.file_uploader(key="train_zip").upload("pets.zip", content, "application/zip").run()
    folder = forms.upload_folder(tmp_path, "pets.zip", content)
    assert (folder / "pets" / "cats").is_dir()
    shutil.rmtree(folder)  # bnviz gc, after the retention period, while the page still shows the upload
    at.run()
    assert not at.exception and not at.error and (folder / "pets" / "cats").is_dir() and not at.button(key="train_queue").disabled
