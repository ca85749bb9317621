"""Pages that follow a training run (bnviz.live and the pages' fragments), on runs written straight
into a real store by this process (alive, so no reader marks them interrupted; running, so the
dashboard's manager starts no worker for the queued ones): a later read appends only the records
stored since an earlier one; every count comes from one function; Diagnose follows a queued run into
training and shows its records as they are stored; Sweep and the sidebar count alike; Story's button
says "queued" and is disabled while the story trains."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pandas as pd
import pytest

from bnviz.live import STEPS_REDRAW_S, Activity, RunCache, StepDrawings, Watch, Watches, activity, view
from bnviz.presets import preset_config
from bnviz.records import Mark, ProbeLayer, ProbeRecord, RunStatus
from bnviz.store import Store
from bnviz.story import new_story_id, story_configs
from tests.test_app import charts, open_app, values
from tests.test_diagnose_page import _finish


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    return Store(tmp_path)


def _layer(step: int, name: str = "bn1") -> ProbeLayer:
    """A BN layer's record whose every array carries `step`, so each record can be told apart."""
    values = np.full(4, step, np.float32)
    return ProbeLayer(
        name,
        values,
        values + 1,
        values,
        values,
        values,
        values,
        np.linspace(0, 1, 6, dtype=np.float32),
        np.arange(5, dtype=np.int32) + step,
        np.arange(5, dtype=np.int32),
    )


def _record(step: int) -> ProbeRecord:
    return ProbeRecord(step, 1, 0.5, 0.1, 1.0, 3.0, (_layer(step), _layer(step, "bn2")))


def _running(store: Store, name: str = "live", total: int = 100, **kwargs) -> str:
    run_id = store.create_run(preset_config("bn").replace(name=name), **kwargs)
    store.start(run_id, os.getpid(), 50, total, {})
    return run_id


def _steps(first: int, last: int) -> list[tuple[int, int, float, float]]:
    return [(s, 1, 2.0 / s, s / 100) for s in range(first, last + 1)]


def test_a_later_read_appends_only_the_records_stored_since_and_equals_a_full_read(store):
    run_id = _running(store)
    store.add_records(run_id, steps=_steps(1, 10), probes=[_record(0), _record(5)])
    before = store.load_run(run_id)
    store.add_records(run_id, steps=_steps(11, 20), probes=[_record(10), _record(20)])
    later, full = store.load_run(run_id, since=before), store.load_run(run_id)
    pd.testing.assert_frame_equal(later.steps, full.steps)
    pd.testing.assert_frame_equal(later.probes, full.probes)
    assert set(later.layers) == set(full.layers) == {"bn1", "bn2"}
    for name, trace in full.layers.items():
        for field in ("steps", "moving_mean", "moving_var", "hist_train", "hist_edges"):
            np.testing.assert_array_equal(getattr(later.layers[name], field), getattr(trace, field))
    assert list(later.layers["bn1"].steps) == [0, 5, 10, 20] and later.steps_trained == 20
    with sqlite3.connect(store.path) as db:  # the rows read before are gone from the file: a later read cannot have read them again
        db.execute("DELETE FROM steps WHERE step <= 20")
        db.execute("DELETE FROM probe_layers WHERE step <= 20")
    store.add_records(run_id, steps=_steps(21, 22), probes=[_record(22)])
    again = store.load_run(run_id, since=later)
    assert list(again.steps["step"]) == list(range(1, 23)) and list(again.layers["bn2"].steps) == [0, 5, 10, 20, 22]
    assert len(store.load_run(run_id).steps) == 2


def test_the_cache_reads_a_run_again_only_when_the_store_says_it_changed(store):
    run_id = _running(store)
    cache = RunCache(store, size=2)
    store.add_records(run_id, steps=_steps(1, 5))
    first = cache.load(store.get_run(run_id))
    assert cache.load(store.get_run(run_id)) is first  # nothing new: no read
    store.add_records(run_id, steps=_steps(6, 9), probes=[_record(9)])  # a commit moves the heartbeat
    second = cache.load(store.get_run(run_id))
    assert second is not first and second.steps_trained == 9 and list(second.layers["bn1"].steps) == [9]
    _finish(store, run_id)
    done = cache.load(store.get_run(run_id))
    assert done.run.status == RunStatus.DONE and "final" in done.evaluations and done.steps_trained == 9
    others = [_running(store, f"other{i}") for i in range(2)]
    for other in others:
        cache.load(store.get_run(other))
    assert cache.load(store.get_run(run_id)) is not done  # pushed out by two newer runs, read afresh


