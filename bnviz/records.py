"""Typed records the store hands out: a run and everything recorded about it (`Run`, `RunData`, a
probe record and its per-layer arrays), run and job status, a job's owner, an evaluation, progress.

Statuses are `StrEnum`s, so the strings stored in SQLite (and printed by the CLI) stay as they
were: `RunStatus.DONE == "done"`. Nothing here imports TensorFlow or the store.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bnviz.config import RunConfig

SPLITS = ("train", "val", "test")


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def active(self) -> bool:
        """Queued or running: the run may still change."""
        return self in ACTIVE

    @property
    def finished(self) -> bool:
        return self not in ACTIVE


JobStatus = RunStatus  # a job moves through the same states as a run
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
FINISHED = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)


# --- owners: who executes a run or job ------------------------------------------------------------
def process_start(pid: int) -> float | None:
    """When process `pid` started, in seconds after boot (from /proc; None where unknown); with the
    pid it names one process even after the pid is reused. Seconds after boot, not since the epoch:
    the kernel's boot time in /proc/stat may shift by a second between reads."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class Owner:
    """The process executing a run or job: host name, pid and the process's start time."""

    host: str
    pid: int
    started: float | None

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()))

    def alive(self) -> bool:
        """False only when this host can tell the process is gone (exited, a zombie, or its pid now
        names a process started at another time); an owner on another host counts as alive, an
        empty host (records older than hosts) as this one."""
        if self.host and self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        if _zombie(self.pid):
            return False
        now = process_start(self.pid)
        return self.started is None or now is None or abs(now - self.started) < 1e-6


# --- evaluations ----------------------------------------------------------------------------------
def _split_map(values: dict[str, float]) -> dict[str, float]:
    return {s: float(values[s]) for s in SPLITS if s in values}


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and loss on each split (train/val/test) in inference mode (moving statistics, what
    `evaluate` gives) and with batch statistics (BN in training mode), plus what `fit` reported.

    Stored as JSON {"accuracy": {"test": .., "test_batchstats": .., "fit": ..}, "loss": {..}}
    (`to_dict`); a PreciseBN evaluation also says over how many batches and samples it averaged.
    """

    accuracy: dict[str, float]
    accuracy_batchstats: dict[str, float]
    loss: dict[str, float]
    loss_batchstats: dict[str, float]
    fit_accuracy: float = math.nan
    batches: int | None = None
    samples: int | None = None
    calibrated_on: str | None = None  # the split PreciseBN averaged over (a recalibrated evaluation only)
    fit_loss: float = math.nan

    def accuracies(self) -> dict[str, float]:
        """Flat accuracy keys: 'test', 'test_batchstats', ..., and 'fit' when known."""
        flat = {**self.accuracy, **{f"{s}_batchstats": v for s, v in self.accuracy_batchstats.items()}}
        return flat | ({"fit": self.fit_accuracy} if math.isfinite(self.fit_accuracy) else {})

    def accuracy_of(self, key: str) -> float:
        """One accuracy by its flat key ('test', 'val_batchstats', 'fit'); NaN when missing."""
        return self.accuracies().get(key, math.nan)

    def losses(self) -> dict[str, float]:
        """Flat loss keys, as `accuracies`."""
        flat = {**self.loss, **{f"{s}_batchstats": v for s, v in self.loss_batchstats.items()}}
        return flat | ({"fit": self.fit_loss} if math.isfinite(self.fit_loss) else {})

    def to_dict(self) -> dict[str, Any]:
        extra = {k: v for k, v in (("batches", self.batches), ("samples", self.samples), ("calibrated_on", self.calibrated_on)) if v is not None}
        return {"accuracy": self.accuracies(), "loss": self.losses(), **extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        acc, loss = data.get("accuracy", {}), data.get("loss", {})
        batch = {s: acc[f"{s}_batchstats"] for s in SPLITS if f"{s}_batchstats" in acc}
        batch_loss = {s: loss[f"{s}_batchstats"] for s in SPLITS if f"{s}_batchstats" in loss}
        return cls(
            _split_map(acc),
            _split_map(batch),
            _split_map(loss),
            _split_map(batch_loss),
            float(acc.get("fit", math.nan)),
            data.get("batches"),
            data.get("samples"),
            data.get("calibrated_on"),
            float(loss.get("fit", math.nan)),
        )


# --- jobs and progress ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One background job: `kind` names its handler (bnviz.jobs.JOB_HANDLERS), `args` its JSON
    arguments, `run_id` the run it works on (a train job's run exists before the job)."""

    id: str
    kind: str
    args: dict[str, Any]
    run_id: str | None
    status: JobStatus
    progress: str
    error: str | None
    created: float
    started: float | None = None
    finished: float | None = None
    owner: Owner | None = None
    cancel_requested: bool = False


@dataclass(frozen=True)
class Mark:
    """How far a run has got, read without its records (Store.marks): a page that follows the run draws
    again when this moves."""

    status: RunStatus
    step: int = 0
    records: int = 0
    evaluations: int = 0
    total_steps: int = 0


@dataclass(frozen=True)
class Progress:
    """Where a run is: its latest step row, its step budget and the probe records stored out of
    those scheduled (the probe makes some once training ends)."""

    status: RunStatus
    step: int = 0
    epoch: int = 0
    loss: float | None = None
    accuracy: float | None = None
    total_steps: int = 0
    probe_records: int = 0
    probe_scheduled: int = 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


