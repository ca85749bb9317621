"""Honest liveness: a run or job whose process is gone reads as interrupted to any reader, with its
records kept; an unusable store or home gives one clear message and exit code 2, writing nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bnviz.presets import preset_config
from bnviz.records import JobStatus, Owner, RunStatus, process_start
from bnviz.store import Store, StoreUnreadable
from tests.conftest import APP_TIMEOUT_S, TINY

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)}


def bnviz(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnviz", *args, "--home", str(home)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def steps_stored(home: Path) -> bool:
    runs = Store(home).list_runs() if (home / "runs.sqlite").exists() else []
    return bool(runs) and len(Store(home).load_run(runs[0].id).steps) > 0


@pytest.mark.slow
def test_sigkilled_cli_training_reads_as_interrupted_with_its_records(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnviz", "train", "--epochs", "200", "--input-size", str(TINY), "--no-probe", "--home", str(tmp_path)],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not steps_stored(tmp_path):
            assert proc.poll() is None and time.monotonic() < deadline, "training ended (or never began) before the kill"
            time.sleep(0.5)
        run = Store(tmp_path).list_runs()[0]
        assert run.status == "running" and run.pid == proc.pid and run.host == socket.gethostname() and run.pid_start
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    listed = bnviz("list", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["runs"]
    assert row["status"] == "interrupted"
    data = Store(tmp_path).load_run(row["id"])
    assert len(data.steps) >= 1 and f"pid {proc.pid} on {socket.gethostname()}" in data.run.error


def test_dead_job_owner_interrupts_the_job_and_its_run(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"))
    job = store.claim_job(Owner(socket.gethostname(), gone_pid(), None))
    assert job.run_id == run_id
    assert store.get_job(job.id).status == JobStatus.INTERRUPTED and store.get_run(run_id).status == RunStatus.INTERRUPTED


def test_owner_liveness_tells_pid_reuse_and_other_hosts_apart():
    me = os.getpid()
    assert Owner(socket.gethostname(), me, process_start(me)).alive()
    assert not Owner(socket.gethostname(), me, process_start(me) - 3600).alive()  # same pid, another process
    assert not Owner(socket.gethostname(), gone_pid(), None).alive()
    assert Owner("another-host", gone_pid(), None).alive()  # cannot be told from here: left alone


def test_live_owner_is_left_running(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    assert store.reap() == [] and store.get_run(run_id).status == RunStatus.RUNNING


@pytest.mark.slow
@pytest.mark.parametrize("case", ["corrupt", "home_is_file"])
def test_unusable_store_gives_one_line_exit_2_and_writes_nothing(tmp_path, case):
    garbage = b"this is not a database " * 100
    home = tmp_path / "home"
    target = home / "runs.sqlite" if case == "corrupt" else home
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(garbage)
    before = sorted(p.name for p in target.parent.iterdir())
    for command in (["list"], ["show", "20260101-000000-abcdef"]):
        result = bnviz(*command, home=home)
        assert result.returncode == 2 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
        assert ("not a readable bnviz run store" if case == "corrupt" else "Cannot use") in result.stderr
    assert target.read_bytes() == garbage and sorted(p.name for p in target.parent.iterdir()) == before
    with pytest.raises(StoreUnreadable):
        Store(home)


def test_dashboard_on_a_corrupt_store_shows_the_message(tmp_path, monkeypatch):
    (tmp_path / "runs.sqlite").write_bytes(b"garbage" * 100)
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
    at.run()
    assert not at.exception, at.exception
    assert any("not a readable bnviz run store" in e.value for e in at.error)
    assert (tmp_path / "runs.sqlite").read_bytes() == b"garbage" * 100
