"""Deep networks (ResNet50's 53 BN layers, MobileNetV2's 52): the layer overview figure, the verdict
naming where the error starts and the layers furthest off, and the pages at that size. Fast tests on a
hand-made 53-layer run with planted layers (tests/many_layers.py); slow ones on a real MobileNetV2
recorded with `bnviz.Probe`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import export
from bnviz import figures as F
from bnviz.diagnose import FEW_LAYERS, all_layer_figures, diagnose, ordered_layers, ranked_layers
from bnviz.labels import md_literal
from tests.many_layers import MANY, PLANTED_FIRST, PLANTED_WORST, many_layer_data, many_layer_run, planted
from tests.test_app import charts
from tests.test_diagnose_page import _open as open_page


# --- the figure and the verdict, on the hand-made run ------------------------------------------------
def test_overview_has_a_row_per_layer_in_network_order_and_ranks_the_planted_worst_first():
    data = many_layer_data()
    heatmap = F.layer_overview_figure(data).data[0]
    assert list(heatmap.y) == ordered_layers(data) == [planted(p) for p in range(MANY)]  # network order, not the store's
    assert list(heatmap.y) != sorted(data.layers) and len(heatmap.y) == MANY
    gaps = np.array(heatmap.z)[:, 0]
    assert np.argmax(gaps) == PLANTED_WORST and gaps[PLANTED_WORST] == pytest.approx(3.0 / 0.25, rel=1e-3)  # in warning thresholds (0.25 SDs; ε included)
    assert heatmap.customdata[PLANTED_WORST][0][0] == pytest.approx(3.0, rel=1e-3) and heatmap.customdata[PLANTED_WORST][0][2] == 1  # exact gap, rank 1
    assert np.allclose(np.array(heatmap.z)[:, 1], 0)  # every moving variance is the population's


def test_overview_height_grows_with_the_layers_but_stays_bounded():
    heights = [F.layer_overview_figure(many_layer_data(n, {})).layout.height for n in (4, MANY, 200)]
    assert heights[0] < heights[1] < heights[2] <= heights[1] * 1.25
    assert heights[1] >= 20 * MANY  # a line of text per layer name


def test_overview_escapes_layer_names():
    data = many_layer_data(5, {1: 2.0})
    name = "<b>bad</b>"
    layers = {name if k == planted(1, 5) else k: dataclasses.replace(v, layer=name if k == planted(1, 5) else k) for k, v in data.layers.items()}
    info = {**data.run.info, "layers": [{"name": name if r["name"] == planted(1, 5) else r["name"]} for r in data.run.info["layers"]]}
    fig = F.layer_overview_figure(dataclasses.replace(data, layers=layers, run=dataclasses.replace(data.run, info=info)))
    assert "&lt;b&gt;bad&lt;/b&gt;" in fig.data[0].y and name not in fig.data[0].y and "&lt;b&gt;" in fig.layout.title.subtitle.text


def test_verdict_names_the_first_wrong_layer_and_the_three_furthest_off():
    data = many_layer_data()
    top = diagnose(data)[0]
    first, worst = planted(PLANTED_FIRST), [planted(PLANTED_WORST), planted(PLANTED_WORST + 5), planted(PLANTED_WORST + 9)]
    assert top.cause and f"The error starts at {first}, the first of the {MANY} BN layers" in top.detail
    assert "0.50 SDs" in top.detail and "furthest off are " + "; ".join(f"{n} ({g:.2f} SDs, 1×)" for n, g in zip(worst, (3, 2, 1.5), strict=True)) in top.detail
    assert top.detail.count("_bn") == 4  # the first and the three furthest off, no other layer
    assert [f.name for f in ranked_layers(all_layer_figures(data))[:3]] == worst


def test_a_three_layer_verdict_still_follows_the_error_through_every_layer():
    data = many_layer_data(FEW_LAYERS, {1: 2.0})
    detail = diagnose(data)[0].detail
    assert f"The error starts at {planted(1, FEW_LAYERS)} and carries through the network" in detail and "furthest off" not in detail
    assert all(f"{planted(p, FEW_LAYERS)} 1×" in detail for p in range(FEW_LAYERS))


def test_the_verdict_markdown_escapes_layer_names():
    from pages.common import finding_markdown

    top = diagnose(many_layer_data())[0]
    assert md_literal(planted(PLANTED_WORST)) in finding_markdown(top) and planted(PLANTED_WORST) not in finding_markdown(top)


def test_a_layer_without_finite_statistics_ranks_last():
    figures = all_layer_figures(many_layer_data(5, {2: 1.0}))
    broken = dataclasses.replace(figures[0], infer_mean_gap=math.nan, infer_scale=math.inf, own_mean_gap=math.nan, own_scale=math.nan)
    assert [f.name for f in ranked_layers([broken, *figures[1:]])][0] == figures[2].name
    assert ranked_layers([broken, *figures[1:]])[-1] is broken


# --- the pages on a real MobileNetV2 ------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    home = tmp_path_factory.mktemp("mobilenet")
    return home, many_layer_run(home)


def _open(home, monkeypatch, page: str, **query: str) -> AppTest:
    monkeypatch.setenv("BNVIZ_HOME", str(home))
    return open_page(page, **query)


@pytest.mark.slow
def test_diagnose_page_at_52_layers_shows_the_overview_and_opens_on_the_worst_layer(mobilenet, monkeypatch):
    home, data = mobilenet
    assert len(data.layers) == 52
    at = _open(home, monkeypatch, "diagnose", run=data.run.id)
    shown = charts(at)
    overview = shown["diagnose_overview"]
    assert overview["data"][0]["y"] == ordered_layers(data)
    assert len(shown) <= 6  # curves, mᵗ, the overview, histograms, drift, channel gap: never one per layer
    picker = at.selectbox(key="diagnose_layer")
    assert picker.value == ranked_layers(all_layer_figures(data))[0].name and picker.options == ordered_layers(data)
    top = diagnose(data)[0]
    assert "The error starts at" in top.detail and "furthest off" in top.detail and len(top.detail) < 1000  # not 52 layers listed


@pytest.mark.slow
def test_compare_and_export_stay_bounded_at_52_layers(mobilenet, monkeypatch):
    home, data = mobilenet
    compare = _open(home, monkeypatch, "compare", runs=data.run.id)
    assert len(charts(compare)) <= 3 and compare.selectbox(key="compare_layer").value == ranked_layers(all_layer_figures(data))[0].name
    exported = _open(home, monkeypatch, "export")
    assert len(charts(exported)) <= 1 and "Every BN layer at a glance" in exported.selectbox(key="export_chart").options
    report = export.html_report([data], "deep")
    assert "Every BN layer at inference" in report and report.count('class="figure-spec"') <= 5  # curves, mᵗ, overview, histograms, drift
