"""Dashboard tests with streamlit.testing.v1.AppTest: every page, driven by its widget keys.

Two tiny runs (20 px, 1 epoch, the bn preset at momentum 0.99 and 0.8) are queued through the Train
page and trained for real by the job manager's worker process; the Diagnose, Compare and Export tests
share them and check what the charts show against the store.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from bnviz import export, forms
from bnviz import figures as F
from bnviz.diagnose import all_layer_figures, diagnose
from bnviz.presets import preset_config
from bnviz.shapes import param_counts
from bnviz.stats import probe_steps
from bnviz.store import FINISHED, Store
from tests.conftest import APP_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TRAIN_TIMEOUT_S = 180
TINY = {"train_input_size": 20, "train_epochs": 1}


# --- helpers -------------------------------------------------------------------------------------
def open_app(page: str | None = None, state: dict | None = None, **query: str) -> AppTest:
    """The app on `page` (pages/<page>.py), with query parameters and session state set first."""
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
    at.query_params.update(query)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures shown, by widget key (the id ends with '-<key>')."""
    return {c.proto.id.rsplit("-", 1)[-1]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def values(array: object) -> np.ndarray:
    """A trace array from Plotly JSON: a list, or plotly ≥ 6's base64 typed array."""
    if isinstance(array, dict) and "bdata" in array:
        out = np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
        return out.reshape(array["shape"]) if "shape" in array else out
    return np.asarray(array, dtype=float)


def trace(fig: dict, name_start: str) -> dict:
    matches = [t for t in fig["data"] if t.get("name", "").startswith(name_start)]
    assert matches, f"no trace named {name_start!r} in {[t.get('name') for t in fig['data']]}"
    return matches[0]


def as_shown(markdown: str) -> str:
    """The text a Markdown body shows, for the user strings pages escape (bnviz.labels.md_literal)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def errors(at: AppTest) -> list[str]:
    """The error messages as the page shows them."""
    return [as_shown(e.value) for e in at.error]


def wait_done(home: Path, run_ids: list[str]) -> None:
    """Poll the store until every run has finished; fail with the worker log otherwise."""
    store, deadline = Store(home), time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = {r.id: r for r in store.list_runs()}
        if all(runs[i].status in FINISHED for i in run_ids):
            break
        time.sleep(0.5)
    bad = [(r.id, r.status, r.error) for r in store.list_runs() if r.status != "done"]
    logs = "".join(p.read_text()[-3000:] for p in sorted((home / "logs").glob("*.log")))
    assert not bad, f"runs not done after {TRAIN_TIMEOUT_S} s: {bad}\n{logs}"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty home folder for this test (set before any AppTest is created)."""
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    monkeypatch.delenv("BNVIZ_MAX_WORKERS", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Two tiny runs queued through the Train page and trained by the worker."""
    home = tmp_path_factory.mktemp("trained")
    patch = pytest.MonkeyPatch()
    patch.setenv("BNVIZ_HOME", str(home))
    patch.delenv("BNVIZ_MAX_WORKERS", raising=False)
    at = open_app()
    at.slider(key="train_input_size").set_value(TINY["train_input_size"])
    at.number_input(key="train_epochs").set_value(TINY["train_epochs"])
    ids = {}
    for name, momentum, budget in (("collapse", 0.99, 0.03), ("fixed", 0.8, 100.0)):  # the fixed one makes every record live
        at.select_slider(key="train_momentum_scale").set_value(momentum).run()
        at.select_slider(key="train_probe_budget").set_value(budget).run()
        at.text_input(key="train_name").set_value(name).run()
        assert not errors(at) and not at.button(key="train_queue").disabled
        at.button(key="train_queue").click().run()
        ids[name] = at.session_state["train_last_run"]
        assert f"Queued run `{ids[name]}`." in [s.value for s in at.success]
        assert Store(home).get_run(ids[name]).config.probe.budget == budget
    wait_done(home, list(ids.values()))
    yield home, ids
    patch.undo()


# --- Train ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_page_shows_live_param_counts_and_loads_presets(home):
    at = open_app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == f"{param_counts(preset_config('bn').arch, 64)['total']:,}"
    assert metrics["Initial values 0 / 1 left at the end, mᵗ"] == f"{0.99**114:.1%}"  # 38 steps × 3 epochs
    assert f"0.99^100 ≈ {0.99**100:.0%}" in at.markdown[0].value  # the primer computes its number
    at.slider(key="train_input_size").set_value(32).run()
    at.number_input(key="train_blocks").set_value(4).run()
    at.number_input(key="train_filters_3").set_value(8).run()
    arch = forms.arch_from_form("bn", forms.ArchForm((16, 32, 16, 8), "batch", "after", 0.5, 0.99))
    counts = param_counts(arch, 32)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == f"{counts['total']:,}"
    assert metrics["Moving statistics"] == f"{counts['non_trainable']:,}" == f"{2 * (16 + 32 + 16 + 8):,}"
    at.selectbox(key="train_preset").set_value("final").run()
    assert at.number_input(key="train_momentum").value == 0.8 and at.select_slider(key="train_momentum_scale").value == 0.8
    assert at.slider(key="train_dropout").value == 0.0 and at.number_input(key="train_blocks").value == 3
    at.selectbox(key="train_norm").set_value("none").run()
    assert at.select_slider(key="train_momentum_scale").disabled
    assert {m.label: m.value for m in at.metric}["Moving statistics"] == "0"
    assert not errors(at) and not at.exception


def test_momentum_out_of_range_is_refused_next_to_the_widget(home):
    at = open_app()
    at.number_input(key="train_momentum").set_value(1.5).run()
    assert errors(at) == ["momentum must be in [0, 1]. Received: momentum=1.5"]
    column = [c for c in at.columns if any(w.key == "train_momentum" for w in c.number_input)][0]
    assert [as_shown(e.value) for e in column.error] == errors(at)  # shown beside the momentum widget, not elsewhere
    assert {m.label for m in at.metric} >= {"Parameters", "Training steps"}  # the rest of the form still reads live
    assert at.select_slider(key="train_momentum_scale").value == 0.999  # the slider snaps to its end
    assert at.button(key="train_queue").disabled  # AppTest, like a browser, refuses to click it
    assert Store(home).list_runs() == []
    at.select_slider(key="train_momentum_scale").set_value(0.9).run()
    assert at.number_input(key="train_momentum").value == 0.9 and not errors(at)
    assert not at.button(key="train_queue").disabled


def _link(at: AppTest) -> str:
    """The address the Train page's "Copy link" shows."""
    (code,) = [c.value for c in at.code if "preset=" in c.value]
    return code


@pytest.mark.slow
def test_copy_link_reopens_the_form_with_exactly_its_settings(home):
    at = open_app()
    at.selectbox(key="train_preset").set_value("final").run()
    at.select_slider(key="train_momentum_scale").set_value(0.95).run()
    at.number_input(key="train_filters_1").set_value(24)
    at.select_slider(key="train_batch_size").set_value(64)
    at.select_slider(key="train_learning_rate").set_value(3e-4)
    at.slider(key="train_dropout").set_value(0.15)
    at.number_input(key="train_seed").set_value(7)
    at.checkbox(key="train_raw_pixels").check()
    at.radio(key="train_dataset").set_value("digits")
    at.text_input(key="train_name").set_value("a b&c").run()
    url = _link(at)
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["momentum"] == "0.95" and query["filters"] == "16,24,16" and query["name"] == "a b&c"
    fresh = open_app(**query)
    for field in forms.LINK_FIELDS:
        if field != "filters":
            assert fresh.session_state[f"train_{field}"] == at.session_state[f"train_{field}"], field
    assert [fresh.number_input(key=f"train_filters_{i}").value for i in range(3)] == [16, 24, 16]
    assert fresh.select_slider(key="train_momentum_scale").value == 0.95
    assert not errors(fresh) and _link(fresh) == url  # the reopened form gives the same link back
    assert not set(fresh.query_params) & set(forms.LINK_FIELDS)  # applied once, then cleared from the address


def test_a_bad_link_value_marks_its_field_and_nothing_raises(home):
    at = open_app(batch_size="48", momentum="1.5", epochs="many", filters="16,0", preset="bn")
    assert not at.exception
    assert at.select_slider(key="train_batch_size").value == 32 and at.number_input(key="train_momentum").value == 0.99
    shown = errors(at)
    assert "batch_size must be one of the form's steps (4, 8, 16, 32, 64, 128, 256, 512). Received: batch_size='48'" in shown
    assert "momentum must be in [0, 1]. Received: momentum=1.5" in shown and "epochs must be a whole number. Received: epochs='many'" in shown
    assert any(e.startswith("filters must be 1 to 6 whole numbers") for e in shown) and len(shown) == 4
    column = [c for c in at.columns if any(w.key == "train_momentum" for w in c.number_input)][0]
    assert {as_shown(e.value) for e in column.error} >= {m for m in shown if m.startswith(("momentum", "batch_size", "epochs"))}  # beside them
    assert at.button(key="train_queue").disabled
    at.select_slider(key="train_batch_size").set_value(16).run()
    assert len(errors(at)) == 3 and not any(e.startswith("batch_size") for e in errors(at))  # fixed: its mark goes


def test_bad_folder_paths_are_refused(home, tmp_path):
    at = open_app()
    at.radio(key="train_dataset").set_value("folder").run()
    assert at.button(key="train_queue").disabled and not errors(at)  # nothing typed yet: no error, no queue
    at.text_input(key="train_folder").set_value(str(tmp_path / "no-such-folder")).run()
    assert errors(at) == [f"Folder not found: {tmp_path / 'no-such-folder'}"]
    column = [c for c in at.columns if any(w.key == "train_folder" for w in c.text_input)][0]
    assert [as_shown(e.value) for e in column.error] == errors(at)
    (tmp_path / "one" / "cats").mkdir(parents=True)
    (tmp_path / "one" / "cats" / "a.png").write_bytes(b"x")
    at.text_input(key="train_folder").set_value(str(tmp_path / "one")).run()
    assert "needs at least 2 class sub-folders" in errors(at)[0]
    assert at.button(key="train_queue").disabled and Store(home).list_runs() == []


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.slow
def test_zip_upload_is_extracted_into_home_uploads(home):
    content = io.BytesIO()
    with zipfile.ZipFile(content, "w") as zf:
        for name in ("cats", "dogs"):
            for i in range(4):
                zf.writestr(f"pets/{name}/{i}.png", _png(40 * i))
    at = open_app()
    at.select_slider(key="train_batch_size").set_value(4)  # 8 images leave 4 for training: batch 32 is refused
    at.radio(key="train_dataset").set_value("zip").run()
    at.file_uploader(key="train_zip").upload("pets.zip", content.getvalue(), "application/zip").run()
    assert not errors(at) and not at.button(key="train_queue").disabled
    folder = forms.upload_folder(home, "pets.zip", content.getvalue()) / "pets"
    assert sorted(p.name for p in folder.iterdir()) == ["cats", "dogs"]
    assert any("2 classes (cats, dogs) · 8 files" in as_shown(c.value) for c in at.caption)
    at.file_uploader(key="train_zip").set_value(("bad.zip", b"not a zip", "application/zip")).run()
    assert errors(at) and errors(at)[0].startswith("Not a zip file") and at.button(key="train_queue").disabled


# --- Runs ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_runs_page_shows_progress_and_cancels(home):
    store = Store(home)
    dummy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "bnviz-test-worker"])
    try:
        running = store.create_run(preset_config("bn").replace(name="busy"), status="running")
        store.start(running, dummy.pid, steps_per_epoch=10, total_steps=20, info={})
        store.add_records(running, steps=[(1, 1, 2.0, 0.25), (5, 1, 1.25, 0.5)])
        queued = store.create_run(preset_config("final").replace(name="waiting"))  # the one worker slot is taken
        plain = store.create_run(preset_config("more-layers"), status="cancelled")
        at = open_app("runs")
        momenta = {c.value.rsplit(" · ", 1)[-1] for c in at.caption if "epoch" in c.value}
        assert momenta == {"momentum 0.99", "momentum 0.8", "momentum –"}  # no BN, no momentum
        bars = at.get("progress")
        assert len(bars) == 1 and bars[0].proto.value == 25
        assert bars[0].proto.text == "step 5/20 · epoch 1/3 · loss 1.250 · accuracy 50%"
        store.add_records(running, steps=[(20, 2, 1.0, 0.75)])  # training is over: the probe makes the records it deferred
        text = open_app("runs").get("progress")[0].proto.text
        assert text == f"step 20/20 · epoch 2/3 · loss 1.000 · accuracy 75% · making probe records (0/{len(probe_steps(20, 10, 0))})"
        at.button(key=f"runs_cancel_{queued}").click().run()
        assert store.get_run(queued).status == "cancelled"
        at.button(key=f"runs_cancel_{running}").click().run()
        assert store.cancel_requested(running) and store.get_run(running).status == "running"
        assert at.button(key=f"runs_cancel_{running}").disabled  # asked once; the worker stops at its next step
        assert not at.exception
        at.button(key=f"runs_delete_{queued}").click().run()  # cancelled: it can go, records and all
        assert [r.id for r in store.list_runs()] == [plain, running] and not at.exception
        at = open_app("diagnose", run=running)  # a run with steps but no probes or evaluation yet
        PENDING = "**Verdict pending — step 20/20**\n\nThe verdict needs the final evaluation, made when training ends"
        assert not at.exception and at.selectbox(key="diagnose_run").value == running
        assert [i.value.split(" itself")[0].split(":")[0].split(".")[0] for i in at.info] == [PENDING, "No final evaluation yet", "No probe record yet"]
        assert not at.error and not at.success  # no verdict guessed before the evaluation (a green "not the cause" was shown once)
        assert list(charts(at)) == ["diagnose_curves", "diagnose_theory"]  # the symptom, then the cause
    finally:
        dummy.kill()
        dummy.wait()


