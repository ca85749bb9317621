"""The functional claims of README.md and docs/, each asserted with a tolerance that a wrong implementation breaks
(timings are not asserted: `python -m bench` prints them). Tests marked `slow` train at the README's
own defaults (64 px, 3 epochs); the others check the same pattern on tiny images."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from bnviz.presets import preset_config
from bnviz.store import Store
from tests.conftest import TINY
from tests.test_cli import bnviz


def story(home: Path, *args: str) -> dict[str, dict]:
    """`bnviz story --json` → each preset's accuracies."""
    done = bnviz("story", "--json", *args, home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    return {run["preset"]: run["accuracy"] for run in json.loads(done.stdout)["runs"]}


def assert_collapse_and_fix(acc: dict[str, dict], collapse_below: float, fixed_above: float) -> None:
    """bn collapses in inference mode but not with batch statistics (not overfitting); final does not."""
    bn, final = acc["bn"], acc["final"]
    assert bn["test"] < collapse_below <= bn["test_batchstats"] and bn["test_batchstats"] - bn["test"] > 0.3, bn
    assert final["test"] >= fixed_above and abs(final["test"] - final["test_batchstats"]) <= 0.1, final


@pytest.mark.slow
def test_story_command_shows_the_collapse_and_the_fix_on_tiny_images(tmp_path):
    """1 epoch (38 steps) at 20 px: 0.99³⁸ = 0.68 of the initial values linger, so bn collapses harder."""
    acc = story(tmp_path, "--input-size", str(TINY), "--epochs", "1", "--raw-pixels")
    assert set(acc) == {"initial", "more-layers", "bn", "final", "more-layers raw", "bn raw"}  # the Story's chapter 5 too
    fed = {r.name: r.config.arch.rescale for r in Store(tmp_path).list_runs()}
    assert fed["bn (raw pixels)"] == fed["more-layers (raw pixels)"] == 1.0 and fed["bn"] == 1 / 255
    assert_collapse_and_fix(acc, collapse_below=0.4, fixed_above=0.6)


@pytest.mark.slow
def test_story_at_the_readme_defaults(tmp_path):
    """README table: bn 0.27 in inference mode vs 0.98 with batch statistics; final 0.99;
    initial and more-layers 0.97."""
    acc = story(tmp_path)
    assert_collapse_and_fix(acc, collapse_below=0.5, fixed_above=0.95)
    assert acc["initial"]["test"] >= 0.9 and acc["more-layers"]["test"] >= 0.9, acc


def norm1_population_variance(home: Path, *args: str) -> float:
    """Train bn on tiny images through the CLI; the median over channels of norm1's input variance."""
    done = bnviz("train", "--preset", "bn", "--input-size", str(TINY), "--epochs", "1", "--json", *args, home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    data = Store(home).load_run(json.loads(done.stdout)["run_id"])
    return float(np.median(data.layers["norm1"].pop_var[-1]))


@pytest.mark.slow
def test_raw_pixels_feed_the_first_bn_layer_variances_far_above_one(tmp_path):
    """docs/story.md: scaled to 0–1 the first BN input's variance is ≈ 0.001 (so the lingering initial
    variance of 1 squashes it); with `--raw-pixels` it varies far more than 1."""
    scaled = norm1_population_variance(tmp_path / "scaled")
    raw = norm1_population_variance(tmp_path / "raw", "--raw-pixels")
    assert scaled < 0.01 and raw > 10, (scaled, raw)
    run = Store(tmp_path / "raw").list_runs()[0]
    assert run.config.arch.rescale == 1.0 and Store(tmp_path / "scaled").list_runs()[0].config.arch.rescale == 1 / 255


@pytest.mark.slow
def test_default_worker_cap_is_one_and_a_surviving_worker_drains_the_queue_alone(tmp_path, monkeypatch):
    """docs/reliability.md: at most BNVIZ_MAX_WORKERS (default 1) workers train at once; a worker keeps draining
    the queue by itself once the server that started it is gone."""
    from bnviz.jobs import JobManager
    from pages.common import worker_count

    monkeypatch.delenv("BNVIZ_MAX_WORKERS", raising=False)
    store = Store(tmp_path)
    ids = [store.create_run(preset_config("bn", name=f"r{i}", input_size=TINY, epochs=1)) for i in range(3)]
    manager = JobManager(store, max_workers=worker_count())  # as the dashboard builds it
    manager.pump()
    assert manager.max_workers == 1 and len(manager.executors[0]._procs) == 1  # one worker for three queued runs
    (worker,) = manager.executors[0]._procs
    del manager  # the server is gone: nobody pumps any more
    deadline = time.monotonic() + 240
    while worker.poll() is None and time.monotonic() < deadline:
        assert len(store.list_runs(status=["running"])) <= 1
        time.sleep(0.2)
    runs = [store.get_run(i) for i in ids]
    assert [r.status for r in runs] == ["done"] * 3 and {r.pid for r in runs} == {worker.pid}, runs
