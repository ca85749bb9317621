"""The answer on the first screen, in a real browser at two laptop sizes: on Diagnose the verdict,
the row of big figures and the first chart sit above the fold, and on Train the mᵗ forecast and the
Queue button do too. The run is written straight into the store (no training), so this takes seconds."""

from __future__ import annotations

from bnviz import export
from bnviz.store import Store
from tests.browser import BROWSER_MODULE, chromium, streamlit_server
from tests.test_browser import ARTIFACTS, screenshot_on_failure
from tests.test_diagnose_page import _finished
from tests.test_figures import make_data

pytestmark = BROWSER_MODULE
VIEWPORTS = ((1440, 900), (1280, 720))


def _bottom(page, selector: str) -> float:
    """Bottom edge of the first element matching `selector`, in page pixels (it must be shown)."""
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    return box["y"] + box["height"]


def _top(page, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    return box["y"]


def test_the_answer_is_above_the_fold(tmp_path):
    run_id = _finished(Store(tmp_path), "first screen")
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(tmp_path) as (url, _), chromium() as browser:
        for width, height in VIEWPORTS:
            page = browser.new_page(viewport={"width": width, "height": height})
            with screenshot_on_failure(page, f"first-screen-{width}x{height}"):
                page.goto(f"{url}/diagnose?run={run_id}")
                page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=60_000)
                verdict = '[data-testid="stAlert"]:has-text("Verdict")'
                assert _bottom(page, verdict) <= _top(page, '[data-testid="stMetric"]:has-text("train (fit)")')
                assert _bottom(page, '[data-testid="stMetric"]:has-text("initial values left")') <= height
                chart = '[data-testid="stPlotlyChart"]:has-text("The symptom")'
                # title and upper panel; its lower panel may reach below the fold, since panels get the height their text needs
                assert _top(page, chart) < height - 200, "the symptom chart must show its top part"
                page.screenshot(path=str(ARTIFACTS / f"first-screen-diagnose-{width}x{height}.png"))
                page.goto(url)
                page.get_by_text("Input size (pixels per side)").wait_for(timeout=60_000)
                assert _bottom(page, 'button:has-text("Queue run")') <= height
                if height >= 900:
                    assert _bottom(page, '[data-testid="stMetric"]:has-text("left at the end")') <= height
                page.screenshot(path=str(ARTIFACTS / f"first-screen-train-{width}x{height}.png"))
            page.close()


def test_the_report_draws_every_figure_offline(tmp_path):
    """The report unpacks its compressed plotly.js in the browser and draws each figure, with no network."""
    runs = [make_data("a", run_id="20260101-000000-aaaaaa"), make_data("b", 0.8, "20260101-000000-bbbbbb")]
    page_html = export.html_report(runs, "offline")
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    figures = page_html.count('class="figure-spec"')
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
        page.goto(path.as_uri())
        page.wait_for_function(f"() => document.querySelectorAll('.figure .main-svg').length >= {figures}", timeout=30_000)
        assert not errors and page.locator(".figure .plot-container").count() == figures
