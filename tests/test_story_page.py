"""The Story page's raw-pixel chapter with AppTest, on runs written straight into a store (no
training): until the raw pair exists it offers to train it; then it shows the four runs side by side."""

from __future__ import annotations

import pytest

from bnviz.config import with_settings
from bnviz.store import Store
from bnviz.story import RAW_PRESETS, raw_configs, story_configs
from tests.test_app import charts, open_app
from tests.test_browser_classroom import _story
from tests.test_diagnose_page import _finish


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    return Store(tmp_path)


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
