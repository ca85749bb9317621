"""The Diagnose page's first screen with AppTest, on runs written straight into a store (no
training, so each test takes seconds): a running run gets a pending verdict that says its step,
and the page shows the verdict, the big figures and the symptom chart before anything else."""

from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest

from bnviz.presets import preset_config
from bnviz.records import Evaluation, RunStatus
from bnviz.store import ProbeRecord, Store
from tests.test_app import APP, RUN_TIMEOUT_S

STEPS, TOTAL = 40, 120


def _started(store: Store, name: str, **changes) -> str:
    """A bn run 'running' in this (alive) process, with STEPS step rows of fit climbing and probe
    records where inference stays at chance."""
    run_id = store.create_run(preset_config("bn").replace(name=name, **changes))
    store.start(run_id, os.getpid(), 40, TOTAL, {})
    store.add_records(run_id, steps=[(s, 1, 2.0 / s, min(0.99, s / STEPS)) for s in range(1, STEPS + 1)],
                      probes=[ProbeRecord(s, 1, min(0.99, s / STEPS), 0.1, 0.1, 3.0, ()) for s in (0, STEPS // 2, STEPS)])
    return run_id


def _finished(store: Store, name: str, **changes) -> str:
    return _finish(store, _started(store, name, **changes))


def _finish(store: Store, run_id: str) -> str:
    """Store the final evaluation (inference at 28 %, batch statistics at 97 %) and mark the run done."""
    acc = {"train": 0.28, "val": 0.27, "test": 0.28, "train_batchstats": 0.98, "val_batchstats": 0.97, "test_batchstats": 0.97}
    store.add_evaluation(run_id, "final", Evaluation.from_dict({"accuracy": acc, "fit_accuracy": 0.99}))
    store.finish(run_id, RunStatus.DONE)
    return run_id


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    return Store(tmp_path)


def _open(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.query_params.update(query)
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def test_a_running_run_gets_a_pending_verdict_with_its_step(store):
    run_id = _started(store, "live")
    at = _open("diagnose", run=run_id)
    assert [i.value for i in at.info if "Verdict pending" in i.value][0].startswith(f"**Verdict pending — step {STEPS}/{TOTAL}**")
    assert not at.success and not at.error  # no verdict, green or red, before the evaluation exists
    assert [m.label for m in at.metric][:2] == ["train (fit)", "train (evaluate)"]
    assert at.metric[0].value == "99.0%" and at.metric[1].value == "–"
    _finish(store, run_id)  # what the pending line's poll sees: the page reruns with the evaluation
    at.run()
    assert not [i for i in at.info if "Verdict pending" in i.value] and "Verdict" in _walk_alerts(at)[0]
    assert at.metric[1].value == "28.0%"


def test_the_first_screen_is_verdict_figures_then_symptom_and_cause(store):
    run_id = _finished(store, "done")
    at = _open("diagnose", run=run_id)
    # the element tree in page order: the first callout is the verdict, then the metrics, then the charts
    kinds = [type(node).__name__ for node in _walk(at.main)]
    first_alert = min(kinds.index(k) for k in ("Error", "Warning", "Success", "Info") if k in kinds)
    assert first_alert < kinds.index("Metric") < kinds.index("UnknownElement"), kinds  # plotly charts
    assert "Verdict" in _walk_alerts(at)[0]
    assert [m.label for m in at.metric][:4] == ["train (fit)", "train (evaluate)", "test (evaluate)", "initial values left, mᵗ"]
    assert at.metric[0].value == "99.0%" and at.metric[1].value == "28.0%"
    charts = [c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")]
    assert charts[:2] == ["diagnose_curves", "diagnose_theory"]


def test_compare_opens_on_the_seed_twin_and_exports_the_pair_in_one_click(store):
    first = _finished(store, "twin", seed=0)
    _finished(store, "twin", batch_size=64)
    newest = _finished(store, "twin", seed=1)
    at = _open("compare")
    assert at.multiselect(key="compare_runs").value == [newest, first]
    assert sorted(at.multiselect(key="compare_runs").format_func(i) for i in (newest, first)) == [
        "twin m=0.99 batch_size=32 seed=0", "twin m=0.99 batch_size=32 seed=1"]  # the third run has batch 64
    link = [p.proto for p in at.get("page_link") if p.proto.label.startswith("Export these runs")][0]
    assert link.query_string == f"runs={newest}%2C{first}"
    at = _open("export", runs=f"{newest},{first}")
    assert at.selectbox(key="export_run").value == newest and at.multiselect(key="export_others").value == [first]
    assert "Comparison · probe accuracy" in at.selectbox(key="export_chart").options


def _walk(node):
    """Every element under `node`, depth first, in page order."""
    for child in getattr(node, "children", {}).values():
        if getattr(child, "children", None):
            yield from _walk(child)
        else:
            yield child


def _walk_alerts(at: AppTest) -> list[str]:
    return [n.value for n in _walk(at.main) if type(n).__name__ in ("Error", "Warning", "Success", "Info")]
