"""`python -m bench.live [--records 8] [--docs]`: how fast and at what cost a page follows a training run.

A real `streamlit run app.py` (started as the browser tests start it, tests/browser.py) and headless
Chromium, because the polling is the browser's: a fragment's `run_every` timer runs in the page, and
AppTest never fires it. The run "trains" in this process, which commits to the store what a worker's
Recorder commits (bench.fake's records of the bn preset at its default size: step rows every second,
RATE steps a second, and a probe record every RECORD_EVERY_S seconds), so no TensorFlow shares the
2 cores with the server and the worker's CPU is not the server's by construction.

- Latency: for each probe record, the seconds from its commit to the Diagnose page (opened on the
  run before it started training) showing it: the histogram's title names the record's step.
- CPU: the server process's own CPU time (/proc/<pid>/stat utime + stime) over the same window, while
  two sessions (two pages) watch the run, against a window of the same length with the run
  training and no page open. The difference is what polling costs, in percent of one core.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from bench import fake
from bench.docs import fenced, write_generated
from bench.util import load_average, median
from tests.browser import CHROMIUM, CHROMIUM_ARGS, chromium, streamlit_server

RATE = 9  # steps a second: the run trained 456 steps in 52 s
RECORD_EVERY_S = 5.0
SPE = 38  # steps per epoch of the default data at batch 32


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` itself (its children not included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Trainer:
    """Commits step rows every second from a thread, and probe records when asked, into one run."""

    def __init__(self, store, records: int):
        from bnviz.presets import preset_config

        config = preset_config("bn", name="live bench", epochs=60)
        self.total = SPE * config.epochs
        self.run_id = store.create_run(config, status="running")  # owned by this process: no worker takes it
        store.start(self.run_id, os.getpid(), SPE, self.total, {})
        self.store, self.step = store, 0
        self.records = [r for r in fake.records(config, self.total, SPE) if r.step > 0][:records]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._steps, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _steps(self) -> None:
        while not self.stop.wait(1.0):
            rows = fake.step_rows(self.step + RATE, SPE)[self.step :]
            self.store.add_records(self.run_id, steps=rows)
            self.step += RATE

    def commit_record(self, index: int) -> int:
        """Commit probe record `index`; returns its step."""
        record = self.records[index]
        self.store.add_records(self.run_id, probes=[record])
        return record.step


def shown_step(page, step: int, timeout_s: float) -> None:
    """Wait until the page's histogram title names `step` (Playwright's locators reach into the chart)."""
    title = page.locator('[data-testid="stPlotlyChart"] .gtitle', has_text=re.compile(rf"at\s+step\s+{step}(?![0-9])"))
    title.first.wait_for(state="attached", timeout=timeout_s * 1000)


def measure(home: Path, count: int) -> dict:
    from bnviz.store import Store

    store = Store(home)
    trainer = Trainer(store, count)
    with streamlit_server(home) as (url, server), chromium() as first:
        second = first.browser_type.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)  # a browser each: both pages in front
        pages = [browser.new_page(viewport={"width": 1440, "height": 900}) for browser in (first, second)]
        for page in pages:
            page.goto(f"{url}/diagnose?run={trainer.run_id}")
            page.get_by_text("waiting for the first record").first.wait_for(timeout=120_000)
        trainer.start()
        pages[0].get_by_text("Verdict pending").first.wait_for(timeout=60_000)
        latencies, before, started = [], cpu_seconds(server.pid), time.monotonic()
        for index in range(count):
            next_at = started + index * RECORD_EVERY_S
            time.sleep(max(0.0, next_at - time.monotonic()))
            step, committed = trainer.commit_record(index), time.monotonic()
            shown_step(pages[index % 2], step, 120)
            latencies.append(time.monotonic() - committed)
        time.sleep(max(0.0, started + count * RECORD_EVERY_S - time.monotonic()))
        watched_s, watched_cpu = time.monotonic() - started, cpu_seconds(server.pid) - before
        second.close()
        pages[0].close()
        time.sleep(3)  # the closed sessions' last reruns end
        before, started = cpu_seconds(server.pid), time.monotonic()
        time.sleep(watched_s)
        idle_s, idle_cpu = time.monotonic() - started, cpu_seconds(server.pid) - before
        trainer.stop.set()
    return {
        "load_average": load_average(),
        "latency_s": latencies,
        "watched": {"seconds": watched_s, "cpu_s": watched_cpu},
        "unwatched": {"seconds": idle_s, "cpu_s": idle_cpu},
        "steps": trainer.step,
    }


def render(result: dict) -> str:
    lat = result["latency_s"]
    watched = 100 * result["watched"]["cpu_s"] / result["watched"]["seconds"]
    unwatched = 100 * result["unwatched"]["cpu_s"] / result["unwatched"]["seconds"]
    return "\n".join(
        [
            f"record committed → shown on Diagnose: median {median(lat):.2f} s, max {max(lat):.2f} s over {len(lat)} probe records (target ≤ 5 s)",
            f"server CPU, two sessions watching the training run: {watched:.1f} % of a core over {result['watched']['seconds']:.0f} s",
            f"server CPU, the same run training, no page open:   {unwatched:.1f} % of a core over {result['unwatched']['seconds']:.0f} s",
            f"polling costs: {watched - unwatched:.1f} % of a core for two sessions (target < 5 %)",
            f"load average at the end (1, 5, 15 min; {os.cpu_count()} cores): {', '.join(f'{v:g}' for v in result['load_average'])}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=8, help=f"probe records committed, one every {RECORD_EVERY_S:g} s (default 8)")
    parser.add_argument("--docs", action="store_true", help="also write the figures into docs/performance.md (between its markers)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bnviz-live-") as home:
        text = render(measure(Path(home), args.records))
    print(text)
    if args.docs:
        print(f"wrote {write_generated('performance.md', 'bench.live', fenced(text))}")


if __name__ == "__main__":
    main()
