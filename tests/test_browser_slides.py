"""Slides on a 1280×720 projector in a real browser: every slide of the Story and of a diagnosis is
walked with the Next button and the arrow keys, and on each one the chart lies fully inside the
window and nothing scrolls (read from the rendered page). The runs are written straight into the
store (no training)."""

from __future__ import annotations

import pytest

from bnviz.store import Store
from tests.browser import BROWSER_MODULE, chromium, streamlit_server
from tests.test_browser import ARTIFACTS, screenshot_on_failure
from tests.test_browser_classroom import _story
from tests.test_diagnose_page import inspected

pytestmark = BROWSER_MODULE
WIDTH, HEIGHT = 1280, 720
TOLERANCE_PX = 2
GEOMETRY = """() => {
  const chart = document.querySelector('.st-key-slide_chart [data-testid="stPlotlyChart"]');
  const box = chart && chart.getBoundingClientRect();
  const main = document.querySelector('[data-testid="stMain"]');
  return {chart: box && [box.left, box.top, box.right, box.bottom], page: document.scrollingElement.scrollHeight,
          main: main.scrollHeight - main.clientHeight, url: location.search};
}"""


def _slide(page, number: int, total: int) -> dict:
    """Wait for slide `number` of `total` and its chart (if it has one) to be drawn; its geometry."""
    page.locator(".st-key-slide_title").filter(has_text=f"· {number}/{total}").wait_for(timeout=60_000)
    page.wait_for_function("!document.querySelector('[data-stale=\"true\"]')", timeout=60_000)  # the last slide's chart is gone
    if page.locator(".st-key-slide_chart").count():
        page.locator('.st-key-slide_chart [data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # plotly sizes the chart to its container after drawing it
    return page.evaluate(GEOMETRY)


def _fits(geometry: dict) -> None:
    """The slide's chart inside the window, and neither the document nor the app's pane scrolls."""
    assert geometry["page"] <= HEIGHT + TOLERANCE_PX and geometry["main"] <= TOLERANCE_PX, geometry
    if geometry["chart"]:
        left, top, right, bottom = geometry["chart"]
        assert left >= 0 and top >= 0 and right <= WIDTH + TOLERANCE_PX and bottom <= HEIGHT + TOLERANCE_PX, geometry
        assert bottom - top >= 250, geometry  # the chart has the room left, not a sliver


def _walk(page, total: int, name: str) -> list[str]:
    """Every slide from the first, moving on with the button and the arrow key in turn; the addresses seen."""
    addresses = []
    for number in range(1, total + 1):
        geometry = _slide(page, number, total)
        _fits(geometry)
        addresses.append(geometry["url"])
        page.screenshot(path=str(ARTIFACTS / f"slides-{name}-{number}-{WIDTH}x{HEIGHT}.png"))
        if number < total:
            if number % 2:
                page.get_by_role("button", name="Next").click()
            else:
                page.keyboard.press("ArrowRight")
    return addresses


@pytest.mark.slow  # ~1 min: one server, eleven slides
def test_every_slide_fits_a_projector_without_scrolling(tmp_path):
    store = Store(tmp_path)
    _story(store)
    run_id = inspected(store)
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(tmp_path) as (url, _), chromium() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        with screenshot_on_failure(page, "slides"):
            page.goto(f"{url}/story?layout=presentation&chapter=1")
            addresses = _walk(page, 7, "story")
            assert "chapter=3&slide=2" in addresses[3] and "chapter=6&slide=1" in addresses[-1]
            page.keyboard.press("ArrowLeft")  # back one, with the other arrow
            _slide(page, 6, 7)
            assert "chapter=5&slide=1" in page.url

            page.goto(f"{url}/diagnose?layout=presentation&run={run_id}")
            assert [a.split("slide=")[-1] for a in _walk(page, 4, "diagnose")] == ["1", "2", "3", "4"]
            assert page.get_by_role("button", name="Next").is_disabled()