def test_marks_say_how_far_each_run_got_without_reading_a_record(store):
    run_id, queued = _running(store, total=400), store.create_run(preset_config("bn").replace(name="waiting"))
    assert store.marks([run_id]) == {run_id: Mark(RunStatus.RUNNING, 0, 0, 0, 400)}
    store.add_records(run_id, steps=_steps(1, 12), probes=[_record(0), _record(10)])
    assert store.marks() == {run_id: Mark(RunStatus.RUNNING, 12, 2, 0, 400), queued: Mark(RunStatus.QUEUED)}
    with sqlite3.connect(store.path) as db:  # a worker that died: every reader, this one too, reads the run as interrupted
        db.execute("UPDATE runs SET pid=999999999 WHERE id=?", (run_id,))
    assert store.marks([run_id])[run_id].status == RunStatus.INTERRUPTED and store.marks([]) == {}


def test_a_following_page_draws_records_at_once_and_steps_at_most_every_few_seconds():
    at = {"r": Mark(RunStatus.RUNNING, step=10, records=1, total_steps=1000)}
    seen = view(at)
    more_steps, one_step = view({"r": Mark(RunStatus.RUNNING, 25, 1, 0, 1000)}), view({"r": Mark(RunStatus.RUNNING, 11, 1, 0, 1000)})
    assert not seen.redraw_due(one_step, 60) and not seen.redraw_due(more_steps, STEPS_REDRAW_S - 0.1)  # within the same hundredth; too soon
    assert seen.redraw_due(more_steps, STEPS_REDRAW_S)
    for moved in (Mark(RunStatus.RUNNING, 10, 2, 0, 1000), Mark(RunStatus.DONE, 10, 1, 1, 1000)):  # a record; the end and its evaluation
        assert seen.redraw_due(view({"r": moved}), 0)
    assert seen.redraw_due(view({**at, "new": Mark(RunStatus.QUEUED)}), 0)  # a run added to those shown
    counts = view(at, detail=False)  # a page that shows statuses only never draws for a record or a step
    assert not counts.redraw_due(view({"r": Mark(RunStatus.RUNNING, 900, 5, 0, 1000)}, detail=False), 60)
    assert counts.redraw_due(view({"r": Mark(RunStatus.FAILED, 10, 1, 0, 1000)}, detail=False), 0)


def test_one_watcher_polls_the_sidebars_count_and_the_pages_run_together():
    at = {"r": Mark(RunStatus.RUNNING, 10, 1, 0, 1000), "other": Mark(RunStatus.RUNNING, 5, 0, 0, 50)}
    page = Watch(["r"], True, view({"r": at["r"]}))
    sidebar = Watch(None, False, view(at, detail=False))
    watches = Watches([sidebar, page], drawn_at=100.0)
    assert watches.runs() is None and Watches([page, Watch(["q", "r"], False, view({}))]).runs() == ["r", "q"]
    assert not watches.moved(at, 160.0)
    assert not watches.moved({**at, "other": Mark(RunStatus.RUNNING, 40, 3, 0, 50)}, 160.0)  # another run's records: the page does not show them
    assert watches.moved({**at, "other": Mark(RunStatus.DONE, 50, 4, 1, 50)}, 101.0)  # its end: the sidebar's count moves
    assert watches.moved({**at, "r": Mark(RunStatus.RUNNING, 10, 2, 0, 1000)}, 101.0)  # the page's run: a record
    steps = {**at, "r": Mark(RunStatus.RUNNING, 30, 1, 0, 1000)}
    assert not watches.moved(steps, 100.0 + STEPS_REDRAW_S - 0.1) and watches.moved(steps, 100.0 + STEPS_REDRAW_S)


