"""Section `ui`: how fast the dashboard answers, and what its server process holds in memory.

- First render: a new AppTest session runs app.py (the frame and the default Train page), then
  `switch_page("pages/<page>.py")`; the switch-and-render is timed, with Streamlit's data cache
  cleared first, so each page loads its runs as on a first visit. The home folder holds synthetic
  stored runs of the default size (bench.fake): a story of the four presets and two more runs.
- Reruns while training: a real run is queued through the JobManager, whose worker process trains
  it (on the same 2 cores), making every probe record as it goes (budget 100, so that Diagnose has
  charts to draw); once two records are stored, the Runs and Diagnose pages (Diagnose opened on
  the training run) are rerun alternately, timed, then rerun again after the run was cancelled.
- Server memory: a real `streamlit run app.py` on 127.0.0.1 over the same home folder, started as
  the browser test starts it (tests/browser.py); its resident memory after start and one health
  check, then after a headless Chromium opened every page. The benchmark fails if any file with
  "tensorflow" in its path is mapped into the server process.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench import fake
from bench.util import ROOT, mapped_libraries, median, rotations, rss_bytes, spread, stopwatch, timed
from tests.browser import CHROMIUM, chromium, streamlit_server  # the browser test's server and Chromium, so both run the same way

PAGES = ("train", "runs", "diagnose", "compare", "sweep", "story", "export")
APP = str(ROOT / "app.py")
TIMEOUT_S = 120


def make_home(home: Path, quick: bool) -> dict[str, str]:
    """Synthetic finished runs: the story's four presets, and two more `bn` runs (0.99 and 0.8)."""
    from bnviz.presets import preset_config
    from bnviz.store import Store
    from bnviz.story import new_story_id, story_configs

    store, steps, spe = Store(home), (12 if quick else 114), (4 if quick else 38)
    story = new_story_id()
    ids = {c.preset: fake.write_run(store, c, steps, spe, sweep=story) for c in story_configs()}
    ids["collapse"] = fake.write_run(store, preset_config("bn", name="collapse"), steps, spe)
    ids["fixed"] = fake.write_run(store, preset_config("bn", name="fixed").with_momentum(0.8), steps, spe)
    return ids


