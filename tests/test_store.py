"""The run store: round trips, transactions that survive a kill, concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sqlite3
import threading

import numpy as np
import pytest

from bnviz.presets import preset_config
from bnviz.records import Owner, ProbeLayer, ProbeRecord, process_start
from bnviz.store import Evaluation, Store, StoreError, check_run_id


def _record(step: int, channels: int = 4, bins: int = 5) -> ProbeRecord:
    rng = np.random.default_rng(step)
    arrays = [rng.normal(size=channels).astype(np.float32) for _ in range(6)]
    counts = [rng.integers(0, 9, bins, dtype=np.int32) for _ in range(2)]
    layer = ProbeLayer("norm1", *arrays, np.linspace(-1, 1, bins + 1, dtype=np.float32), *counts)
    return ProbeRecord(step, 1, 0.5, 0.25, 1.0, 2.0, (layer,))


def test_records_round_trip(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    records = [_record(s) for s in (0, 3, 6)]
    store.add_records(run_id, steps=[(1, 1, 2.0, 0.1), (2, 1, 1.5, 0.2)], probes=records)
    store.add_evaluation(run_id, "final", Evaluation.from_dict({"accuracy": {"test": 0.5}}))
    data = store.load_run(run_id)
    assert list(data.steps["step"]) == [1, 2] and list(data.probes["step"]) == [0, 3, 6]
    trace = data.layers["norm1"]
    np.testing.assert_array_equal(trace.pop_var[1], records[1].layers[0].pop_var)
    np.testing.assert_array_equal(trace.hist_infer[2], records[2].layers[0].hist_infer)
    assert trace.hist_edges.shape == (3, 6) and data.evaluations["final"].accuracy["test"] == 0.5
    assert data.run.config == preset_config("bn")


def test_progress_counts_probe_records_against_the_schedule(tmp_path):
    """After the last step the probe may still be making records; progress says how many are in."""
    from bnviz.config import ProbeConfig
    from bnviz.stats import probe_steps

    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn", probe=ProbeConfig(every=10)), status="running")
    store.start(run_id, os.getpid(), 38, 114, {})
    store.add_records(run_id, steps=[(114, 3, 0.5, 0.9)], probes=[_record(0), _record(10)])
    progress = store.progress(run_id)
    assert progress.fraction == 1.0 and progress.probe_records == 2
    assert progress.probe_scheduled == len(probe_steps(114, 38, 10)) == 15  # 0, 10…110, 38, 76, 114


def test_claim_is_oldest_first_and_exclusive(tmp_path):
    store = Store(tmp_path)
    first, second = (store.create_run(preset_config(p)) for p in ("bn", "final"))
    owners = [Owner(socket.gethostname(), os.getpid(), process_start(os.getpid())), Owner("elsewhere", 1, None)]
    jobs = [store.claim_job(owner) for owner in owners]
    assert [(j.kind, j.run_id) for j in jobs] == [("train", first), ("train", second)] and store.claim_job() is None
    assert store.get_run(first).status == "running" and store.get_run(first).owner == owners[0]
    assert store.get_job(jobs[1].id).owner == owners[1]  # another host: nobody here can tell it is gone


def test_cancel_queued_run_is_immediate(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"))
    store.request_cancel(run_id)
    assert store.get_run(run_id).status == "cancelled" and store.claim_job() is None


@pytest.mark.parametrize("bad", ["../etc/passwd", "x", "20261129-103640-f8d32/", "", None])
def test_malformed_run_ids_are_refused(tmp_path, bad):
    with pytest.raises(StoreError):
        check_run_id(bad)
    with pytest.raises(StoreError):
        Store(tmp_path).model_path(bad)


def test_unknown_run_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="No run"):
        Store(tmp_path).get_run("20260101-000000-abcdef")


def _write_then_die(home: str, run_id: str, commits: int) -> None:
    store = Store(home)
    for step in range(commits):
        store.add_records(run_id, steps=[(step + 1, 1, 1.0, 0.5)], probes=[_record(step)])
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_killed_writer_keeps_every_committed_record(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    proc = multiprocessing.get_context("spawn").Process(target=_write_then_die, args=(str(tmp_path), run_id, 25))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    data = store.load_run(run_id)
    assert len(data.steps) == 25 and len(data.probes) == 25 and data.layers["norm1"].moving_mean.shape == (25, 4)


def _hammer(home: str, run_id: str, offset: int) -> None:
    store = Store(home)
    for step in range(40):
        store.add_records(run_id, steps=[(offset + step, 1, 1.0, 0.5)], probes=[_record(offset + step)])
        store.list_runs()


@pytest.mark.slow
def test_concurrent_writers_and_readers_do_not_lock(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), run_id, 1000 * i)) for i in range(4)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        store.load_run(run_id)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(store.load_run(run_id).probes) == 160


def test_a_store_reuses_its_connections_but_never_a_broken_one_or_one_to_a_replaced_file(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn"), status="running")
    with store._connect() as first:
        pass
    with store._connect() as again:
        assert again is first  # reused: no schema read
    with pytest.raises(ZeroDivisionError), store._connect() as failed:
        raise ZeroDivisionError  # a caller's error inside: the connection may be in any state
    with pytest.raises(sqlite3.ProgrammingError):
        failed.execute("SELECT 1")  # closed, not kept
    with store._connect() as fresh:
        assert fresh is not failed
    writer = Store(tmp_path)  # another handle writes; the reused connection reads what it committed
    writer.add_records(run_id, steps=[(1, 1, 1.0, 0.5)], probes=[_record(1)])
    assert len(store.load_run(run_id).probes) == 1

    threads = [threading.Thread(target=lambda: [store.list_runs() for _ in range(50)]) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store._idle) <= 4

    (tmp_path / "runs.sqlite").rename(tmp_path / "old.sqlite")  # the file replaced by another store's
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"runs.sqlite{suffix}").unlink(missing_ok=True)
    Store(tmp_path)
    assert store.list_runs() == []  # the new file, not the old one through a kept connection
