"""The Story page's raw-pixel chapter with AppTest, on runs written straight into a store (no
training): until the raw pair exists it offers to train it; then it shows the four runs side by side.
The lag chapter (6) trained for real through `bnviz story --chapters lag`: its pattern, its verdicts,
its numbers on the page."""

from __future__ import annotations

import contextlib
import io

import pytest

from bnviz.cli import main
from bnviz.config import ConfigError, with_settings
from bnviz.diagnose import VERDICTS, diagnose
from bnviz.store import Store
from bnviz.story import (
    LAG_CHAPTER,
    LAG_MOMENTA,
    LAG_RECIPE,
    RAW_PRESETS,
    chapter_configs,
    lag_configs,
    lag_key,
    lag_numbers,
    mean_gap,
    mechanism_row,
    raw_configs,
    story_configs,
    story_key,
)
from bnviz.tf.train import learning_rate_at
from tests.test_app import charts, open_app
from tests.test_browser_classroom import _story
from tests.test_diagnose_page import _finish


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    return Store(tmp_path)


@pytest.mark.slow
def test_raw_chapter_offers_the_pair_then_compares_it(store):
    _story(store)
    at = open_app("story", chapter="raw")
    assert at.header[0].value == "5 · The notebook's raw pixels" and at.button(key="story_raw_run")
    assert "2 of the 4 runs" in at.info[0].value and not charts(at)
    sweep = store.list_runs()[0].sweep
    for config in raw_configs():
        run_id = store.create_run(config, sweep=sweep)
        store.start(run_id, 1, 10, 30, {})
        _finish(store, run_id)
    at = open_app("story", chapter="raw")
    table = at.dataframe[0].value
    assert list(table.index) == ["more-layers", "more-layers (raw pixels)", "bn m=0.99", "bn (raw pixels) m=0.99"]
    bars = charts(at)["story_chart"]["data"]
    assert len(bars) == 4 and all(len(b["x"]) == 4 for b in bars)


def test_raw_configs_are_the_scaled_presets_without_rescaling():
    scaled = {c.preset: c for c in story_configs()}
    for raw in raw_configs(epochs=2):
        assert raw.preset in RAW_PRESETS and raw.arch.rescale == 1.0 and raw.epochs == 2
        assert with_settings(raw, rescale=1 / 255).replace(name=raw.preset, epochs=3) == scaled[raw.preset]


# --- chapter 6: lag ------------------------------------------------------------------------------------
def test_chapters_pick_their_runs_and_unknown_ones_are_named():
    lagged, fixed = lag_configs(seed=3, epochs=1, input_size=64)  # the recipe's length and size are not overridable
    assert (lagged.arch.bn.momentum, fixed.arch.bn.momentum) == LAG_MOMENTA and lagged.seed == fixed.seed == 3
    assert lagged.with_momentum(0.8) == fixed and lagged.arch.rescale == 1.0
    assert (lagged.input_size, lagged.epochs, lagged.late_epochs) == (LAG_RECIPE["input_size"], LAG_RECIPE["epochs"], LAG_RECIPE["late_epochs"])
    assert [learning_rate_at(lagged, e) for e in (0, lagged.epochs - 3, lagged.epochs - 2, lagged.epochs - 1)] == [
        lagged.learning_rate,
        lagged.learning_rate,
        lagged.late_learning_rate,
        lagged.late_learning_rate,
    ]
    assert [c.preset for c in chapter_configs(["lag", "bn"])] == ["bn", "bn", "bn"]  # story order: chapter 3, then the lag pair
    assert [c.name for c in chapter_configs(["raw"])] == ["more-layers", "bn", "more-layers (raw pixels)", "bn (raw pixels)"]
    with pytest.raises(ConfigError, match="Unknown chapter 'lga'.*lag"):
        chapter_configs(["lga"])


@pytest.fixture(scope="module")
def lag_story(tmp_path_factory):
    """The lag chapter trained for real through `bnviz story --chapters lag` (two runs, ~30 s)."""
    home = tmp_path_factory.mktemp("lag-story")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["story", "--chapters", "lag", "--home", str(home)])
    store = Store(home)
    return home, out.getvalue(), {story_key(r): store.load_run(r.id) for r in store.list_runs()}


@pytest.mark.slow
def test_the_lag_pair_lags_at_099_and_recovers_at_08(lag_story):
    _, printed, datas = lag_story
    lagged, fixed = datas[lag_key(0.99)], datas[lag_key(0.8)]
    (lag_row, fixed_row) = mechanism_row(lagged), mechanism_row(fixed)
    assert lag_row["initial values left, mᵗ"] < 0.01  # not the initial values
    test_batchstats = lagged.evaluations["final"].accuracy_of("test_batchstats")
    assert lag_row["test (inference)"] <= test_batchstats - 0.1 and lag_row["test (inference)"] <= lag_row["test (PreciseBN)"] - 0.1
    assert lag_row["trail: drift × m/(1 − m) (SDs)"] > 10 * fixed_row["trail: drift × m/(1 − m) (SDs)"]
    # m = 0.8 tracks the drift: its moving mean ends far closer and it scores higher. Not always within 0.05 of PreciseBN:
    # the restart's drift is chaotic, and under CI's load one seed-0 twin kept 0.82 against 0.98 (docs/story.md, lag chapter).
    assert fixed_row["moving mean off (SDs)"] <= lag_row["moving mean off (SDs)"] / 3
    assert fixed_row["test (inference)"] > lag_row["test (inference)"]
    assert diagnose(lagged)[0].cause == "lag"
    assert lagged.evaluations["final"].fit_accuracy == fixed.evaluations["final"].fit_accuracy  # same weights: momentum changes no training
    assert "6 · Lag: the notebook's likelier story" in printed and f"In this run: {lagged.steps_trained:,} steps" in printed
    assert "Two mechanisms, one symptom" in printed and VERDICTS["lag"] in printed


@pytest.mark.slow
def test_the_story_page_shows_the_lag_chapter_with_its_numbers(lag_story, monkeypatch):
    home, _, datas = lag_story
    monkeypatch.setenv("BNVIZ_HOME", str(home))
    at = open_app("story", chapter="lag")
    assert at.header[0].value == LAG_CHAPTER.title
    text = " ".join(m.value for m in at.markdown)
    assert lag_numbers(datas[lag_key(0.99)], datas[lag_key(0.8)]) in text and VERDICTS["lag"] in text
    drift = charts(at)["story_chart"]
    assert mean_gap(datas[lag_key(0.99)])[0] in drift["layout"]["title"]["text"]
    recap = at.dataframe[-1].value
    assert list(recap.index) == ["6 · lag (long run)", "6 · the same, m = 0.8"]
    assert recap["verdict"].tolist() == [VERDICTS[diagnose(datas[lag_key(m)])[0].cause] for m in LAG_MOMENTA]
    assert recap["verdict"].iloc[0] == VERDICTS["lag"]