def test_pages_say_what_is_missing_when_there_are_no_runs(home):
    for page in ("runs", "diagnose", "compare", "export"):
        at = open_app(page)
        assert at.info and "Train page" in at.info[0].value, page
        assert not at.get("plotly_chart")


# --- Diagnose ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_diagnose_shows_the_run_with_its_stored_numbers(trained):
    home, ids = trained
    store, run_id = Store(home), ids["collapse"]
    data = store.load_run(run_id)
    at = open_app("diagnose", run=run_id)
    assert at.selectbox(key="diagnose_run").value == run_id
    table = at.dataframe[0].value
    acc = data.evaluations["final"].accuracies()
    assert list(table.columns) == ["train", "val", "test"]
    np.testing.assert_allclose(table.iloc[0], [acc["train"], acc["val"], acc["test"]])
    np.testing.assert_allclose(table.iloc[1], [acc["train_batchstats"], acc["val_batchstats"], acc["test_batchstats"]])
    assert table.index[2] == "seed notebook, bn (inference)"
    worst = max(all_layer_figures(data), key=lambda f: max(f.infer_scale, 1 / f.infer_scale))  # diagnose's one definition
    metrics = {m.label: m for m in at.metric}
    assert metrics["worst scale error"].value == f"{worst.infer_scale:.3g}×" and as_shown(metrics["worst scale error"].delta) == f"{worst.name}, at inference"
    assert metrics["train (fit)"].value == f"{acc['fit']:.1%}" and metrics["train (evaluate)"].value == f"{acc['train']:.1%}"
    top, *rest = diagnose(data)
    shown = [a.value for a in [*at.error, *at.warning, *at.info, *at.success]]
    named = [f for f in rest if f.key == top.cause]  # the finding the verdict names is open under "Why", not folded
    assert all(any(as_shown(v).startswith(f"**{f.title}**") for v in shown) for f in named) and at.subheader[0].value == "Why"

    figs = charts(at)
    assert set(figs) == {"diagnose_theory", "diagnose_histograms", "diagnose_drift", "diagnose_gap", "diagnose_curves"}
    steps = int(data.steps["step"].max())
    theory = figs["diagnose_theory"]
    assert trace(theory, "m = 0.99 (this run)")
    marker = [t for t in theory["data"] if t.get("mode") == "markers"][0]
    assert values(marker["x"])[0] == steps and values(marker["y"])[0] == pytest.approx(0.99**steps)

    norm1 = data.layers["norm1"]
    hist = figs["diagnose_histograms"]
    assert f"at step {int(norm1.steps[-1])}" in hist["layout"]["title"]["text"]
    np.testing.assert_array_equal(values(hist["data"][0]["y"]), norm1.hist_train[-1])
    np.testing.assert_array_equal(values(hist["data"][1]["y"]), norm1.hist_infer[-1])
    drift = trace(figs["diagnose_drift"], "moving average")
    np.testing.assert_allclose(values(drift["y"]), norm1.moving_mean.mean(axis=1), rtol=1e-5, atol=1e-6)
    loss = [t for t in figs["diagnose_curves"]["data"] if t.get("yaxis", "y") == "y"][0]  # the top panel: fit's loss
    np.testing.assert_allclose(values(loss["y"]), data.steps["loss"], rtol=1e-6)

    at.selectbox(key="diagnose_layer").set_value("norm2").run()
    first = int(data.layers["norm2"].steps[0])
    at.select_slider(key="diagnose_step").set_value(first).run()
    at.selectbox(key="diagnose_channel").set_value(3).run()
    figs = charts(at)
    assert f"norm2 output on the validation probe batch at step {first}" in figs["diagnose_histograms"]["layout"]["title"]["text"]
    np.testing.assert_array_equal(values(figs["diagnose_histograms"]["data"][1]["y"]), data.layers["norm2"].hist_infer[0])
    drift = trace(figs["diagnose_drift"], "moving average")
    np.testing.assert_allclose(values(drift["y"]), data.layers["norm2"].moving_mean[:, 3], rtol=1e-5)
    assert not at.exception


