"""Section `store`: bytes the SQLite store keeps per probe record and per run, and how long the
Diagnose page takes to load a long run. No training: synthetic records (bench.fake) with the
shapes a real run stores are written straight into fresh stores.

Sizes are the database file after a WAL checkpoint (page_count × page_size), so they include
SQLite's b-tree and index overhead; `payload` is the bytes of the values themselves.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
import time
from pathlib import Path

from bench import fake
from bench.util import median, stopwatch, timed

STEPS_PER_EPOCH = 38  # the default run: 1200 training images, batch 32


def _file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, size = db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA page_size").fetchone()[0]
    return pages * size


def _config(layers: int = 3, channels: int | None = None, every: int = 0, bins: int | None = None):
    from bnviz.config import ConvBlock
    from bnviz.presets import preset_config

    base = preset_config("bn")
    filters = (16, 32, 16, 16, 16)
    blocks = tuple(ConvBlock(channels or f, pool_stride=1 if i == 1 else None) for i, f in enumerate(filters[:layers]))
    probe = dataclasses.replace(base.probe, every=every, **({"bins": bins} if bins else {}))
    return base.replace(arch=dataclasses.replace(base.arch, blocks=blocks), probe=probe)


def _payload(record) -> int:
    """Bytes of the values of one probe record: 7 float32 arrays and 2 int32 histograms per layer."""
    from bnviz.records import HIST_ARRAYS, LAYER_ARRAYS

    per_layer = sum(getattr(lay, a).nbytes for lay in record.layers for a in (*LAYER_ARRAYS, *HIST_ARRAYS))
    return per_layer + 4 * 8 + 2 * 8


def bytes_per_record(home: Path, config, count: int) -> dict:
    """Write `count` probe records of `config` into a fresh store; bytes per record."""
    from bnviz.store import Store

    store = Store(home)
    empty = _file_bytes(store.path)
    run_id = store.create_run(config, status="running")
    records = fake.records(config, 100_000, STEPS_PER_EPOCH)[:count]
    for i in range(0, len(records), 50):
        store.add_records(run_id, (), records[i : i + 50])
    used = _file_bytes(store.path) - empty
    layers = fake.bn_channels(config)
    return {
        "layers": len(layers),
        "channels": [c for _, c in layers],
        "bins": config.probe.bins,
        "records": len(records),
        "bytes_per_record": used / len(records),
        "payload_per_record": _payload(records[0]),
    }


def bytes_per_run(home: Path, total_steps: int, every: int) -> dict:
    from bnviz.store import Store

    store = Store(home)
    empty = _file_bytes(store.path)
    config = _config(every=every)
    start = time.perf_counter()
    run_id = fake.write_run(store, config, total_steps, STEPS_PER_EPOCH)
    write_s = time.perf_counter() - start
    used = _file_bytes(store.path) - empty
    with sqlite3.connect(store.path) as db:
        probes = db.execute("SELECT COUNT(*) FROM probes WHERE run_id=?", (run_id,)).fetchone()[0]
    return {
        "steps": total_steps,
        "schedule": f"every={every}" if every else "geometric",
        "records": probes,
        "bytes": used,
        "write_s": write_s,
        "run_id": run_id,
        "home": str(home),
    }


def bytes_per_step_row(home: Path, total_steps: int) -> float:
    """The steps table alone: one row per training step (loss, accuracy)."""
    from bnviz.store import Store

    store = Store(home)
    empty = _file_bytes(store.path)
    run_id = store.create_run(_config(), status="running")
    store.add_records(run_id, fake.step_rows(total_steps, STEPS_PER_EPOCH), ())
    return (_file_bytes(store.path) - empty) / total_steps


def diagnose_load(home: Path, run_id: str, repeat: int) -> dict:
    """Wall seconds of what the Diagnose page computes for a run: Store.load_run, the findings and
    each figure it draws, plus turning the figures into JSON (what Streamlit sends to the browser)."""
    from bnviz import figures
    from bnviz.diagnose import diagnose
    from bnviz.store import Store

    store = Store(home)
    data = store.load_run(run_id)
    layer = next(iter(data.layers))
    steps = data.steps_trained
    builders = {
        "load_run": lambda: store.load_run(run_id),
        "findings": lambda: diagnose(data),
        "accuracy_frame": lambda: figures.accuracy_frame([data]),
        "activation_histograms": lambda: figures.activation_histograms(data, layer, -1),
        "drift_figure": lambda: figures.drift_figure(data, layer, None),
        "channel_gap_figure": lambda: figures.channel_gap_figure(data, layer),
        "ema_theory_figure": lambda: figures.ema_theory_figure(data.run.momentum, steps),
        "training_curves": lambda: figures.training_curves(data),
    }
    seconds = {name: median(timed(fn, repeat)) for name, fn in builders.items()}
    figs = [builders[n]() for n in ("activation_histograms", "drift_figure", "channel_gap_figure", "ema_theory_figure", "training_curves")]
    seconds["figures_to_json"] = median(timed(lambda: [f.to_json() for f in figs], repeat))
    json_bytes = sum(len(f.to_json()) for f in figs)
    return {"seconds": seconds, "total_s": sum(seconds.values()), "figure_json_bytes": json_bytes, "probe_records": len(data.probes)}


def diagnose_page(home: Path, run_id: str, repeat: int) -> dict:
    """The real page in AppTest: first render (cold cache: loads the run) and reruns (cached)."""
    import os

    from streamlit.testing.v1 import AppTest

    from bench.util import ROOT

    os.environ["BNVIZ_HOME"] = str(home)
    app = str(ROOT / "app.py")
    cold = []
    for _ in range(repeat):
        at = AppTest.from_file(app, default_timeout=120)
        at.query_params["run"] = run_id
        at.run()
        start = time.perf_counter()
        at.switch_page("pages/diagnose.py").run()
        cold.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    rerun = timed(lambda: at.run(), repeat)
    return {"first_render_s": median(cold), "rerun_s": median(rerun)}


def run(quick: bool, reps: int) -> dict:
    phases: dict[str, float] = {}
    long_steps = 1000 if quick else 10_000
    out: dict = {"steps_per_epoch": STEPS_PER_EPOCH, "long_run_steps": long_steps}
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as tmp:
        tmp = Path(tmp)
        with stopwatch(phases, "per_record"):
            count = 40 if quick else 400
            per_layers = [bytes_per_record(tmp / f"layers{n}", _config(layers=n), count) for n in range(1, 6)]
            per_channels = [bytes_per_record(tmp / f"ch{c}", _config(channels=c), count) for c in (8, 16, 64, 256)]
            per_bins = [bytes_per_record(tmp / f"bins{b}", _config(bins=b), count) for b in (20, 40, 100)]
            out["per_record"] = {"layers": per_layers, "channels": per_channels, "bins": per_bins}
            out["bytes_per_step_row"] = bytes_per_step_row(tmp / "steps", 2000 if quick else 20_000)
        with stopwatch(phases, "per_run"):
            runs = [bytes_per_run(tmp / f"run{t}-{e}", t, e) for t in sorted({114, 1000, long_steps}) for e in (0, 5)]
            out["per_run"] = [{k: v for k, v in r.items() if k not in ("run_id", "home")} for r in runs]
        with stopwatch(phases, "diagnose"):
            long = {r["schedule"]: r for r in runs if r["steps"] == long_steps}
            out["diagnose_load"] = {name: diagnose_load(Path(r["home"]), r["run_id"], reps) for name, r in long.items()}
            out["diagnose_page"] = {name: diagnose_page(Path(r["home"]), r["run_id"], max(1, reps // 2)) for name, r in long.items()}
    out["section_seconds"] = phases
    return out