def _app_test(query: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.query_params.update(query or {})
    return at


def _check(at, where: str) -> None:
    if at.exception:
        raise RuntimeError(f"{where}: {at.exception[0].message}")


def first_renders(home: Path, reps: int) -> dict:
    import streamlit as st

    os.environ["BNVIZ_HOME"] = str(home)
    start = time.perf_counter()
    at = _app_test()
    at.run()  # the first session in this process: imports streamlit's runtime, plotly, pandas, bnviz
    _check(at, "app.py")
    cold = time.perf_counter() - start
    frame, pages = [], {p: [] for p in PAGES}
    for _, page in rotations(PAGES, reps):
        st.cache_data.clear()
        at = _app_test()
        t0 = time.perf_counter()
        at.run()
        t1 = time.perf_counter()
        at.switch_page(f"pages/{page}.py").run()
        pages[page].append(time.perf_counter() - t1)
        frame.append(t1 - t0)
        _check(at, page)
    return {
        "cold_process_first_run_s": cold,
        "app_frame_s": spread(frame),
        "pages_s": {p: spread(v) for p, v in pages.items()},
        "story_html_report_s": story_report(home, reps),
    }


def story_report(home: Path, reps: int) -> float:
    """The one-file HTML report of the four story runs, which the Story page builds on every render
    (its download button gets the bytes, not a callable)."""
    from bnviz import export
    from bnviz.store import Store
    from bnviz.story import CHAPTERS, latest_story

    store = Store(home)
    datas = [store.load_run(r.id) for r in latest_story(store).values()]
    return median(timed(lambda: export.html_report(datas, "The BatchNorm story", [(c.title, c.text) for c in CHAPTERS]), reps))


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached after {timeout} s")


def reruns_while_training(home: Path, quick: bool, reruns: int) -> dict:
    """Rerun the Runs and Diagnose pages while a worker trains a real run, then once it is gone."""
    from bnviz.config import ProbeConfig
    from bnviz.jobs import JobManager
    from bnviz.presets import preset_config
    from bnviz.store import FINISHED, Store

    os.environ["BNVIZ_HOME"] = str(home)
    store = Store(home)
    live_records = ProbeConfig(budget=100.0)  # every record made as training goes, so Diagnose draws every chart while it trains
    config = preset_config("bn", name="bench-live", probe=live_records, **({"input_size": 32, "epochs": 30} if quick else {"epochs": 10}))
    manager = JobManager(store)
    run_id = manager.submit(config)
    try:
        _wait(lambda: store.progress(run_id).probe_records >= 2 and store.get_run(run_id).heartbeat, 300, "the worker's first records")
        views = {"runs": _app_test(), "diagnose": _app_test({"run": run_id})}
        for page, at in views.items():
            at.run()
            at.switch_page(f"pages/{page}.py").run()
            _check(at, page)
        live: dict[str, list[float]] = {p: [] for p in views}
        steps_before = store.progress(run_id).step
        for _, page in rotations(list(views), reruns):
            t0 = time.perf_counter()
            views[page].run()
            live[page].append(time.perf_counter() - t0)
            _check(views[page], page)
        progress = store.progress(run_id)
        still_running = progress.status == "running"
    finally:
        manager.cancel(run_id)
        _wait(lambda: store.get_run(run_id).status in FINISHED, 120, "the cancelled run's end")
        _wait(lambda: manager.active_workers() == 0, 60, "the worker's exit")
    idle: dict[str, list[float]] = {p: [] for p in views}
    for _, page in rotations(list(views), reruns):
        t0 = time.perf_counter()
        views[page].run()
        idle[page].append(time.perf_counter() - t0)
    return {
        "run": f"{config.preset} {config.input_size} px (worker trains it on the same cores)",
        "training_steps_during_reruns": progress.step - steps_before,
        "still_running_at_end": still_running,
        "while_training_s": {p: spread(v) for p, v in live.items()},
        "idle_s": {p: spread(v) for p, v in idle.items()},
    }


def _open_pages(url: str, pages: tuple[str, ...], run_id: str) -> dict[str, float]:
    """Open each page in headless Chromium; seconds until its title shows and no script runs."""
    seconds = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name in pages:
            query = f"?run={run_id}" if name in ("diagnose", "export") else ""
            t0 = time.perf_counter()
            page.goto(f"{url}/{'' if name == 'train' else name}{query}")
            page.locator("h1").first.wait_for(timeout=TIMEOUT_S * 1000)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT_S * 1000)
            seconds[name] = time.perf_counter() - t0
    return seconds


def server_memory(home: Path, run_id: str, quick: bool) -> dict:
    """RSS of a real server after its health check, then after a browser opened every page; fails
    when TensorFlow is mapped into it."""
    t0 = time.perf_counter()
    with streamlit_server(home) as (url, proc):  # entered once the health check answers
        out = {"start_to_healthy_s": time.perf_counter() - t0, "rss_after_health_mb": rss_bytes(proc.pid) / 2**20}
        if quick:
            out["browser"] = "skipped in --quick"
        elif Path(CHROMIUM).exists():
            pages = PAGES
            out["browser_page_s"] = _open_pages(url, pages, run_id)
            out["rss_after_pages_mb"] = rss_bytes(proc.pid) / 2**20
            out["pages_opened"] = list(pages)
        else:
            out["browser"] = f"skipped: {CHROMIUM} not found"
        tensorflow = mapped_libraries(proc.pid, "tensorflow")
        out["tensorflow_mapped"] = tensorflow
    if tensorflow:
        raise AssertionError(f"the dashboard server loaded TensorFlow: {tensorflow[:3]}")
    return out


def run(quick: bool, reps: int) -> dict:
    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as tmp:
        home = Path(tmp)
        with stopwatch(phases, "make_home"):
            ids = make_home(home, quick)
        with stopwatch(phases, "first_render"):
            out = {"first_render": first_renders(home, 1 if quick else reps)}
        with stopwatch(phases, "server"):
            out["server"] = server_memory(home, ids["bn"], quick)
        with stopwatch(phases, "reruns"):
            out["reruns"] = reruns_while_training(home, quick, 2 if quick else 3 * reps)
    out["section_seconds"] = phases
    out["rerun_target_s"] = 0.3
    out["rerun_median_while_training_s"] = median([v["median"] for v in out["reruns"]["while_training_s"].values()])
    return out
