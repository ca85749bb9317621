"""bnviz.export: static images (when a browser is here), standalone HTML, CSV and the report."""

from __future__ import annotations

import base64
import gzip
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from bnviz import export as E
from bnviz import figures as F
from bnviz.records import RunData
from tests.conftest import browser_test
from tests.test_figures import empty_data, make_data, tiny_run

AVAILABLE, REASON = E.static_export_available()
needs_browser = browser_test(AVAILABLE, f"static export unavailable here: {REASON}")
PLOTLYJS_BANNER = "* plotly.js v"  # the first lines of the inlined bundle
PACKED = 'id="plotlyjs-gzip"'  # the report's one compressed plotly.js


def unpacked_plotlyjs(page: str) -> str:
    """The report's plotly.js, decompressed as its loader does in the browser."""
    start = page.index(PACKED) + len(PACKED) + 1
    return gzip.decompress(base64.b64decode(page[start : page.index("</script>", start)])).decode("utf-8")


def small_figure(title: str = "a small figure") -> go.Figure:
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2])).update_layout(title=title)


# --- figures ---------------------------------------------------------------------------------
def test_static_export_available_says_why_not():
    ok, reason = E.static_export_available()
    assert isinstance(ok, bool) and isinstance(reason, str)
    assert ok or reason, "a missing browser must come with a reason"
    assert E.static_export_available() == (ok, reason)


def test_html_is_standalone_and_offline():
    page = E.figure_bytes(small_figure("offline chart"), "html").decode("utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>") and "offline chart" in page
    assert page.count(PLOTLYJS_BANNER) == 1 and "<script src=" not in page


def test_unknown_format_is_refused_with_the_value():
    with pytest.raises(ValueError, match="'bmp'"):
        E.figure_bytes(small_figure(), "bmp")


@needs_browser
def test_png_svg_pdf():
    fig = F.ema_theory_figure(0.99, 40)
    assert E.figure_bytes(fig, "png").startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in E.figure_bytes(fig, "SVG")[:200]
    assert E.figure_bytes(fig, ".pdf").startswith(b"%PDF")


