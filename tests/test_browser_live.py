"""Diagnose follows a training run in a real browser at 1440×900, without a reload: a run queued from
the Train page, opened by its link while it is still queued, shows "queued", then its first chart with
data while it is still training. A dummy process holds the one worker slot until the page shows the run
queued; the run is tiny (16 px) but long enough (many epochs) to be watched mid-training, and is
cancelled once seen."""

from __future__ import annotations

import subprocess
import sys
import time

from bnviz.presets import preset_config
from bnviz.records import RunStatus
from bnviz.store import Store
from tests.browser import BROWSER_MODULE, chromium, streamlit_server
from tests.test_browser import ARTIFACTS, _slider_to_minimum, screenshot_on_failure

pytestmark = BROWSER_MODULE
EPOCHS = "40"  # ~1,500 steps of 16 px images: minutes of training, cancelled once the page shows data
CURVE = '[data-testid="stPlotlyChart"]:has-text("The symptom") .scatterlayer .trace path.js-line'


def _queued_run(store: Store, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = [r for r in store.list_runs() if r.status == RunStatus.QUEUED]
        if queued:
            return queued[0].id
        time.sleep(0.3)
    raise TimeoutError("the run queued from the page is not in the store")


def _wait_for_a_segment(page, timeout: float) -> None:
    """Until the first curve's SVG path has a line segment (an "L"), polled: CURVE is a Playwright selector."""
    deadline = time.monotonic() + timeout
    while "L" not in (page.locator(CURVE).first.get_attribute("d") or ""):
        assert time.monotonic() < deadline, "the curve stayed a single dot"
        page.wait_for_timeout(500)


def test_a_queued_link_follows_the_run_into_training_and_shows_data_before_it_ends(tmp_path):
    store = Store(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "bnviz-test-slot"])
    blocker = store.create_run(preset_config("bn").replace(name="slot holder"), status="running")
    store.start(blocker, holder.pid, 10, 10, {})  # the one worker slot is busy: the page's run stays queued
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with streamlit_server(tmp_path) as (url, _), chromium() as browser:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            with screenshot_on_failure(page, "browser-live"):
                page.goto(url)
                page.get_by_text("Input size (pixels per side)").wait_for(timeout=60_000)
                _slider_to_minimum(page, "Input size")
                page.locator(".st-key-train_epochs input").fill(EPOCHS)
                page.keyboard.press("Enter")
                page.wait_for_timeout(1500)
                page.get_by_role("button", name="Queue run").click()
                run_id = _queued_run(store)
                page.goto(f"{url}/diagnose?run={run_id}")
                page.get_by_text("waiting for a worker").wait_for(timeout=60_000)
                assert page.get_by_text("showing another one").count() == 0
                page.evaluate("window.__bnviz_same_page = true")  # gone if the page reloads
                store.finish(blocker, RunStatus.CANCELLED)  # frees the slot: a worker takes the run
                holder.kill()
                page.locator(CURVE).first.wait_for(state="attached", timeout=240_000)
                # the first redraw may hold one record (a dot); the next ones must extend it into a line
                _wait_for_a_segment(page, timeout=120)
                seen = store.get_run(run_id)
                assert seen.status == RunStatus.RUNNING, f"the chart drew a line only after the run ended ({seen.status})"
                assert page.evaluate("window.__bnviz_same_page === true"), "the page reloaded instead of following the run"
                assert page.get_by_text("Verdict pending").count() >= 1 and page.get_by_text("after 0 steps").count() == 0
                page.screenshot(path=str(ARTIFACTS / "browser-live-diagnose.png"))
                store.request_cancel(run_id)
    finally:
        holder.kill()
        holder.wait()
