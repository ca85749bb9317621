"""Section `story`: `python -m bnviz story` (the four seed presets, one after another, in one
process) end to end, and where its time goes.

The section process runs the real command (`bnviz.cli.main(["story", ...])`) after wrapping, from
outside, the pieces `bnviz.tf.train.execute_run` calls, so nothing in bnviz changes for the
measurement: data loading, model build, `fit` (and inside it the probe's hooks, which include writing its
records, and the Recorder's per-step hooks), the evaluation in both BN modes and the model save. The parent process times the
whole process, Python start and TensorFlow import included, as a user running the command sees it.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time

from bench.util import quiet_tensorflow

PHASES = ("data", "build", "fit", "probe", "recorder", "evaluate", "save")  # probe includes writing its records


def _instrument(log: list[dict]) -> None:
    """Wrap what execute_run calls; each run appends one dict of seconds per phase to `log`."""
    import bnviz.tf.train as train

    def clocked(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                log[-1][name] = log[-1].get(name, 0.0) + time.perf_counter() - start

        return wrapper

    execute_run, compile_model = train.execute_run, train.compile_model

    def run(*args, **kwargs):
        log.append({})
        return execute_run(*args, **kwargs)

    def build(*args, **kwargs):
        model = clocked("build", compile_model)(*args, **kwargs)
        model.fit, model.save = clocked("fit", model.fit), clocked("save", model.save)
        return model

    class Probe(train.BNProbe):
        on_train_begin = clocked("probe", train.BNProbe.on_train_begin)
        on_train_batch_begin = clocked("probe", train.BNProbe.on_train_batch_begin)
        on_train_batch_end = clocked("probe", train.BNProbe.on_train_batch_end)
        on_train_end = clocked("probe", train.BNProbe.on_train_end)  # the records left for the end of training

    class Recorder(train.Recorder):
        on_train_batch_end = clocked("recorder", train.Recorder.on_train_batch_end)
        on_train_end = clocked("recorder", train.Recorder.on_train_end)

    train.execute_run, train.compile_model, train.BNProbe, train.Recorder = run, build, Probe, Recorder
    train.load_dataset = clocked("data", train.load_dataset)  # generating or reading the data (a cached data set costs 0)
    train.evaluate_run = clocked("evaluate", train.evaluate_run)  # both BN modes, PreciseBN and the shift


def run(quick: bool, reps: int) -> dict:
    quiet_tensorflow()
    start = time.perf_counter()
    import bnviz.tf.train  # noqa: F401  (TensorFlow and Keras, as the story command imports them)
    from bnviz.cli import main

    import_s = time.perf_counter() - start
    log: list[dict] = []
    _instrument(log)
    args = ["--epochs", "1", "--input-size", "16"] if quick else []
    results = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as home:
            out = io.StringIO()
            t0 = time.perf_counter()
            first = len(log)
            with contextlib.redirect_stdout(out):
                main(["story", "--home", home, "--json", *args])
            results.append((time.perf_counter() - t0, json.loads(out.getvalue()), log[first:]))
    wall, payload, phases_per_run = sorted(results, key=lambda r: r[0])[len(results) // 2]  # the median repetition
    runs = []
    for run, phases in zip(payload["runs"], phases_per_run, strict=True):
        phases = {k: phases.get(k, 0.0) for k in PHASES}
        phases["train_steps"] = phases["fit"] - phases["probe"] - phases["recorder"]
        acc = run["accuracy"]
        runs.append(
            {
                "preset": run["preset"],
                "steps": run["steps"],
                "seconds": run["seconds"],
                "phases_s": phases,
                "test": acc.get("test"),
                "test_batchstats": acc.get("test_batchstats"),
                "train": acc.get("train"),
                "seed_train_val_test": run["seed"],
            }
        )
    by = {r["preset"]: r for r in runs}
    return {
        "command": "python -m bnviz story" + (" " + " ".join(args) if args else ""),
        "import_s": import_s,
        "story_s": wall,
        "story_s_all": [r[0] for r in results],
        "runs": runs,
        "phase_totals_s": {k: sum(r["phases_s"][k] for r in runs) for k in (*PHASES, "train_steps")},
        "collapse": {"bn_test": by["bn"]["test"], "bn_test_batchstats": by["bn"]["test_batchstats"], "final_test": by["final"]["test"]},
        "target_s": 60,
    }