@pytest.mark.slow
def test_diagnose_defaults_to_the_newest_done_run_and_opens_on_request(trained):
    _, ids = trained
    assert open_app("diagnose").selectbox(key="diagnose_run").value == ids["fixed"]
    at = open_app("diagnose", state={"diagnose_open": ids["collapse"]})
    assert at.selectbox(key="diagnose_run").value == ids["collapse"]
    assert at.query_params["run"] == ids["collapse"]  # the URL follows the choice
    link = [p.proto for p in at.get("page_link") if p.proto.label == "Open both in Compare"][0]
    assert link.query_string == f"runs={ids['collapse']}%2C{ids['fixed']}"


# --- Compare -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_overlays_two_runs(trained):
    home, ids = trained
    store = Store(home)
    pair = [ids["collapse"], ids["fixed"]]
    at = open_app("compare", runs=",".join(pair))
    assert at.multiselect(key="compare_runs").value == pair
    labels = [store.get_run(i).label for i in pair]
    table = at.dataframe[0].value
    assert list(table.index) == labels
    for label, run_id in zip(labels, pair, strict=True):
        acc = store.evaluations(run_id)["final"].accuracies()
        assert table.loc[label, "test (evaluate)"] == pytest.approx(acc["test"])
        assert table.loc[label, "test (batch stats)"] == pytest.approx(acc["test_batchstats"])
    figs = charts(at)
    assert set(figs) == {"compare_final", "compare_accuracy", "compare_drift"}
    names = [t["name"] for t in figs["compare_accuracy"]["data"]]
    assert all(any(n.startswith(label) for n in names) for label in labels) and len(names) == 4
    assert sorted(t["name"] for t in figs["compare_drift"]["data"] if t.get("showlegend") is not False) == sorted(labels)
    at.selectbox(key="compare_layer").set_value("norm3").run()
    assert charts(at)["compare_drift"]["layout"]["title"]["text"].startswith("norm3")
    assert not at.exception
    projected = open_app("compare", runs=",".join(pair), layout="presentation")  # the classroom's layout: slides, one chart each
    (fig,) = charts(projected).values()
    assert fig["layout"]["font"]["size"] > F.BASE_FONT and fig["layout"]["title"]["font"]["size"] > F.TITLE_FONT  # larger than the screen's
    assert "height" not in fig["layout"] and "width" not in fig["layout"]  # the window's
    assert [t["x"] for t in fig["data"]][0] == labels and projected.button(key="slides_next")  # final accuracy of both runs first


