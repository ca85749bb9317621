"""`python -m bench.real_models`: what `bnviz.Probe` costs on the models practitioners bring —
`keras.applications` ResNet50 (53 BN layers) and MobileNetV2 (52), `weights=None` (offline) — and on
the seed's 3-layer model, at 224² and 96². Prints the Markdown table of docs/real-models.md
(`--docs` writes it there).

Per model, in one process: the model is built and compiled once, a warm-up `fit` traces Keras's train
function, then plain `fit` and probed `fit` (`bnviz.Probe` with train, validation and test data, as a
user passes them) alternate for `--reps` rounds from the same initial weights on the same images.
Timed: the whole `fit` call until the probe's last record is stored ("until the last record"), the
process's CPU time until then (all threads; steadier than wall time on a shared machine), and the
whole call (which adds the final evaluation in both modes and saving the model);
the peak resident memory during each fit above the process's before it; the store bytes per record.
Ratios are per round (probed over plain in the same round), then the median over rounds.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.docs import read_generated, write_generated
from bench.util import median, quiet_tensorflow, rss_bytes


@dataclass(frozen=True)
class Case:
    """One model at one size: `build(input_size, classes)` returns an uncompiled Keras model."""

    name: str
    build: Callable
    input_size: int
    steps: int
    batch_size: int = 16


def _resnet50(size: int, classes: int):
    import keras

    return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=classes)


def _mobilenetv2(size: int, classes: int):
    import keras

    return keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=classes)


def _tiny_mobilenetv2(size: int, classes: int):
    import keras

    return keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=classes, alpha=0.35)


def _seed_bn(size: int, classes: int):
    from bnviz.presets import preset_config
    from bnviz.tf.models import build_model

    return build_model(preset_config("bn").arch, size, 3, classes)


CASES = {
    "mobilenetv2-224": Case("MobileNetV2", _mobilenetv2, 224, 100),
    "resnet50-224": Case("ResNet50", _resnet50, 224, 50),
    "resnet50-224-long": Case("ResNet50", _resnet50, 224, 150),  # the records' cost spread over a run three times as long
    "seed-224": Case("seed model + BN (3 layers)", _seed_bn, 224, 50, 32),
    "seed-224-long": Case("seed model + BN (3 layers)", _seed_bn, 224, 150, 32),  # a third of one epoch of the seed's likely data
    "mobilenetv2-96": Case("MobileNetV2", _mobilenetv2, 96, 100),
    "resnet50-96": Case("ResNet50", _resnet50, 96, 100),
    "quick": Case("MobileNetV2 α 0.35", _tiny_mobilenetv2, 32, 8, 8),
}
DEFAULT_CASES = ["mobilenetv2-224", "resnet50-224", "seed-224"]


class PeakMemory:
    """The largest resident set of this process while the block runs, sampled every 50 ms, above the
    resident set when it began."""

    def __enter__(self) -> PeakMemory:
        self.base = self.peak = rss_bytes_self()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes_self())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes_self())

    @property
    def above_base(self) -> int:
        return self.peak - self.base


def rss_bytes_self() -> int:
    import os

    return rss_bytes(os.getpid())


def _last_record_clock(probe):
    """A callback placed after `probe`: it stamps the time each record reaches the store."""
    import keras

    class Stamp(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last = self.last_cpu = math.nan

        def on_train_begin(self, logs=None):
            add = probe.recorder.add_probe

            def stamped(record):
                add(record)
                self.last, self.last_cpu = time.perf_counter(), time.process_time()

            probe.recorder.add_probe = stamped
            if probe.bn_probe is not None:
                probe.bn_probe.emit = stamped

    return Stamp()


def measure(case: Case, reps: int, home: Path) -> dict:
    """Alternating plain and probed fits of `case` (see the module docstring)."""
    import keras

    import bnviz
    from bnviz.data import synthetic

    classes = 6
    per_class = math.ceil(case.steps * case.batch_size / classes)
    data = synthetic(case.input_size, seed=0, train_per_class=per_class, val_per_class=8, test_per_class=8)
    x, y = data.x_train[: case.steps * case.batch_size], data.y_train[: case.steps * case.batch_size]
    keras.utils.set_random_seed(0)
    model = case.build(case.input_size, classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    initial = model.get_weights()
    model.fit(x[: 2 * case.batch_size], y[: 2 * case.batch_size], batch_size=case.batch_size, epochs=1, verbose=0)
    rows: dict[str, list[dict]] = {"plain": [], "probed": []}
    for r in range(reps):
        for kind in ("plain", "probed") if r % 2 == 0 else ("probed", "plain"):
            model.set_weights(initial)
            rows[kind].append(_fit(model, x, y, data, case, home / f"{kind}-{r}", kind == "probed", bnviz))
    return _summary(case, model, rows)


def _fit(model, x, y, data, case: Case, home: Path, probed: bool, bnviz) -> dict:
    callbacks, probe, stamp = [], None, None
    if probed:
        probe = bnviz.Probe(
            name=f"{case.name} {case.input_size}",
            home=home,
            train_data=(x[:256], y[:256]),
            validation_data=(data.x_val, data.y_val),
            test_data=(data.x_test, data.y_test),
            batch_size=case.batch_size,
            display=False,
        )
        stamp = _last_record_clock(probe)
        callbacks = [probe, stamp]
    start, cpu = time.perf_counter(), time.process_time()
    with PeakMemory() as memory:
        model.fit(x, y, batch_size=case.batch_size, epochs=1, verbose=0, shuffle=True, callbacks=callbacks)
    whole, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    row = {"whole_s": whole, "until_last_s": whole, "cpu_s": cpu_s, "peak_mb": memory.above_base / 2**20}
    if probe is not None:
        row |= {"until_last_s": stamp.last - start, "cpu_s": stamp.last_cpu - cpu, "records": probe.bn_probe.made, "live": probe.bn_probe.live_records}
        row["store_kb_per_record"] = _store_bytes(home) / 1024 / max(row["records"], 1)
    return row


def _store_bytes(home: Path) -> int:
    """The store's database files (the saved model and samples are not records)."""
    return sum(p.stat().st_size for p in home.glob("runs.sqlite*"))