@needs_browser
def test_one_browser_serves_concurrent_exports_without_mixing_them_up():
    titles = [f"figure number {i}" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        svgs = list(pool.map(lambda t: E.figure_bytes(small_figure(t), "svg").decode("utf-8"), titles))
    for title, svg in zip(titles, svgs, strict=True):
        assert title in svg and all(other not in svg for other in titles if other != title)
    renderer = E._renderer
    E.figure_bytes(small_figure(), "png")
    assert E._renderer is renderer, "the browser should be reused, not restarted per image"


@pytest.fixture
def browser_path(monkeypatch):
    """Point BROWSER_PATH somewhere else with a fresh renderer state; restore the real one after."""
    monkeypatch.setattr(E, "_renderer", None)
    monkeypatch.setattr(E, "_failure", None)

    def use(path: str) -> None:
        monkeypatch.setenv("BROWSER_PATH", path)
        E._browser.cache_clear()

    yield use
    E._browser.cache_clear()


def test_without_a_browser_static_export_is_refused_and_html_still_works(browser_path, tmp_path):
    browser_path(str(tmp_path / "no-such-browser"))
    ok, reason = E.static_export_available()
    assert not ok and "BROWSER_PATH" in reason and "HTML" in reason
    with pytest.raises(E.ExportError, match="BROWSER_PATH"):
        E.figure_bytes(small_figure(), "png")
    assert b"plotly" in E.figure_bytes(small_figure(), "html")


@browser_test(AVAILABLE, f"needs kaleido (the failure comes from starting it): {REASON}")
def test_a_browser_that_fails_to_start_is_reported_not_hung_on(browser_path):
    browser_path("/bin/false")
    with pytest.raises(E.ExportError, match="could not be started"):
        E.figure_bytes(small_figure(), "svg")
    assert E.static_export_available()[0] is False  # the page stops offering PNG for a while


# --- CSV -------------------------------------------------------------------------------------
def test_run_csv_joins_steps_with_probe_accuracies():
    data = make_data()
    frame = pd.read_csv(io.BytesIO(E.run_csv(data)))
    assert list(frame["step"]) == sorted(set(data.steps["step"]) | set(data.probes["step"]))
    row = frame.set_index("step").loc[10]
    assert row["probe_acc_inference"] == 0.3 and row["probe_acc_train_mode"] == 0.8
    assert np.isclose(row["loss"], data.steps.set_index("step").loc[10, "loss"])
    assert frame.set_index("step").loc[0, "epoch"] == 0  # the step-0 probe keeps its epoch


def test_probes_csv_is_long_format_per_layer_step_channel():
    data = make_data()
    frame = pd.read_csv(io.BytesIO(E.probes_csv(data)))
    assert list(frame.columns) == ["layer", "step", "channel", *E.PROBE_COLUMNS]
    assert len(frame) == 3 * 2
    row = frame[(frame.step == 20) & (frame.channel == 1)].iloc[0]
    assert (row.layer, row.moving_var, row.batch_mean, row.pop_mean) == ("norm1", 16.0, 7.0, 5.0)
    assert frame[frame.step == 0].batch_mean.isna().all()


def test_csv_of_an_empty_run_still_parses():
    data = empty_data()
    assert pd.read_csv(io.BytesIO(E.run_csv(data))).empty
    assert list(pd.read_csv(io.BytesIO(E.probes_csv(data))).columns) == ["layer", "step", "channel", *E.PROBE_COLUMNS]


# --- report ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_escapes_names_and_inlines_plotly_once():
    hostile = "<script>alert('x')</script>"
    runs = [make_data(hostile, run_id="20260101-000000-aaaaaa"), make_data("plain", 0.8, "20260101-000000-bbbbbb")]
    page = E.html_report(runs, "Report & <title>", sections=[("Diagnosis <d>", "line one < two\nline two\n\nsecond paragraph")])
    assert "<script>alert(" not in page and "&lt;script&gt;alert(" in page
    assert "Report &amp; &lt;title&gt;" in page
    assert '<h2 id="section-1">Diagnosis &lt;d&gt;</h2><p>line one &lt; two<br>line two</p><p>second paragraph</p>' in page
    assert page.count(PACKED) == 1 and PLOTLYJS_BANNER in unpacked_plotlyjs(page)
    assert page.count('class="figure-spec"') == 2 * 3 + 4  # per run curves, histograms, drift; the comparison's 3 and mᵗ once
    assert "46.0%" in page and "98.0%" in page  # the accuracy table


def test_report_has_contents_findings_for_every_run_and_no_chart_twice():
    runs = [make_data("a", run_id="20260101-000000-aaaaaa"), make_data("a", 0.8, "20260101-000000-bbbbbb")]
    page = E.html_report(runs, "two runs")
    contents = page[page.index("<nav>") : page.index("</nav>")]
    for anchor, label in (("comparison", "Comparison"), ("run-1", "a m=0.99"), ("run-2", "a m=0.8")):
        assert f'<a href="#{anchor}">{label}</a>' in contents and f'id="{anchor}"' in page
    assert page.count("<h3>Findings</h3>") == 2 and page.count("Verdict") >= 2
    assert page.count("The cause: initial values left") == 1  # the mᵗ chart once, every run's momentum in it
    assert "20260101-000000-aaaaaa" not in contents  # ids stay in the run's meta line


def test_size_presets_set_size_and_fonts_on_a_copy():
    fig = small_figure()
    slide, paper = E.sized(fig, "slide"), E.sized(fig, "paper")
    assert (slide.layout.width, slide.layout.height, slide.layout.font.size) == (1600, 900, 24)
    assert (paper.layout.width, paper.layout.font.size) == (700, 10) and fig.layout.width is None
    assert E.sized(fig, "screen").layout.width is None
    projector = E.sized(fig, "presentation")  # the presentation layout's text (2×) at the projector's 1280×720
    assert (projector.layout.width, projector.layout.height, projector.layout.font.size) == (1280, 720, 2 * F.BASE_FONT)
    assert projector.layout.title.font.size == 2 * F.TITLE_FONT and projector.layout.legend.font.size == 2 * F.LEGEND_FONT


def test_report_of_nothing_and_of_an_empty_run():
    assert "No runs." in E.html_report([], "empty")
    page = E.html_report([empty_data()], "one empty run")
    assert "No training steps recorded yet" in page and page.count(PACKED) == 1


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> RunData:
    return tiny_run(tmp_path_factory)


@pytest.mark.slow
def test_exports_of_a_real_run(real_run):
    steps = pd.read_csv(io.BytesIO(E.run_csv(real_run)))
    assert steps["probe_acc_inference"].notna().sum() == len(real_run.probes)
    probes = pd.read_csv(io.BytesIO(E.probes_csv(real_run)))
    assert len(probes) == sum(t.moving_mean.size for t in real_run.layers.values())
    page = E.html_report([real_run], "tiny run")
    assert all(layer in page for layer in real_run.layers) and page.count(PACKED) == 1
    if AVAILABLE:
        assert E.figure_bytes(F.drift_figure(real_run, next(iter(real_run.layers))), "png").startswith(b"\x89PNG")
