"""Typed records the store hands out: run and job status, a job's owner, an evaluation, progress.

Statuses are `StrEnum`s, so the strings stored in SQLite (and printed by the CLI) stay as they
were: `RunStatus.DONE == "done"`. Nothing here imports TensorFlow or the store.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

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
        return cls(_split_map(acc), _split_map(batch), _split_map(loss), _split_map(batch_loss),
                   float(acc.get("fit", math.nan)), data.get("batches"), data.get("samples"), data.get("calibrated_on"),
                   float(loss.get("fit", math.nan)))


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