def _summary(case: Case, model, rows: dict[str, list[dict]]) -> dict:
    from bnviz.tf.models import batch_norm_layers

    def per_round(key: str) -> list[float]:
        return [p[key] / q[key] for p, q in zip(rows["probed"], rows["plain"], strict=True)]

    plain, probed = rows["plain"], rows["probed"]
    return {
        "model": case.name,
        "bn_layers": len(batch_norm_layers(model)),
        "input": case.input_size,
        "steps": case.steps,
        "batch": case.batch_size,
        "reps": len(plain),
        "plain_ms_per_step": 1000 * median([p["whole_s"] for p in plain]) / case.steps,
        "until_last": per_round("until_last_s"),
        "cpu": per_round("cpu_s"),
        "whole": [p["whole_s"] / q["whole_s"] for p, q in zip(probed, plain, strict=True)],
        "peak_mb_plain": median([p["peak_mb"] for p in plain]),
        "peak_mb_probed": median([p["peak_mb"] for p in probed]),
        "records": probed[-1]["records"],
        "live": min(p["live"] for p in probed),
        "store_kb_per_record": median([p["store_kb_per_record"] for p in probed]),
        "rows": rows,
    }


def inspect_at_scale(case: Case, images: int, home: Path) -> dict:
    """`bnviz inspect` of a saved `case` model (trained `case.steps` steps) on `images` images written
    as PNG files, then `bnviz recalibrate --save` (PreciseBN) and the repaired model re-evaluated: wall
    time and peak memory of each command, each in its own process, as a user runs them."""
    import keras
    import numpy as np

    from bnviz.data import synthetic
    from tests.test_own_models import save_images

    data = synthetic(case.input_size, seed=0, train_per_class=math.ceil(images / 6), val_per_class=8, test_per_class=8)
    x, y = data.x_train[:images], data.y_train[:images]
    keras.utils.set_random_seed(0)
    model = case.build(case.input_size, 6)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[: case.steps * case.batch_size], y[: case.steps * case.batch_size], batch_size=case.batch_size, epochs=1, verbose=0)
    model.save(home / "model.keras")
    folder = save_images(home / "images", np.clip(x, 0, 255), y)
    common = ["--home", str(home / "store"), "--json"]
    inspected, inspect_cost = _cli(["inspect", str(home / "model.keras"), "--data", str(folder), "--batch-size", str(case.batch_size), *common])
    repaired, recalibrate_cost = _cli(["recalibrate", inspected["run_id"], "--save", str(home / "fixed.keras"), *common])
    return {
        "model": case.name,
        "bn_layers": len(inspected["bn_layers"]),
        "input": case.input_size,
        "images": images,
        "inspect": inspect_cost,
        "recalibrate": recalibrate_cost,
        "verdict": inspected["findings"][0]["title"],
        "before": repaired["before"]["metrics"] if "metrics" in repaired["before"] else repaired["before"],
        "after": repaired["after"],
        "saved_mb": (home / "fixed.keras").stat().st_size / 2**20,
    }


