"""Sections `command`, `long` and `scale`: the probe's cost where a user pays it.

- `command`: the whole `python -m bnviz train --preset bn` command (Python start, TensorFlow import,
  data, training, evaluation in both modes, the PreciseBN evidence, the model file) with the probe
  and with `--no-probe`, alternating, each in a fresh process. `--no-probe` leaves out the BN probe
  only (its snapshots, tap model and records); the recorder, evaluation and evidence run in both.
- `long`: the `bn` preset trained for 27 epochs (1,026 steps, 45 records), plain `fit` against the
  default probe, timed as `bench.overhead.fit_once` times them: measured, not projected.
- `scale`: the seed presets with BN at the seed's 224×224, batch 32, 3 epochs (114 steps) on the
  embedded data, each fit in its own process so its peak resident memory is its own; then the
  Diagnose page (AppTest) on the probed run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.util import ROOT, median, quiet_tensorflow, ratios, rotations, spread

SCALE_PRESETS = ("bn", "final")
SCALE_SIZE, QUICK_SCALE_SIZE = 224, 24
LONG_EPOCHS = 27  # 38 steps per epoch: 1,026 steps


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("BNVIZ_HOME", None)
    return env


# --- the whole command ------------------------------------------------------------------------
def command(quick: bool, reps: int) -> dict:
    """Wall and CPU seconds of `bnviz train` with and without the probe, alternating pairs."""
    extra = ["--epochs", "1", "--input-size", "16"] if quick else []
    samples: dict[str, list[float]] = {"no probe": [], "probed": []}
    cpu: dict[str, list[float]] = {"no probe": [], "probed": []}
    for _, name in rotations(list(samples), reps):
        with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as home:
            args = [sys.executable, "-m", "bnviz", "train", "--preset", "bn", "--home", home, "--json", *extra]
            args += ["--no-probe"] if name == "no probe" else []
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, check=True, timeout=600)
            samples[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {
        "command": "python -m bnviz train --preset bn" + (" " + " ".join(extra) if extra else ""),
        "wall_s": {n: spread(v) for n, v in samples.items()},
        "cpu_s": {n: spread(v) for n, v in cpu.items()},
        "ratio": spread(ratios(samples, "no probe")["probed"]),
        "ratio_cpu": spread(ratios(cpu, "no probe")["probed"]),
    }


# --- a long run -------------------------------------------------------------------------------
def long_run(quick: bool, reps: int) -> dict:
    """Plain against probed fits of 1,026 steps (`--quick`: 2 epochs of the tiny set)."""
    from bench.overhead import compare, fit_once, make_setup

    quiet_tensorflow()
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as tmp:
        setup = make_setup(quick, Path(tmp))
        config = setup.config if quick else setup.config.replace(epochs=LONG_EPOCHS)
        setup.config = config
        fit_once(setup, "plain")  # untimed: one-time costs
        rows = compare(setup, {"plain": ("plain", config), "probed": ("probed", config)}, reps)
    return {"steps": setup.steps, "rows": rows}


# --- the seed's scale -------------------------------------------------------------------------
def scale_child(preset: str, kind: str, size: int, home: str) -> dict:
    """One timed fit in this process (see `bench.overhead.fit_once`) plus its peak resident memory."""
    quiet_tensorflow()
    from bench.overhead import Setup, fit_once
    from bnviz.data import load_dataset, synthetic
    from bnviz.presets import preset_config

    config = preset_config(preset, input_size=size, epochs=3 if size == SCALE_SIZE else 1)
    data = (
        load_dataset(config.dataset, size, config.seed)
        if size == SCALE_SIZE
        else synthetic(size, config.seed, train_per_class=32, val_per_class=24, test_per_class=8)
    )
    result = fit_once(Setup(data, config, Path(home)), kind, config)
    return {**result, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "data_mb": data.x_train.nbytes / 2**20}


def scale(quick: bool, reps: int) -> dict:
    """Per preset, plain and probed fits alternating in fresh processes; the Diagnose page on the last probed run."""
    from bench.storage import diagnose_page

    size = QUICK_SCALE_SIZE if quick else SCALE_SIZE
    out: dict = {"input_size": size, "presets": {}}
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as home:
        for preset in SCALE_PRESETS[:1] if quick else SCALE_PRESETS:
            runs: dict[str, list[dict]] = {"plain": [], "probed": []}
            for _, kind in rotations(list(runs), reps):
                args = [sys.executable, "-m", "bench.endtoend", "--scale-child", preset, kind, str(size), home]
                done = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, check=True, timeout=900)
                runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
            out["presets"][preset] = _scale_row(runs)
        run_id = runs["probed"][-1]["run_id"]
        out["diagnose_page"] = diagnose_page(Path(home) / "store", run_id, 1 if quick else 3)
    return out


def _scale_row(runs: dict[str, list[dict]]) -> dict:
    plain, probed = runs["plain"], runs["probed"]
    train = {k: [r["train_s"] for r in v] for k, v in runs.items()}
    total = {k: [r["fit_s"] for r in v] for k, v in runs.items()}
    return {
        "steps": plain[0]["steps"],
        "records": probed[0]["records"],
        "live_records": median([r["live_records"] for r in probed]),
        "ms_per_step": {k: 1000 * median(v) / plain[0]["steps"] for k, v in train.items()},
        "ratio": spread(ratios(train, "plain")["probed"]),
        "ratio_total": spread(ratios(total, "plain")["probed"]),
        "peak_rss_mb": {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()},
        "data_mb": plain[0]["data_mb"],
    }


def run(name: str, quick: bool, reps: int) -> dict:
    reps = max(1, reps)
    start = time.perf_counter()
    result = {"command": command, "long": long_run, "scale": scale}[name](quick, reps)
    return {**result, "section_seconds": time.perf_counter() - start, "reps": reps}


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--scale-child":
        print(json.dumps(scale_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]), default=float))
