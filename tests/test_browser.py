"""The real dashboard in a real browser: a deep link on a fresh server gets the frame, a tiny run is
trained through the Train page, and Diagnose renders its histograms and drift chart."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from bnviz.store import FINISHED, Store
from tests.browser import BROWSER_MODULE, chromium, streamlit_server

pytestmark = BROWSER_MODULE
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHART = '[data-testid="stPlotlyChart"] .main-svg'


def _slider_to_minimum(page, label: str) -> None:
    slider = page.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider")
    slider.focus()
    slider.press("Home")


def _wait_for_run(home: Path, timeout: float = 180) -> str:
    store, deadline = Store(home), time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = store.list_runs()
        if runs and runs[0].status in FINISHED:
            assert runs[0].status == "done", runs[0].error
            return runs[0].id
        time.sleep(0.5)
    raise TimeoutError("the run queued from the browser did not finish")


@pytest.fixture
def page(tmp_path):
    """A browser page on a fresh server, `base_url` set to it."""
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(tmp_path) as (url, _), chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.base_url = url
        yield page


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"), full_page=True)
        raise


def test_train_in_browser_then_diagnose_renders_charts(tmp_path, page):
    url = page.base_url
    with screenshot_on_failure(page, "browser-train"):
        page.goto(f"{url}/runs")  # a deep link first, on a fresh server: must still get the navigation
        page.get_by_role("link", name="Diagnose").first.wait_for(timeout=60_000)
        page.goto(url)
        page.get_by_text("Input size (pixels per side)").wait_for(timeout=60_000)
        _slider_to_minimum(page, "Input size")
        page.locator(".st-key-train_epochs input").fill("1")  # a number input: epochs range over [1, 500] everywhere
        page.keyboard.press("Enter")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "browser-train.png"), full_page=True)
        page.get_by_role("button", name="Queue run").click()
        page.get_by_text("Queued run").wait_for(timeout=30_000)
        run_id = _wait_for_run(tmp_path)
        run = Store(tmp_path).get_run(run_id)
        assert (run.config.input_size, run.config.epochs) == (16, 1)
        page.goto(f"{url}/diagnose?run={run_id}")
        page.get_by_text("Activations: training mode vs inference mode").wait_for(timeout=60_000)
        page.locator(CHART).nth(3).wait_for(timeout=60_000)
        titles = page.locator('[data-testid="stPlotlyChart"] .gtitle').all_text_contents()
        assert any(t.startswith("norm1 output on the validation probe batch") for t in titles), titles
        assert any("moving statistics vs batch" in t for t in titles), titles
        page.screenshot(path=str(ARTIFACTS / "browser-diagnose.png"), full_page=True)
