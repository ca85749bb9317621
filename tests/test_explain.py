"""Explain and fix: PreciseBN recovery on the embedded default, what-if levers, recalibration from
the Diagnose page, the Sweep and Story pages, the diagnose/sweep/tensorboard CLI."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bnviz import figures as F
from bnviz.config import ProbeConfig
from bnviz.diagnose import diagnose
from bnviz.presets import SEED_RESULTS, preset_config
from bnviz.store import Store
from bnviz.story import CHAPTERS, new_story_id
from tests.test_app import charts, open_app, trace, values
from tests.test_cli import bnviz

pytestmark = pytest.mark.slow  # every test here trains runs end to end (a module fixture, workers, the CLI)
TINY = {"input_size": 20, "epochs": 1, "probe": ProbeConfig(probe_batch=32, population_samples=64)}


def table_with(shown, column: str):
    """The first table shown with `column` (AppTest does not expose dataframe keys): `shown` is an
    AppTest (its data grids) or a list of elements such as `at.table`."""
    tables = [d.value for d in getattr(shown, "dataframe", shown) if column in d.value.columns]
    assert tables, f"no table with column {column!r}"
    return tables[0]


def _train(store: Store, config, sweep: str | None = None) -> str:
    from bnviz.tf.train import execute_run

    run_id = store.create_run(config, status="running", sweep=sweep)
    assert execute_run(store, run_id).status == "done"
    return run_id


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Tiny runs: a story (four presets) and a two-momentum sweep, trained in this process."""
    home = tmp_path_factory.mktemp("explain")
    store, story, ids = Store(home), new_story_id(), {}
    for chapter in CHAPTERS:
        ids[chapter.preset] = _train(store, preset_config(chapter.preset, **TINY), sweep=story)
    for m in (0.5, 0.99):
        ids[f"sweep{m}"] = _train(store, preset_config("bn", name=f"bn m={m}", **TINY).with_momentum(m), sweep="sweep-20260101-000000")
    return home, ids


@pytest.fixture
def app_home(explained, monkeypatch):
    monkeypatch.setenv("BNVIZ_HOME", str(explained[0]))
    return explained


@pytest.mark.slow
def test_precisebn_recovers_the_collapse_on_the_embedded_default(tmp_path):
    """The bn preset at its defaults collapses in inference mode; recalibration without retraining
    brings test accuracy back to the batch-statistics accuracy (README: 0.27 → 0.99)."""
    from bnviz.tf.recalibrate import recalibrate

    store = Store(tmp_path)
    run_id = _train(store, preset_config("bn", probe=ProbeConfig(enabled=False)))
    result = recalibrate(store, run_id, batches=30)
    before, after = result["before"].accuracies(), result["after"].accuracies()
    lost = before["test_batchstats"] - before["test"]
    assert lost > 0.3, before  # the collapse is there to recover from
    assert after["test"] >= 0.95 and after["test"] >= before["test_batchstats"] - 0.03, (before, after)
    assert store.evaluations(run_id)["precisebn"].batches == 30
    assert (store.models_dir / f"{run_id}-precisebn.keras").is_file()


def test_diagnose_cli_explains_the_collapse(explained):
    home, ids = explained
    out = bnviz("diagnose", ids["bn"], "--json", home=home)
    assert out.returncode == 0, out.stderr
    import json

    findings = json.loads(out.stdout)["findings"]
    keys = [f["key"] for f in findings]
    assert keys[0] == "verdict" and "stale_initial_values" in keys
    stale = next(f for f in findings if f["key"] == "stale_initial_values")
    assert "PyTorch: momentum=0.01" in stale["detail"] and stale["numbers"]["init_weight"] > 0.5


