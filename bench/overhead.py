"""Section `overhead`: what the probe costs per training step, against plain `fit` and TensorBoard.

Every variant trains the same model (the `bn` preset unless a sweep changes the blocks) from the
same seed on the same data for the same number of steps. How each fit is timed, explicitly:

- the model is built and compiled, then `fit` runs once on one full and one partial batch (the
  shapes of the timed fit), which traces Keras's train function; the weights are then reset;
- two quantities are timed in the second `fit` call: `train_s`, from the call until training ends
  (the first `on_train_end` hook: every step and every hook inside the loop, the probe's snapshots
  and the records it makes within its budget), and `fit_s`, the whole call, which adds the
  probe's records left for the end of training: the time until the last record is stored;
- `setup_s` is the part before the first step (data adapter, every `on_train_begin`: for the
  probe, its step-0 snapshot; for the synchronous variants also the tap model, its tracing and the
  step-0 record); the "after setup" ratio leaves it out.

"probed" is the default probe (records paced evenly over the steps inside the loop, or sooner
within 3 % of training time; the last step's after it); "probed, all at their step" makes every
record at its step (budget 100); "probed, all after training" defers every one (budget 0);
"population at every record (before)" measures the population sample at every record, as bnviz did
before `population_every` (default 4: every 4th record and the last).

One untimed fit runs first, so no variant pays the process's one-time costs. Ratios are computed
per round (each variant over plain in the same round) and the median over rounds is reported;
rounds rotate the order of the variants. Beside wall time, the process's CPU time during training (all its
threads) is compared too: it is less sensitive to other work on the machine.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.legacy import population_moments_numpy
from bench.util import ROOT, median, quiet_tensorflow, ratios, rotations, spread, stopwatch
from bnviz.stats import measures_population

BLOCK_FILTERS = (16, 32, 16, 16, 16)  # the bn preset's three blocks, then two more Conv16 blocks
BN_LAYER_COUNTS = (1, 3, 5)
PROBE_SIZES = ((32, 128), (64, 128), (64, 256), (128, 512))  # (probe_batch, population_samples)
INTERVALS = (5, 25, 0)  # 0: the geometric default
THREADS = ((0, 0), (2, 1), (1, 1), (2, 2))  # (intra, inter); 0 = TensorFlow's default; (2, 1) is the worker's


@dataclass
class Setup:
    data: object  # bnviz.data.Dataset
    config: object  # bnviz.config.RunConfig
    home: Path

    @property
    def steps(self) -> int:
        return math.ceil(len(self.data.x_train) / self.config.batch_size) * self.config.epochs


def make_setup(quick: bool, home: Path) -> Setup:
    from bnviz.data import load_dataset, synthetic
    from bnviz.presets import preset_config

    if quick:
        config = preset_config("bn", input_size=24, epochs=2)
        data = synthetic(24, config.seed, train_per_class=32, val_per_class=24, test_per_class=8)
    else:
        config = preset_config("bn")  # 64 px, 3 epochs of batch 32 on the embedded 1200 images: 114 steps
        data = load_dataset(config.dataset, config.input_size, config.seed)
    return Setup(data, config, home)


def _blocks(n: int):
    from bnviz.config import ConvBlock

    return tuple(ConvBlock(f, pool_stride=1 if i == 1 else None) for i, f in enumerate(BLOCK_FILTERS[:n]))


def fit_once(setup: Setup, kind: str, config=None) -> dict:
    """One timed fit of `kind`: "plain", "recorded" (bnviz's step rows into the store, no probe),
    "probed" or "tensorboard"; see the module docstring."""
    import keras

    from bnviz.store import Store
    from bnviz.tf.models import compile_model
    from bnviz.tf.probe import BNProbe
    from bnviz.tf.train import Recorder, probe_inputs

    config = config or setup.config
    data, batch = setup.data, config.batch_size
    keras.utils.set_random_seed(config.seed)
    model = compile_model(config, data.channels, data.num_classes)
    initial = model.get_weights()
    n = len(data.x_train)
    warm = batch + n % batch if n % batch else batch
    model.fit(data.x_train[:warm], data.y_train[:warm], batch_size=batch, epochs=1, verbose=0)
    model.set_weights(initial)

    first, last, records, callbacks, probe = make_clock(), make_clock(), [], [], None
    run_id = None
    if kind in ("recorded", "probed"):
        store = Store(setup.home / "store")
        run_id = store.create_run(config, status="running")
        steps_per_epoch = math.ceil(n / batch)
        store.start(run_id, os.getpid(), steps_per_epoch, steps_per_epoch * config.epochs, {})
        recorder = Recorder(store, run_id)

        def emit(record) -> None:
            records.append(record.step)
            recorder.add_probe(record)

        probe = BNProbe(config.probe, *probe_inputs(data, config), batch, emit) if kind != "recorded" else None
        callbacks = [recorder, probe] if probe else [recorder]
    elif kind == "tensorboard":
        logdir = tempfile.mkdtemp(prefix="tb-", dir=setup.home)
        callbacks = [keras.callbacks.TensorBoard(log_dir=logdir, histogram_freq=1)]
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(data.x_train, data.y_train, batch_size=batch, epochs=config.epochs, verbose=0, shuffle=True, callbacks=[first, *callbacks, last])
    fit_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    if run_id:
        store.finish(run_id, "done")  # untimed: the Diagnose page then shows a finished run
    # the last callback's on_train_begin runs after every other one's (setup done); the first one's
    # on_train_end runs before the probe makes the records it left for the end (training done)
    return {
        "train_s": first.ended - start,
        "fit_s": fit_s,
        "cpu_s": first.ended_cpu - cpu,
        "cpu_total_s": cpu_s,
        "setup_s": last.began - start,
        "steps": last.steps,
        "records": len(records),
        "live_records": probe.live_records if probe else 0,
        "run_id": run_id,
    }


def make_clock():
    """A callback that stamps when training begins and ends (as seen from its place in the callback
    list) and counts the steps."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.began, self.ended, self.ended_cpu, self.steps = 0.0, 0.0, 0.0, 0

        def on_train_begin(self, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_train_end(self, logs=None):
            self.ended, self.ended_cpu = time.perf_counter(), time.process_time()

    return Clock()


def compare(setup: Setup, variants: dict[str, tuple[str, object]], reps: int) -> dict:
    """Alternating rounds over `variants` (name -> (kind, config)); "plain" must be one of them."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _, name in rotations(list(variants), reps):
        kind, config = variants[name]
        runs[name].append(fit_once(setup, kind, config))
    column = lambda key: {name: [r[key] for r in rs] for name, rs in runs.items()}  # noqa: E731
    train, fit, cpu = column("train_s"), column("fit_s"), column("cpu_s")
    steady = {name: [r["train_s"] - r["setup_s"] for r in rs] for name, rs in runs.items()}
    ratio = {key: ratios(samples, "plain") for key, samples in (("ratio", train), ("ratio_total", fit), ("ratio_after_setup", steady), ("ratio_cpu", cpu))}
    out = {}
    for name, rs in runs.items():
        steps = rs[0]["steps"]
        row = {
            "kind": variants[name][0],
            "steps": steps,
            "records": rs[0]["records"],
            "live_records": median([r["live_records"] for r in rs]),
            "train_s": spread(train[name]),
            "fit_s": spread(fit[name]),
            "setup_s": median([r["setup_s"] for r in rs]),
            "ms_per_step": 1000 * median(train[name]) / steps,
            "ms_per_step_total": 1000 * median(fit[name]) / steps,
            "cpu_ms_per_step": 1000 * median(cpu[name]) / steps,
        }
        if name != "plain":
            row |= {key: spread(values[name]) for key, values in ratio.items()}
            row["ratio_of_fastest"] = min(train[name]) / min(train["plain"])  # contention only ever slows a fit down
            if rs[0]["records"]:
                extra = [f - p for f, p in zip(fit[name], fit["plain"], strict=True)]
                row["ms_per_record"] = 1000 * median(extra) / rs[0]["records"]
        out[name] = row
    return out


# --- one probe record, piece by piece ---------------------------------------------------------
SNAPSHOT_PIECE = "snapshot (in the training loop)"
SETUP_PIECE = "once per run: the model's copy and both passes traced"
RECORD_PIECES = ("light record (no population)", "record with the training-mode population only", "whole record")  # as BNProbe makes them


def record_breakdown(setup: Setup, repeat: int) -> dict:
    """Wall and CPU milliseconds of each piece of one probe record (`RecordMaker.make`) on a briefly
    trained model, of the probe's once-per-run setup, and of alternatives for the expensive pieces.
    CPU time is the steadier figure on a machine whose wall-clock speed drifts."""
    import keras
    import numpy as np

    from bnviz.stats import shared_histograms
    from bnviz.store import Store
    from bnviz.tf.models import compile_model
    from bnviz.tf.probe import RecordMaker, Snapshot, population_moments
    from bnviz.tf.train import Recorder, probe_inputs

    config, data = setup.config, setup.data
    keras.utils.set_random_seed(config.seed)
    model = compile_model(config, data.channels, data.num_classes)
    model.fit(data.x_train, data.y_train, batch_size=config.batch_size, epochs=1, verbose=0)
    inputs = probe_inputs(data, config)
    maker = RecordMaker(model, config.probe, *inputs, config.batch_size)
    snapshot = Snapshot(1, 1, model.get_weights(), None)
    records = [maker.make(snapshot)]  # traces the forwards
    fwd, n = maker.forward, len(maker.bn_layers)
    x, pop = maker.x_probe, maker.population
    (_, train_out), (_, infer_out) = fwd.probe(x, training=True), fwd.probe(x, training=False)
    full_train, full_infer = fwd(x, training=True), fwd(x, training=False)
    store = Store(setup.home / "breakdown")
    run_id = store.create_run(config, status="running")
    recorder = Recorder(store, run_id)

    pieces = {
        SNAPSHOT_PIECE: lambda: Snapshot(1, 1, model.get_weights(), None),
        SETUP_PIECE: lambda: RecordMaker(model, config.probe, *inputs, config.batch_size).forward.warm_up(x[:1]),
        RECORD_PIECES[2]: lambda: maker.make(snapshot),
        RECORD_PIECES[1]: lambda: maker.make(snapshot, inference=False),
        RECORD_PIECES[0]: lambda: maker.make(snapshot, population=False),
        "probe batch forward, training mode": lambda: fwd.probe(x, training=True),
        "probe batch forward, inference mode": lambda: fwd.probe(x, training=False),
        "population moments, training mode": lambda: population_moments(fwd, pop, config.batch_size, n),
        "population moments, inference mode": lambda: population_moments(fwd, pop, config.batch_size, n, training=False),
        "histograms": lambda: [shared_histograms(train_out[i], infer_out[i], config.probe.bins) for i in range(n)],
        "store write (one record)": lambda: recorder.add_probe(records[-1]),
        # alternatives, measured in the same process
        "alt: probe batch forward, every output copied out (before)": lambda: fwd(x, training=True),
        "alt: population moments, numpy per batch": lambda: population_moments_numpy(fwd, pop, config.batch_size, n),
        "alt: histograms of the whole outputs, max_values 200,000": lambda: [
            shared_histograms(full_train[1 + n + i], full_infer[1 + n + i], config.probe.bins, 200_000) for i in range(n)
        ],
    }
    wall: dict[str, list[float]] = {name: [] for name in pieces}
    cpu: dict[str, list[float]] = {name: [] for name in pieces}
    for name in pieces:  # warm-up (traces)
        pieces[name]()
    for _, name in rotations(list(pieces), repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        pieces[name]()
        wall[name].append(time.perf_counter() - start)
        cpu[name].append(time.process_time() - start_cpu)
    sizes = {i: int(np.prod(full_train[1 + n + i].shape)) for i in range(n)}
    return {
        "ms": {name: 1000 * median(v) for name, v in wall.items()},
        "cpu_ms": {name: 1000 * median(v) for name, v in cpu.items()},
        "bn_layers": n,
        "probe_batch": len(x),
        "population_samples": len(pop),
        "bn_output_values": sizes,
    }


def probe_cpu_estimate(breakdown: dict, records: int, population_every: int) -> dict:
    """The probe's CPU milliseconds on a run of `records` records, summed from the pieces: the setup,
    a snapshot per record, and each record at its kind (`BNProbe`: the population at every
    `population_every`-th record and the last, in inference mode at the last only)."""
    measured = [i for i in range(records) if measures_population(i, i == records - 1, population_every)]
    kinds = [records - len(measured), len(measured) - 1, 1]  # light, training-mode population, the last
    cpu = breakdown["cpu_ms"]
    pieces = {SETUP_PIECE: cpu[SETUP_PIECE], "snapshots": records * cpu[SNAPSHOT_PIECE]}
    pieces |= {f"{count} × {name}": count * cpu[name] for count, name in zip(kinds, RECORD_PIECES, strict=True)}
    return {"pieces_ms": pieces, "total_ms": sum(pieces.values())}


# --- what a smaller population sample costs in accuracy ------------------------------------------
POPULATION_SIZES = (64, 128, 256)
REFERENCE_POPULATION = 1024


def population_error(setup: Setup) -> dict:
    """How far the population moments over the first n images of the probe's population sample sit
    from those over 1,024 training images, on the `bn` model after one epoch, in units of the
    reference's per-channel SD: |Δmean|/sd and |Δvar|/var, median and max over every channel of
    every BN layer; and the error bar a record carries, iid_mean_sd/√batches, in the same units."""
    import keras
    import numpy as np

    from bnviz.tf.models import batch_norm_layers, compile_model
    from bnviz.tf.probe import StatelessForward, batch_mean_spread, batch_moments, pooled_moments, tap_model

    config, data, batch = setup.config, setup.data, setup.config.batch_size
    keras.utils.set_random_seed(config.seed)
    model = compile_model(config, data.channels, data.num_classes)
    model.fit(data.x_train, data.y_train, batch_size=batch, epochs=1, verbose=0)
    n_layers, forward = len(batch_norm_layers(model)), StatelessForward(tap_model(model)[0])
    order = np.random.default_rng(config.seed + 1).permutation(len(data.x_train))
    reference = [pooled_moments(layer) for layer in batch_moments(forward, data.x_train[order[:REFERENCE_POPULATION]], batch, n_layers)]
    out = {}
    for size in (16, 32) if len(order) < 256 else POPULATION_SIZES:
        layers = batch_moments(forward, data.x_train[order[:size]], batch, n_layers)
        mean_err, var_err, bar = [], [], []
        for layer, (ref_mean, ref_var) in zip(layers, reference, strict=True):
            mean, var = pooled_moments(layer)
            sd = np.sqrt(np.maximum(ref_var, 1e-12))
            mean_err.append(np.abs(mean - ref_mean) / sd)
            var_err.append(np.abs(var / np.maximum(ref_var, 1e-12) - 1))
            bar.append(batch_mean_spread(layer) / np.sqrt(len(layer)) / sd)
        mean_err, var_err, bar = (np.concatenate(v) for v in (mean_err, var_err, bar))
        out[str(size)] = {
            "mean_err_sd": {"median": float(np.median(mean_err)), "max": float(mean_err.max())},
            "var_err_rel": {"median": float(np.median(var_err)), "max": float(var_err.max())},
            "error_bar_sd": {"median": float(np.nanmedian(bar)) if np.isfinite(bar).any() else None},
        }
    return {"reference_images": min(REFERENCE_POPULATION, len(order)), "sizes": out}


# --- TensorFlow thread settings: one process per setting ----------------------------------------
def threads_child(intra: int, inter: int, quick: bool) -> float:
    """Milliseconds per plain training step after warm-up, in this process's thread setting."""
    quiet_tensorflow()
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    with tempfile.TemporaryDirectory() as tmp:
        setup = make_setup(quick, Path(tmp))
        result = fit_once(setup, "plain")
    return 1000 * result["fit_s"] / result["steps"]


def threads_section(quick: bool, reps: int) -> dict:
    """Section `threads`: plain ms/step under each TensorFlow thread setting, one process each."""
    return {"threads": thread_settings(reps, quick)}


def thread_settings(reps: int, quick: bool) -> dict:
    samples: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in THREADS}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _, name in rotations(list(samples), reps):
        intra, inter = name.split("/")
        args = [sys.executable, "-m", "bench.overhead", "--threads-child", intra, inter] + (["--quick"] if quick else [])
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=True)
        samples[name].append(float(done.stdout.strip().splitlines()[-1]))
    return {name: {"ms_per_step": spread(v)} for name, v in samples.items()}