def _cli(args: list[str]) -> tuple[dict, dict]:
    """Run `python -m bnviz ARGS` in a child process: its JSON answer, its wall seconds and peak
    resident memory (sampled every 50 ms)."""
    import json
    import os
    import subprocess
    import sys

    from bench.util import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start, peak = time.perf_counter(), 0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "bnviz", *args], stdout=out, stderr=err, text=True, env=env)
        while child.poll() is None:
            peak = max(peak, rss_bytes(child.pid))
            time.sleep(0.05)
        out.seek(0), err.seek(0)
        answer, problem = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"bnviz {args[0]} failed: {problem.strip()[-2000:]}")
    return json.loads(answer), {"s": time.perf_counter() - start, "peak_mb": peak / 2**20}


def table_row(s: dict) -> str:
    until, cpu, whole = median(s["until_last"]), median(s["cpu"]), median(s["whole"])
    return (
        f"| {s['model']} | {s['bn_layers']} | {s['input']}² | {s['steps']} × {s['batch']} | {s['plain_ms_per_step']:,.0f} | "
        f"**{until:.2f}×** ({min(s['until_last']):.2f}–{max(s['until_last']):.2f}) | {cpu:.2f}× | {whole:.2f}× | "
        f"{s['records']} ({s['live']} live) | {s['peak_mb_plain']:,.0f} → {s['peak_mb_probed']:,.0f} | {s['store_kb_per_record']:,.0f} | {s['reps']} |"
    )


HEADER = (
    "| model | BN layers | input | steps × batch | plain ms/step | × plain until the last record (range) | × plain, CPU until then | "
    "× plain, whole fit (+ evaluation, save) | records | peak MB during fit: plain → probed | store KB per record | rounds |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"default: {' '.join(DEFAULT_CASES)}; of {', '.join(sorted(CASES))}")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--inspect", type=int, metavar="IMAGES", default=0, help="instead: bnviz inspect + recalibrate of each saved model on IMAGES images")
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/real-models.md (between its markers)")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.cases) - set(CASES)):  # not argparse's choices: with nargs="*" they refuse the default list
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(sorted(CASES))}")
    args.cases = args.cases or DEFAULT_CASES
    quiet_tensorflow()
    if args.inspect:
        for name in args.cases:
            with tempfile.TemporaryDirectory(prefix="bnviz-real-") as home:
                print(inspect_at_scale(CASES[name], args.inspect, Path(home)), flush=True)
        return
    rows = []
    for name in args.cases:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bnviz-real-") as home:
            summary = measure(CASES[name], args.reps, Path(home))
        rows.append(table_row(summary))
        print(rows[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
        print({k: v for k, v in summary.items() if k != "rows"}, flush=True)
    print("\n".join([HEADER, *rows]))
    if args.docs:
        table = "\n".join([HEADER, *merged_rows(read_generated("real-models.md", "bench.real_models"), rows)])
        print(f"wrote {write_generated('real-models.md', 'bench.real_models', table)}")


def merged_rows(table: str, rows: list[str]) -> list[str]:
    """The rows of the documented `table` with `rows` in place of those of the same model, input and
    steps, and after them: the docs keep the cases not measured this time."""
    new = {_case(row): row for row in rows}
    kept = [row for row in table.splitlines()[2:] if row.startswith("|")]
    return [new.pop(_case(row), row) for row in kept] + list(new.values())


def _case(row: str) -> tuple[str, str, str]:
    """A table row's model, input and steps × batch."""
    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
    return cells[0], cells[2], cells[3]


if __name__ == "__main__":
    main()