@pytest.mark.slow
def test_compare_defaults_and_session_preselection(trained):
    _, ids = trained
    assert open_app("compare").multiselect(key="compare_runs").value == [ids["fixed"], ids["collapse"]]
    at = open_app("compare", state={"compare_open": [ids["collapse"]]})
    assert at.multiselect(key="compare_runs").value == [ids["collapse"]]
    at.multiselect(key="compare_runs").set_value([]).run()
    assert [i.value for i in at.info] == ["Pick one or more runs to compare."]


# --- Export --------------------------------------------------------------------------------------
@pytest.fixture
def deferred(monkeypatch) -> dict[str, object]:
    """file name -> the callable a download button will run when clicked."""
    captured: dict[str, object] = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        captured[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return captured


@pytest.mark.slow
def test_export_offers_lazy_downloads(trained, deferred):
    home, ids = trained
    store, run_id = Store(home), ids["collapse"]
    at = open_app("export", run=run_id)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["PNG", "SVG", "PDF", "HTML", "Metrics per step (CSV)", "BN statistics per probe (CSV)", "HTML report (one file)"]
    static_ok, reason = export.static_export_available()
    assert at.download_button(key="export_png").disabled is (not static_ok)
    if not static_ok:
        assert reason in at.warning[0].value
    options = set(at.selectbox(key="export_chart").options)
    assert options >= {"Training curves", "EMA theory", "Drift · norm1", "Activation histograms · norm3"}

    at.selectbox(key="export_chart").set_value("Drift · norm2").run()
    html = next(fn for name, fn in deferred.items() if name.endswith("drift-norm2-screen.html"))()
    assert html.lower().startswith(b"<!doctype html>") and b"norm2 (mean over channels)" in html
    steps_csv = pd.read_csv(io.BytesIO(deferred[f"{run_id}-steps.csv"]()))
    assert set(store.load_run(run_id).steps["step"]) <= set(steps_csv["step"])  # plus probe-only step 0
    assert {"loss", "accuracy", "probe_acc_inference", "probe_acc_train_mode"} <= set(steps_csv.columns)
    report = deferred[f"bnviz-report-{run_id}.html"]().decode("utf-8")
    assert store.get_run(run_id).label in report and "<!DOCTYPE html>" in report
    if static_ok:
        png = next(fn for name, fn in deferred.items() if name.endswith("drift-norm2-screen.png"))()
        assert png.startswith(b"\x89PNG")

    at.multiselect(key="export_others").set_value([ids["fixed"]]).run()
    assert "Comparison · probe accuracy" in at.selectbox(key="export_chart").options
    report = deferred[f"bnviz-report-{run_id}.html"]().decode("utf-8")
    assert store.get_run(ids["fixed"]).label in report and "Comparison" in report
    assert not at.exception


# --- the server process --------------------------------------------------------------------------
NO_TF_SCRIPT = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=int(sys.argv[2])).run()
at.slider(key="train_input_size").set_value(24).run()
at.radio(key="train_dataset").set_value("digits").run()
for page in ("runs", "diagnose", "compare", "export"):
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, (page, at.exception)
    assert at.get("plotly_chart") or page == "runs", page
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))))
"""


@pytest.mark.slow
def test_the_server_process_never_imports_tensorflow(trained):
    home, _ = trained
    env = {**os.environ, "BNVIZ_HOME": str(home), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", NO_TF_SCRIPT, APP, str(APP_TIMEOUT_S)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