# --- the section ------------------------------------------------------------------------------
def run(quick: bool, reps: int, sweep_reps: int) -> dict:
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    from bnviz.config import ProbeConfig

    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as tmp:
        setup = make_setup(quick, Path(tmp))
        base = setup.config
        out: dict = {
            "model": f"{base.preset} preset, {base.input_size} px, batch {base.batch_size}, {base.epochs} epochs, {len(setup.data.x_train)} training images",
            "steps": setup.steps,
            "default_probe": {
                "every": base.probe.every,
                "probe_batch": base.probe.probe_images(base.batch_size),
                "population_samples": base.probe.population_images(base.batch_size),
                "population_every": base.probe.population_every,
                "bins": base.probe.bins,
                "budget": base.probe.budget,
            },
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "timing": "whole fit after a warm-up fit that traces the train function; see bench/overhead.py",
        }
        fit_once(setup, "plain")  # untimed: the process's first fit pays one-time costs (thread pools, kernel caches)
        with stopwatch(phases, "main"):
            in_loop = base.replace(probe=replace(base.probe, budget=100.0))
            deferred = base.replace(probe=replace(base.probe, budget=0.0))
            before = base.replace(probe=replace(base.probe, population_every=1))
            out["main"] = compare(
                setup,
                {
                    "plain": ("plain", base),
                    "recorder only": ("recorded", base),
                    "probed": ("probed", base),
                    "probed, all at their step": ("probed", in_loop),
                    "probed, all after training": ("probed", deferred),
                    "probed, population at every record (before)": ("probed", before),
                    "tensorboard": ("tensorboard", base),
                },
                reps,
            )
        with stopwatch(phases, "intervals"):
            variants = {"plain": ("plain", base)}
            variants |= {
                f"every={e}" if e else "geometric": ("probed", base.replace(probe=replace(base.probe, every=e))) for e in ((5,) if quick else INTERVALS)
            }
            out["intervals"] = compare(setup, variants, sweep_reps)
        with stopwatch(phases, "bn_layers"):
            rows = {}
            for n in (1,) if quick else BN_LAYER_COUNTS:
                config = base.replace(arch=replace(base.arch, blocks=_blocks(n)))
                rows[str(n)] = compare(setup, {"plain": ("plain", config), "probed": ("probed", config)}, sweep_reps)
            out["bn_layers"] = rows
        with stopwatch(phases, "probe_sizes"):
            variants = {"plain": ("plain", base)}
            variants |= {
                f"{b}/{p}": ("probed", base.replace(probe=ProbeConfig(probe_batch=b, population_samples=p)))
                for b, p in (PROBE_SIZES[:1] if quick else PROBE_SIZES)
            }
            out["probe_sizes"] = compare(setup, variants, sweep_reps)
        with stopwatch(phases, "record_breakdown"):
            out["record_breakdown"] = record_breakdown(setup, 3 if quick else 7)
            probed, plain = out["main"]["probed"], out["main"]["plain"]
            estimate = probe_cpu_estimate(out["record_breakdown"], probed["records"], base.probe.population_every)
            out["probe_cpu_estimate"] = estimate | {"plain_cpu_ms": plain["cpu_ms_per_step"] * plain["steps"]}
        with stopwatch(phases, "population_error"):
            out["population_error"] = population_error(setup)
    out["section_seconds"] = phases
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--threads-child":
        print(threads_child(int(sys.argv[2]), int(sys.argv[3]), "--quick" in sys.argv))