def test_sessions_following_a_run_share_one_drawing_of_its_steps_per_few_seconds(store):
    run_id = _running(store)
    cache, drawings = RunCache(store), StepDrawings()
    store.add_records(run_id, steps=_steps(1, 10), probes=[_record(5)])
    first = cache.load(store.get_run(run_id))
    drawn = drawings.put(("history",), first, 100.0, object())
    store.add_records(run_id, steps=_steps(11, 40))  # a poll later another session reads 30 more steps
    later = cache.load(store.get_run(run_id))
    assert later.steps_trained == 40 and drawings.get(("history",), later, 100.0 + STEPS_REDRAW_S - 0.1) is drawn
    assert drawings.get(("history",), later, 100.0 + STEPS_REDRAW_S) is None  # steps are redrawn that often
    assert drawings.get(("other",), later, 100.0) is None
    store.add_records(run_id, steps=_steps(41, 41), probes=[_record(41)])  # a record: drawn at once
    assert drawings.get(("history",), cache.load(store.get_run(run_id)), 100.0) is None
    _finish(store, run_id)
    assert drawings.get(("history",), cache.load(store.get_run(run_id)), 100.0) is None  # an ended run: always its last steps


def test_every_count_comes_from_one_function():
    runs = [type("R", (), {"status": s})() for s in ("queued", "running", "done", "done", "failed")]
    assert activity(runs) == Activity(queued=1, running=1, done=2, total=5) and activity(runs).active
    assert not activity(runs[2:]).active and activity([]) == Activity()


@pytest.mark.slow
def test_diagnose_follows_a_queued_run_into_training(store):
    _running(store, "blocker")  # holds the one worker slot, so the target stays queued
    target = store.create_run(preset_config("bn").replace(name="target"))
    at = open_app("diagnose", run=target)
    assert at.selectbox(key="diagnose_run").value == target and not at.warning  # the run asked for, not "another one"
    assert [i.value for i in at.info][0].startswith("**Queued**") and not at.metric and not charts(at)
    store.start(target, os.getpid(), 50, 100, {})  # a worker took it: no record yet
    at.run()
    assert at.info[0].value.startswith("**Training started — waiting for the first record**") and not at.metric and not charts(at)
    store.add_records(target, steps=_steps(1, 30), probes=[_record(0), _record(10)])
    at.run()
    assert not at.exception and any(c.value.startswith("running ·") for c in at.caption)
    assert [i.value for i in at.info if "Verdict pending" in i.value][0].startswith("**Verdict pending — step 30/100**")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["initial values left, mᵗ"] == f"{0.99**30:.1%}" and metrics["train (fit)"] == "30.0%"  # after 30 steps, not 0
    curves = charts(at)["diagnose_curves"]["data"]
    assert max(len(values(trace["x"])) for trace in curves) == 30
    assert at.select_slider(key="diagnose_step_live2").value == 10  # the newest record, followed as new ones come
    store.add_records(target, steps=_steps(31, 40), probes=[_record(40)])
    at.run()
    assert at.select_slider(key="diagnose_step_live3").value == 40
    assert max(len(values(trace["x"])) for trace in charts(at)["diagnose_curves"]["data"]) == 40


@pytest.mark.slow
def test_sweep_and_sidebar_count_the_same_store_state(store):
    sweep = "sweep-20260101-000000"
    ids = [store.create_run(preset_config("bn").replace(name=f"bn m={m}").with_momentum(m), sweep=sweep) for m in (0.5, 0.8, 0.9)]
    for run_id in ids[:2]:
        store.start(run_id, os.getpid(), 10, 10, {})
        _finish(store, run_id)
    store.start(ids[2], os.getpid(), 10, 10, {})
    at = open_app("sweep")
    assert "2 of 3 runs done · 1 training · 0 queued" in [c.value for c in at.caption]
    assert any(c.value.endswith("· 1 running · 0 queued") for c in at.sidebar.caption)


def test_story_button_says_queued_and_is_disabled_while_the_story_trains(store):
    _running(store, "blocker")
    story = new_story_id()
    for config in story_configs():
        store.create_run(config, sweep=story)
    at = open_app("story")
    button = at.button(key="story_run")
    assert button.label == "Story queued" and button.disabled
    assert "queued" in at.info[0].value and "by itself" in at.info[0].value
