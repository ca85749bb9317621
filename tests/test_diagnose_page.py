"""The Diagnose page's first screen with AppTest, on runs written straight into a store (no
training, so each test takes seconds): a running run gets a pending verdict that says its step,
and the page shows the verdict, the big figures and the symptom chart before anything else; an
inspected saved model shows no training history; PreciseBN's table names the images it averaged
over; a run whose targets are not classes shows its loss, never "nan"."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bnviz.config import OWN_PRESET
from bnviz.presets import preset_config
from bnviz.records import Evaluation, ProbeLayer, ProbeRecord, RunStatus
from bnviz.store import Store
from pages.common import WATCHES_KEY
from pages.diagnose_panels import HISTORY_NOTE
from tests.conftest import APP_TIMEOUT_S
from tests.test_app import APP, as_shown

STEPS, TOTAL = 40, 120


def _started(store: Store, name: str, **changes) -> str:
    """A bn run 'running' in this (alive) process, with STEPS step rows of fit climbing and probe
    records where inference stays at chance."""
    run_id = store.create_run(preset_config("bn").replace(name=name, **changes))
    store.start(run_id, os.getpid(), 40, TOTAL, {})
    store.add_records(
        run_id,
        steps=[(s, 1, 2.0 / s, min(0.99, s / STEPS)) for s in range(1, STEPS + 1)],
        probes=[ProbeRecord(s, 1, min(0.99, s / STEPS), 0.1, 0.1, 3.0, ()) for s in (0, STEPS // 2, STEPS)],
    )
    return run_id


def _finished(store: Store, name: str, **changes) -> str:
    return _finish(store, _started(store, name, **changes))


def _finish(store: Store, run_id: str) -> str:
    """Store the final evaluation (inference at 28 %, batch statistics at 97 %) and mark the run done."""
    acc = {"train": 0.28, "val": 0.27, "test": 0.28, "train_batchstats": 0.98, "val_batchstats": 0.97, "test_batchstats": 0.97}
    store.add_evaluation(run_id, "final", Evaluation.from_dict({"accuracy": acc, "fit_accuracy": 0.99}))
    store.finish(run_id, RunStatus.DONE)
    return run_id


STALE_W = 0.6  # share of the initial values (0, 1) in the inspected model's moving statistics


def inspected(store: Store, name: str = "saved", **info) -> str:
    """A saved model as `bnviz inspect` stores it: no step rows, one probe record (step 0) of a layer
    whose moving statistics are STALE_W initial values + the rest population (the stale fingerprint),
    and an evaluation without fit where batch statistics recover the accuracy."""
    rng = np.random.default_rng(0)
    pop_mean, pop_var = rng.normal(0, 2, 8).astype(np.float32), rng.uniform(3, 6, 8).astype(np.float32)
    counts = rng.integers(0, 9, 10, dtype=np.int32)
    layer = ProbeLayer(
        "norm1",
        (1 - STALE_W) * pop_mean,
        STALE_W + (1 - STALE_W) * pop_var,
        pop_mean,
        pop_var,
        pop_mean,
        pop_var,
        np.linspace(-3, 3, 11, dtype=np.float32),
        counts,
        counts[::-1].copy(),
    )
    run_id = store.create_run(preset_config("bn").replace(name=name, preset=OWN_PRESET), status=RunStatus.RUNNING)
    bn = {"name": "norm1", "momentum": 0.99, "epsilon": 1e-3, "axis": -1, "trainable": True}
    store.start(run_id, os.getpid(), 0, 0, {"source": "inspect", "bn_layers": [bn], **info})
    store.add_records(run_id, probes=[ProbeRecord(0, 0, 0.9, 0.3, 0.5, 2.0, (layer,))])
    acc = {"train": 0.30, "val": 0.28, "test": 0.28, "train_batchstats": 0.95, "val_batchstats": 0.94, "test_batchstats": 0.94}
    store.add_evaluation(run_id, "final", Evaluation.from_dict({"accuracy": acc}))
    store.finish(run_id, RunStatus.DONE)
    return run_id


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    return Store(tmp_path)


def _open(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
    at.query_params.update(query)
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_a_running_run_gets_a_pending_verdict_with_its_step(store):
    run_id = _started(store, "live")
    at = _open("diagnose", run=run_id)
    watches = at.session_state[WATCHES_KEY]  # the sidebar's count and the page's run: one watcher polls both
    assert watches.started and [(w.runs, w.detail) for w in watches.watches] == [(None, False), ([run_id], True)]
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


@pytest.mark.slow
def test_compare_opens_on_the_seed_twin_and_exports_the_pair_in_one_click(store):
    first = _finished(store, "twin", seed=0)
    _finished(store, "twin", batch_size=64)
    newest = _finished(store, "twin", seed=1)
    at = _open("compare")
    assert at.multiselect(key="compare_runs").value == [newest, first]
    assert sorted(at.multiselect(key="compare_runs").format_func(i) for i in (newest, first)) == [
        "twin m=0.99 batch_size=32 seed=0",
        "twin m=0.99 batch_size=32 seed=1",
    ]  # the third run has batch 64
    link = [p.proto for p in at.get("page_link") if p.proto.label.startswith("Export these runs")][0]
    assert link.query_string == f"runs={newest}%2C{first}"
    at = _open("export", runs=f"{newest},{first}")
    assert at.selectbox(key="export_run").value == newest and at.multiselect(key="export_others").value == [first]
    assert "Comparison · probe accuracy" in at.selectbox(key="export_chart").options


def _chart_keys(at: AppTest) -> list[str]:
    return [c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")]


@pytest.mark.slow
def test_an_inspected_model_shows_its_statistics_and_no_training_history(store):
    at = _open("diagnose", run=inspected(store))
    assert _chart_keys(at) == ["diagnose_histograms", "diagnose_drift", "diagnose_gap"]  # no curves or mᵗ over steps it never logged
    assert [c.value for c in at.caption].count(HISTORY_NOTE) == 1
    metrics = {m.label: m.value for m in at.metric}
    assert "train (fit)" not in metrics and metrics["initial values left, w (fingerprint)"] == f"{STALE_W:.1%}"
    alerts = _walk_alerts(at)
    assert alerts[0].startswith("**Verdict: The moving statistics still carry their initial values**")
    assert any(a.startswith("**Whether the statistics carry their initial values**") and f"w = {STALE_W:.2f}" in a for a in alerts)
    assert "Moving statistics vs the population" in [h.value for h in at.subheader]


@pytest.mark.slow
def test_an_inspected_model_with_a_known_step_count_gets_its_m_to_the_t(store):
    at = _open("diagnose", run=inspected(store, known_steps=100))
    assert _chart_keys(at) == ["diagnose_theory", "diagnose_histograms", "diagnose_drift", "diagnose_gap"]
    theory = json.loads(at.get("plotly_chart")[0].proto.spec)
    marker = [t for t in theory["data"] if t.get("mode") == "markers"][0]
    assert marker["x"] == [100] and {m.label: m.value for m in at.metric}["initial values left, mᵗ"] == f"{0.99**100:.1%}"


def _precisebn_table(at: AppTest):
    (table,) = [d.value for d in at.dataframe if "before (moving statistics)" in d.value.index]
    return table


@pytest.mark.slow
def test_precisebn_says_which_images_it_averaged_over_and_when_that_is_transductive(store):
    run_id = _finished(store, "done")
    after = {"accuracy": {"train": 0.96, "val": 0.95, "test": 0.97}, "batches": 5}
    store.add_evaluation(run_id, "precisebn", Evaluation.from_dict({**after, "calibrated_on": "train"}))
    at = _open("diagnose", run=run_id)
    table = _precisebn_table(at)
    assert list(table.index) == ["before (moving statistics)", "after PreciseBN on train (5 batches)", "batch statistics (for reference)"]
    assert table.loc["after PreciseBN on train (5 batches)", "test"] == pytest.approx(0.97) and not at.warning
    store.add_evaluation(run_id, "precisebn", Evaluation.from_dict({**after, "calibrated_on": "test"}))
    at.run()
    assert _precisebn_table(at).index[1] == "after PreciseBN on test (5 batches) (transductive)"
    assert any(w.value.startswith("Transductive: calibrated on the test images") for w in at.warning)


@pytest.mark.slow
def test_a_run_whose_targets_are_not_classes_shows_its_loss_and_never_nan(store):
    run_id = store.create_run(preset_config("bn").replace(name="regression"), status=RunStatus.RUNNING)
    store.start(run_id, os.getpid(), 40, STEPS, {"task": "values", "loss_name": "mse"})
    store.add_records(run_id, steps=[(s, 1, 2.0 / s, math.nan) for s in range(1, STEPS + 1)])
    nan_acc = {k: math.nan for k in ("train", "val", "test", "train_batchstats", "val_batchstats", "test_batchstats")}
    loss = {"train": 0.02, "val": 0.5, "test": 0.6, "train_batchstats": 0.02, "val_batchstats": 0.03, "test_batchstats": 0.03}
    store.add_evaluation(run_id, "final", Evaluation.from_dict({"accuracy": nan_acc, "loss": loss}))
    store.finish(run_id, RunStatus.DONE)
    pages = {page: _open(page, run=run_id) for page in ("diagnose", "runs")}
    for page, at in pages.items():
        shown = [*(m.value for m in at.metric), *(e.value for e in _walk(at.main) if isinstance(getattr(e, "value", None), str))]
        assert not [t for t in shown if re.search(r"\bnan\b", t, re.IGNORECASE)], page
    assert "Loss (mse): inference mode vs batch statistics" in [h.value for h in pages["diagnose"].subheader]
    assert any("test mse (evaluate): **0.6**" in t.value for t in pages["runs"].markdown)


def _walk(node):
    """Every element under `node`, depth first, in page order."""
    for child in getattr(node, "children", {}).values():
        if getattr(child, "children", None):
            yield from _walk(child)
        else:
            yield child


def _walk_alerts(at: AppTest) -> list[str]:
    """Every alert's text as shown, in page order."""
    return [as_shown(n.value) for n in _walk(at.main) if type(n).__name__ in ("Error", "Warning", "Success", "Info")]
