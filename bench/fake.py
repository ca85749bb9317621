"""Synthetic stored runs, written straight into a store without training (no TensorFlow).

The records have the shapes a real run of the same config would store (BN layers and channels
from `bnviz.shapes`, the probe schedule from `bnviz.stats.probe_steps`, `bins` histogram bins) and
plausible values: moving statistics that converge from 0/1 towards the population ones by mᵗ,
so the diagnosis and the figures take their usual paths.
"""

from __future__ import annotations

import math
import os

import numpy as np

from bnviz.config import RunConfig
from bnviz.records import ProbeLayer, ProbeRecord
from bnviz.shapes import layer_table
from bnviz.stats import probe_steps
from bnviz.store import Evaluation, Store


def bn_channels(config: RunConfig) -> list[tuple[str, int]]:
    """(layer name, channels) of every BN layer the config's model has."""
    if config.arch.norm != "batch":
        return []
    return [(r.name, r.output_shape[-1]) for r in layer_table(config.arch, config.input_size) if r.kind == "BatchNormalization"]


def records(config: RunConfig, total_steps: int, steps_per_epoch: int, seed: int = 0) -> list[ProbeRecord]:
    rng = np.random.default_rng(seed)
    layers = bn_channels(config)
    m, bins = config.arch.bn.momentum, config.probe.bins
    pop = {name: (rng.uniform(20, 80, c).astype(np.float32), rng.uniform(200, 900, c).astype(np.float32)) for name, c in layers}
    out = []
    for step in probe_steps(total_steps, steps_per_epoch, config.probe.every):
        w = m**step
        lays = []
        for name, c in layers:
            pop_mean, pop_var = pop[name]
            jitter = rng.normal(1.0, 0.05, c).astype(np.float32)
            moving_mean, moving_var = (1 - w) * pop_mean, w + (1 - w) * pop_var
            edges = np.linspace(-3 - 10 * w, 3 + 10 * w, bins + 1, dtype=np.float32)
            lays.append(
                ProbeLayer(
                    name,
                    moving_mean,
                    moving_var,
                    pop_mean * jitter,
                    pop_var * jitter,
                    pop_mean,
                    pop_var,
                    edges,
                    rng.integers(0, 5000, bins, dtype=np.int32),
                    rng.integers(0, 5000, bins, dtype=np.int32),
                )
            )
        acc = 1 / 6 + (5 / 6) * (1 - math.exp(-step / 50))
        out.append(
            ProbeRecord(step, step // steps_per_epoch + (step % steps_per_epoch > 0), acc, acc * (1 - 0.6 * w), 1.0 - 0.8 * acc, 1.2 - 0.5 * acc, tuple(lays))
        )
    return out


def step_rows(total_steps: int, steps_per_epoch: int) -> list[tuple[int, int, float, float]]:
    """(step, epoch, loss, accuracy) rows: a falling loss and a rising accuracy."""
    return [(s, (s - 1) // steps_per_epoch + 1, 1.8 * math.exp(-s / 80) + 0.05, 1 - 0.8 * math.exp(-s / 60)) for s in range(1, total_steps + 1)]


def evaluation(config: RunConfig) -> dict:
    collapsed = config.arch.norm == "batch" and config.arch.bn.momentum > 0.95
    infer = {"train": 0.62, "val": 0.45, "test": 0.46} if collapsed else {"train": 0.99, "val": 0.97, "test": 0.97}
    batch = {"train": 0.99, "val": 0.96, "test": 0.96}
    accuracy = {**infer, **{f"{k}_batchstats": v for k, v in batch.items()}}
    return {"accuracy": accuracy, "loss": {k: 1 - v for k, v in accuracy.items()}}


def write_run(store: Store, config: RunConfig, total_steps: int, steps_per_epoch: int, sweep: str | None = None, status: str = "done", chunk: int = 200) -> str:
    """A run with `total_steps` steps of records, committed in chunks as a Recorder would."""
    run_id = store.create_run(config, status="running", sweep=sweep)
    info = {
        "params": {"total": 0, "trainable": 0, "non_trainable": 0},
        "layers": [],
        "data": {"name": "synthetic", "classes": ["a", "b", "c", "d", "e", "f"], "train": steps_per_epoch * config.batch_size},
    }
    store.start(run_id, os.getpid(), steps_per_epoch, total_steps, info)
    steps, probes = step_rows(total_steps, steps_per_epoch), records(config, total_steps, steps_per_epoch)
    for i in range(0, max(len(steps), len(probes)), chunk):
        store.add_records(run_id, steps[i : i + chunk], probes[i : i + chunk])
    if status == "done":
        store.add_evaluation(run_id, "final", Evaluation.from_dict(evaluation(config)))
        store.finish(run_id, "done")
    return run_id