# A probe record's per-layer arrays, as the store keeps them: float32 statistics, then int32 histogram counts.
LAYER_ARRAYS = ("moving_mean", "moving_var", "batch_mean", "batch_var", "pop_mean", "pop_var", "hist_edges", "infer_mean", "infer_var", "iid_mean_sd")
HIST_ARRAYS = ("hist_train", "hist_infer")


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    preset: str
    config: RunConfig
    status: RunStatus
    created: float
    started: float | None
    finished: float | None
    heartbeat: float | None
    pid: int | None
    error: str | None
    steps_per_epoch: int | None
    total_steps: int | None
    cancel_requested: bool
    sweep: str | None
    parent: str | None
    model_path: str | None
    info: dict  # see the module docstring
    host: str | None = None
    pid_start: float | None = None

    @property
    def owner(self) -> Owner | None:
        """The process executing the run (None before one claims it)."""
        return Owner(self.host or "", self.pid, self.pid_start) if self.pid else None

    @property
    def trained_on(self) -> str:
        """Where the run trained: its Ray node (host and node id, `info["node"]`), else the host of
        the process that ran it; empty before one took it."""
        node = self.info.get("node")
        if node:
            return f"{node.get('host', '?')} (Ray node {str(node.get('node_id', '?'))[:8]})"
        return self.host or ""

    @property
    def momentum(self) -> float:
        return self.config.arch.bn.momentum

    @property
    def bn_momentum(self) -> float | None:
        """The BN momentum to show: None for a model without BatchNormalization, whose config still
        carries the default momentum that no layer uses."""
        return self.momentum if self.config.arch.has_moving_stats else None

    @property
    def label(self) -> str:
        """Short human label: the name, with the momentum when the model has BN and the name does not
        already say it. Not unique: `unique_labels` tells runs with the same label apart."""
        base, m = self.name or self.preset or "custom", f"m={self.momentum:g}"
        return base if not self.config.arch.has_moving_stats or m in base.replace(" ", "") else f"{base} {m}"


@dataclass(frozen=True)
class ProbeLayer:
    """One BN layer at one probe step (see the module docstring)."""

    layer: str
    moving_mean: np.ndarray
    moving_var: np.ndarray
    batch_mean: np.ndarray
    batch_var: np.ndarray
    pop_mean: np.ndarray
    pop_var: np.ndarray
    hist_edges: np.ndarray
    hist_train: np.ndarray
    hist_infer: np.ndarray
    infer_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # empty in stores written before they existed
    infer_var: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    iid_mean_sd: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass(frozen=True)
class ProbeRecord:
    step: int
    epoch: int
    acc_train_mode: float
    acc_inference: float
    loss_train_mode: float
    loss_inference: float
    layers: tuple[ProbeLayer, ...]


@dataclass(frozen=True)
class LayerTrace(ProbeLayer):
    """One BN layer over all probe steps: each array gains a leading probe axis, so arrays are
    shaped (probes, channels) or (probes, bins); `steps` names the probe steps."""

    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def measured(self) -> LayerTrace:
        """The records that measured the population, as one trace: every `population_every`-th and
        the last (see `ProbeConfig`); the records between carry NaN in the population fields. Only
        the last one measured it in inference mode too (`infer_mean`/`infer_var`)."""
        keep = ~np.isnan(self.pop_var).all(axis=1) if self.pop_var.ndim == 2 else np.ones(len(self.steps), bool)
        keep[-1:] = True  # the last record always measured it, even where a diverged run made it NaN
        if keep.all():
            return self
        arrays = {name: getattr(self, name)[keep] for name in (*LAYER_ARRAYS, *HIST_ARRAYS) if getattr(self, name).size}
        return dataclasses.replace(self, steps=self.steps[keep], **arrays)


@dataclass(frozen=True)
class RunData:
    """Everything stored about one run, as figures and the diagnosis consume it."""

    run: Run
    steps: pd.DataFrame  # step, epoch, loss, accuracy
    probes: pd.DataFrame  # step, epoch, acc_train_mode, acc_inference, loss_train_mode, loss_inference
    layers: dict[str, LayerTrace] = field(default_factory=dict)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)

    def bn_arguments(self, layer: str) -> dict:
        """A BN layer's recorded arguments (momentum, epsilon, …: `info["bn_layers"]`, written for
        models of any origin), else those of the run's config."""
        recorded = {row["name"]: row for row in self.run.info.get("bn_layers", [])}
        bn = self.run.config.arch.bn
        return recorded.get(layer) or (next(iter(recorded.values())) if recorded else {"momentum": bn.momentum, "epsilon": bn.epsilon})

    def epsilon(self, layer: str) -> float:
        """The ε that `layer` normalises with: it divides by √(variance + ε)."""
        return float(self.bn_arguments(layer)["epsilon"])

    @property
    def steps_trained(self) -> int:
        """Training steps the run has actually taken: its last step row, else its last probe record
        (records are only made for steps taken), else 0."""
        if len(self.steps):
            return int(self.steps["step"].max())
        return int(self.probes["step"].max()) if len(self.probes) else 0
