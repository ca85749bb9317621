"""The classroom in a real browser at the projector's 1280×720: a Story link opens its chapter in the
presentation layout as slides, the message twice the screen's prose and the chart 1.5× (read from
the rendered page, not compared as pictures); controls grow and the page starts below the header;
and a Train link round-trips its settings, a bad value marked beside its widget. The runs are
written straight into the store (no training)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from bnviz.presets import PRESETS, preset_config
from bnviz.records import ProbeRecord
from bnviz.store import Store
from tests.browser import BROWSER_MODULE, chromium, streamlit_server
from tests.test_browser import ARTIFACTS, screenshot_on_failure
from tests.test_diagnose_page import _finish

pytestmark = BROWSER_MODULE
CHART_TITLE = '[data-testid="stPlotlyChart"] .gtitle'
PIXELS = "e => parseFloat(getComputedStyle(e).fontSize)"


def _story(store: Store) -> dict[str, str]:
    """The four presets as one finished story, each with fit climbing and a few probe records."""
    ids = {}
    for preset in PRESETS:
        run_id = ids[preset] = store.create_run(preset_config(preset), sweep="story-20260101-000000")
        store.start(run_id, os.getpid(), 10, 30, {})
        store.add_records(
            run_id,
            steps=[(s, 1, 2.0 / s, min(0.99, s / 30)) for s in range(1, 31)],
            probes=[ProbeRecord(s, 1, min(0.99, s / 30), 0.2, 0.1, 3.0, ()) for s in (0, 15, 30)],
        )
        _finish(store, run_id)
    return ids


def _px(page, selector: str) -> float:
    """The computed font size of the first element matching `selector`, once it is shown."""
    page.locator(selector).first.wait_for(timeout=60_000)
    return page.locator(selector).first.evaluate(PIXELS)


def _story_sizes(page, url: str, query: str, prose: str) -> dict[str, float]:
    page.goto(f"{url}/story?chapter=initial{query}")
    page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=60_000)
    return {
        "chart title": _px(page, CHART_TITLE),
        "axis title": _px(page, '[data-testid="stPlotlyChart"] .ytitle'),
        "prose": _px(page, prose),
        "button": _px(page, '[data-testid="stMain"] button p'),
    }


@pytest.mark.slow  # ~45 s: one server, seven page loads
def test_presentation_layout_and_train_links_in_a_browser(tmp_path):
    ids = _story(Store(tmp_path))
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(tmp_path) as (url, _), chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        with screenshot_on_failure(page, "classroom"):
            screen = _story_sizes(page, url, "", 'p:has-text("Two conv blocks")')
            projected = _story_sizes(page, url, "&layout=presentation", ".st-key-slide_message p")  # the chapter's first slide
            page.screenshot(path=str(ARTIFACTS / "classroom-story-1280x720.png"))
            # A slide's chart is laid out for 400 px (bnviz.slides.on_screen): up to 1.5× text where that holds it, smaller
            # where text would overlap; the training curves' two panels bring it down to about 10 px. The message is the large type.
            assert screen["chart title"] == 16 and projected["chart title"] >= 0.7 * screen["chart title"]
            assert _px(page, ".st-key-slide_message p") >= 32
            assert projected["prose"] >= 2 * screen["prose"] and projected["button"] >= 1.5 * screen["button"], (screen, projected)
            page.goto(f"{url}/diagnose?run={ids['bn']}&layout=presentation")
            assert _px(page, ".st-key-slide_message p") >= 32 and _px(page, CHART_TITLE) > 16  # the verdict's slide: chart title above the screen's 16 px
            page.screenshot(path=str(ARTIFACTS / "classroom-diagnose-1280x720.png"))
            page.goto(f"{url}/runs?layout=presentation")  # a page without slides: its table and its controls enlarged, clear of the header
            assert _px(page, '[data-testid="stTable"] td, [data-testid="stMain"] button p') >= 25
            header = page.locator('[data-testid="stHeader"]').bounding_box()
            assert page.locator('[data-testid="stMain"] h1').first.bounding_box()["y"] >= header["y"] + header["height"]

            page.goto(f"{url}/?preset=final&momentum=0.9&batch_size=48")
            page.get_by_text("batch_size must be one of the form's steps").wait_for(timeout=60_000)
            expect(page.locator(".st-key-train_momentum input")).to_have_value("0.9000")  # the widget fills in a moment later
            page.locator(".st-key-train_batch_size").get_by_role("slider").focus()
            page.keyboard.press("ArrowRight")  # 32 → 64: the mark goes with the bad value
            page.get_by_text("batch_size must be one of").wait_for(state="detached", timeout=30_000)
            page.get_by_role("button", name="Copy link").click()
            link = page.locator('[data-testid="stCode"] code').first.inner_text()
            assert link.startswith(url) and "momentum=0.9&" in link and "batch_size=64" in link
            page.goto(link)
            expect(page.locator(".st-key-train_momentum input")).to_have_value("0.9000", timeout=60_000)
            page.get_by_text("Seed notebook: train 100% · val 99% · test 99%").wait_for()  # the final preset's caption
            assert "momentum=" not in page.url  # applied, then cleared from the address
            assert page.locator('[data-testid="stAlert"]').count() == 0  # no error: every value came back
            page.screenshot(path=str(ARTIFACTS / "classroom-train-link-1280x720.png"))