def test_tensorboard_export_writes_histograms(explained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    home, ids = explained
    out = bnviz("tensorboard", ids["bn"], "--logdir", str(tmp_path), home=home)
    assert out.returncode == 0, out.stderr
    events = EventAccumulator(str(tmp_path / ids["bn"]), size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()["tensors"]
    assert {"probe/accuracy_inference", "norm1/output_train_mode", "norm1/moving_mean_gap_sd"} <= set(tags)
    stored = Store(home).load_run(ids["bn"]).layers["norm1"]
    last = events.Tensors("norm1/output_inference")[-1]
    from tensorflow import make_ndarray

    buckets = make_ndarray(last.tensor_proto)
    assert last.step == int(stored.steps[-1])
    np.testing.assert_array_equal(buckets[:, 2], stored.hist_infer[-1])


def test_diagnose_page_lever_queues_a_copy_and_opens_compare(app_home):
    home, ids = app_home
    at = open_app("diagnose", run=ids["bn"])
    assert any("Verdict" in e.value or "remember" in e.value for e in [*at.error, *at.warning, *at.success])
    at.button(key="diagnose_lever_lower_momentum").click().run()
    assert not at.exception
    child = Store(home).list_runs()[0]
    assert child.parent == ids["bn"] and child.config.arch.bn.momentum < 0.99
    assert at.multiselect(key="compare_runs").value == [ids["bn"], child.id]
    Store(home).request_cancel(child.id)


def test_diagnose_page_recalibrates_in_a_worker(app_home):
    home, ids = app_home
    at = open_app("diagnose", run=ids["final"])
    at.button(key="diagnose_recalibrate").click().run()
    deadline = time.monotonic() + 120
    while "precisebn" not in Store(home).evaluations(ids["final"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    at.run()
    assert not at.exception
    after = Store(home).evaluations(ids["final"])["precisebn"]
    tables = [d.value for d in at.dataframe if any(str(label).startswith("after PreciseBN on train") for label in d.value.index)]
    assert tables and after.calibrated_on == "train"
    assert tables[0].loc[f"after PreciseBN on train ({after.batches} batches)", "test"] == pytest.approx(after.accuracy["test"])


def test_sweep_page_plots_accuracy_against_momentum(app_home):
    home, ids = app_home
    at = open_app("sweep")
    assert at.selectbox(key="sweep_shown").value == "sweep-20260101-000000"
    fig = charts(at)["sweep_chart"]
    line = trace(fig, "batch 32 · inference")
    assert list(values(line["x"])) == [0.5, 0.99]
    expected = [Store(home).evaluations(ids[f"sweep{m}"])["final"].accuracy["test"] for m in (0.5, 0.99)]
    np.testing.assert_allclose(values(line["y"]), expected)


def test_story_page_walks_the_four_chapters(app_home):
    home, ids = app_home
    at = open_app("story")
    for index, chapter in enumerate(CHAPTERS):
        at.radio(key="story_chapter").set_value(index).run()
        assert not at.exception and at.header[0].value == chapter.title
        table = table_with(at, "seed notebook")
        assert table.loc["test (evaluate)", "bnviz"] == f"{Store(home).evaluations(ids[chapter.preset])['final'].accuracy['test']:.0%}"
        fit = Store(home).evaluations(ids[chapter.preset])["final"].fit_accuracy
        assert table.loc["train (fit)"].tolist() == [f"{fit:.0%}", f"{SEED_RESULTS[chapter.preset][0]:.0%}"]
        assert table.loc["train (evaluate)", "seed notebook"] == "–"  # the seed has no such figure: a dash, never "None"
        assert "story_chart" in charts(at)
        verdict = diagnose(Store(home).load_run(ids[chapter.preset]))[0]
        assert any(m.value.startswith(f"**bnviz's {verdict.title[0].lower()}") for m in at.markdown)  # the chapter says the run's verdict
    at.toggle(key="presentation").set_value(True).run()  # the same story as slides, from the chapter shown last
    assert not at.exception and at.query_params["chapter"] == "4" and at.button(key="slides_next")


def test_story_link_opens_its_chapter_in_the_presentation_layout(app_home):
    """`?chapter=bn&layout=presentation`: that chapter's first slide, its chart's text larger than the
    screen's (1.5× where the 400-px chart holds it: bnviz.slides.on_screen; read from the figure the
    page sends); Next moves the address on, and the layout off gives the
    full page back on the chapter the slides were at."""
    at = open_app("story", chapter="bn", layout="presentation")
    assert at.query_params["chapter"] == "3" and at.query_params["slide"] == "1" and at.toggle(key="presentation").value
    (layout,) = [fig["layout"] for fig in charts(at).values()]
    assert layout["font"]["size"] > F.BASE_FONT and layout["title"]["font"]["size"] > F.TITLE_FONT and layout["legend"]["font"]["size"] > F.LEGEND_FONT
    assert any(m.value.startswith("Train ") and "batch statistics" in m.value for m in at.markdown)
    while at.query_params["chapter"] == "3":
        at.button(key="slides_next").click().run()
    assert at.query_params["chapter"] == "4" and at.query_params["layout"] == "presentation"
    at.toggle(key="presentation").set_value(False).run()
    assert at.radio(key="story_chapter").value == 3 and at.query_params["chapter"] == "final"
    assert "size" not in charts(at)["story_chart"]["layout"].get("font", {}) and not {"layout", "slide"} & set(at.query_params)  # the template's 13 px
    bad = open_app("story", chapter="nope")
    assert "nope" in bad.warning[0].value and bad.radio(key="story_chapter").value == 0
