"""The job manager: queues jobs (training runs, recalibrations, ...) in the store and keeps up to
`max_workers` worker processes draining the queue, or a Ray driver for the train jobs when given
a Ray address (`bnviz.executors`). One per dashboard server; thread-safe; never imports
TensorFlow, Ray, nor the handlers: `JOB_HANDLERS` names them by dotted path, and only the
worker (`bnviz.tf.worker`) imports the one a job needs.

A handler is `handler(store, job, progress) -> None`: `progress(text)` stores a one-line progress
text; raising `JobCancelled` ends the job cancelled, any other exception ends it failed with the
exception's message (`JobFailed`'s message alone). Workers are started in their own session, so
they survive a server restart; every store reader marks jobs whose worker died as interrupted.
"""

from __future__ import annotations

import importlib
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bnviz.config import ConfigError, RunConfig, validate
from bnviz.executors import Executor, make_executors
from bnviz.records import SPLITS, Job, JobStatus, Run, RunStatus
from bnviz.shapes import activation_bytes
from bnviz.store import Store, StoreError, check_run_id
from bnviz.uploads import collect

UPLOADS_EVERY_S = 3600.0  # how often the background loop removes expired uploads (bnviz.uploads): hourly is plenty for a retention in days
MEMORY_FRACTION = 0.5  # refuse a run whose estimated training memory exceeds this share of free memory
JOB_HANDLERS = {
    "train": "bnviz.tf.train:train_job",
    "recalibrate": "bnviz.tf.recalibrate:recalibrate_job",
    "inspect": "bnviz.tf.inspect:inspect_job",
}
Handler = Callable[[Store, Job, Callable[[str], None]], None]


def recalibration_run(store: Store, run_id: str, batches: int, calibrate_on: str = "train", save: str | Path | None = None) -> Run:
    """The run a PreciseBN request names, once its arguments are checked (ConfigError) and the run
    has a finished model (StoreError): cheap checks, made before any TensorFlow loads."""
    if batches < 1:
        raise ConfigError(f"batches must be >= 1. Received: batches={batches}")
    if calibrate_on not in SPLITS:
        raise ConfigError(f"--calibrate-on takes one of {', '.join(SPLITS)}. Received: {calibrate_on!r}")
    if save is not None and Path(save).suffix != ".keras":
        raise ConfigError(f"The recalibrated model is saved as a .keras file. Received: --save {save}")
    run = store.get_run(run_id)
    if run.status != RunStatus.DONE or not run.model_path:
        raise StoreError(f"Run {run_id} has no finished model to recalibrate (status: {run.status}).")
    return run


class JobCancelled(Exception):
    """Raised by a handler that stopped on a cancel request: the job ends cancelled."""


class JobFailed(Exception):
    """Raised by a handler for an expected failure: the job ends failed with this message alone."""


def load_handler(kind: str) -> Handler:
    """Import the handler of job `kind`; JobFailed says why when there is none or it cannot load."""
    if kind not in JOB_HANDLERS:
        raise JobFailed(f"Unknown job kind {kind!r}; known kinds: {', '.join(JOB_HANDLERS)}.")
    module, _, name = JOB_HANDLERS[kind].partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise JobFailed(f"The {kind!r} job handler {JOB_HANDLERS[kind]} is not available in this installation ({exc}).") from None


def _proc_kib(path: str, key: str) -> int | None:
    """The `key:` line of a /proc file in KiB (None where it cannot be read: not Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes (a large number where it cannot be read)."""
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    return 1 << 40 if kib is None else kib * 1024


def resident_mb() -> float:
    """This process's resident memory now (VmRSS) in MiB; 0 where /proc is missing (not Linux),
    where only the job count bounds a worker."""
    return (_proc_kib("/proc/self/status", "VmRSS") or 0) / 1024


def check_memory(config: RunConfig, available: int | None = None) -> None:
    """Refuse up front a run whose activations would not fit in memory (ConfigError says why)."""
    needed = activation_bytes(config.arch, config.input_size, max(config.batch_size, config.probe.probe_images(config.batch_size)))
    budget = MEMORY_FRACTION * (available if available is not None else available_memory())
    if needed > budget:
        raise ConfigError(
            f"This model needs about {_size(needed)} for one batch of {config.batch_size} at "
            f"{config.input_size}×{config.input_size}; {_size(budget)} is available. "
            "Lower the input size or the batch size."
        )


def _size(n: float) -> str:
    """Bytes as GiB, or as MiB below 1 GiB, so that a refusal never reads "needs 0.0 GiB"."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass
class JobManager:
    """Queue runs and keep workers busy. `pump()` is cheap and idempotent: pages call it on every
    refresh and a daemon thread calls it every `poll_seconds`. `ray_address` (see
    `bnviz.executors.ray_address`) sends train jobs to a Ray cluster instead of local workers."""

    store: Store
    max_workers: int = 1  # 2 cores: one TensorFlow process already uses both
    poll_seconds: float = 1.0
    ray_address: str | None = None
    executors: list[Executor] = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _uploads_due: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.executors = make_executors(self.max_workers, self.ray_address, tuple(JOB_HANDLERS))

    def submit(self, config: RunConfig, sweep: str | None = None, parent: str | None = None) -> str:
        """Validate, check memory, queue the run with its train job; returns the new run id."""
        check_memory(validate(config))
        run_id = self.store.create_run(config, sweep=sweep, parent=parent)
        self.pump()
        return run_id

    def submit_job(self, kind: str, args: dict | None = None, run_id: str | None = None) -> str:
        """Queue a job of `kind` for the workers; returns its id."""
        if kind not in JOB_HANDLERS:
            raise ConfigError(f"Unknown job kind {kind!r}; known kinds: {', '.join(JOB_HANDLERS)}.")
        job_id = self.store.enqueue_job(kind, args, run_id)
        self.pump()
        return job_id

    def recalibrate(self, run_id: str, batches: int) -> str:
        """Queue PreciseBN for a finished run; the result becomes its "precisebn" evaluation."""
        return self.submit_job("recalibrate", {"batches": int(batches)}, check_run_id(run_id))

    def cancel(self, run_id: str) -> None:
        self.store.request_cancel(run_id)

    def pump(self) -> None:
        """Let every executor start processes for the queued jobs it takes; the store's readers mark
        orphaned runs and jobs interrupted."""
        with self._lock:
            for executor in self.executors:
                executor.pump(self.store)

    def describe(self) -> str:
        """Who runs the jobs, in words (the sidebar shows it)."""
        return self.executors[0].describe()

    def start_background(self) -> None:
        """Pump every `poll_seconds` from a daemon thread, so queued runs start with no page open. The
        thread holds the manager weakly and ends with it: a dropped manager stops starting workers."""
        if self._thread is None:
            self._thread = threading.Thread(target=_pump_while_alive, args=(weakref.ref(self),), name="bnviz-jobs", daemon=True)
            self._thread.start()

    def tick(self) -> None:
        """One turn of the background loop: start workers for queued jobs, collect expired uploads."""
        try:
            self.pump()
            self.collect_uploads_when_due()
        except Exception:  # a locked or missing store must not kill the loop; the next tick retries
            pass

    def collect_uploads_when_due(self) -> None:
        """Remove expired, unreferenced uploads (bnviz.uploads.collect) at most every UPLOADS_EVERY_S."""
        if time.monotonic() >= self._uploads_due:
            self._uploads_due = time.monotonic() + UPLOADS_EVERY_S
            collect(self.store)

    def active_workers(self) -> int:
        with self._lock:
            return sum(e.active() for e in self.executors)

    def wait_idle(self, timeout: float = 600.0) -> bool:
        """Block until no job is queued or running (for tests and scripts); True if reached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if not self.store.list_jobs(status=[JobStatus.QUEUED, JobStatus.RUNNING]):
                return True
            time.sleep(0.2)
        return False


def _pump_while_alive(manager_ref: weakref.ref[JobManager]) -> None:
    """The background loop of `JobManager.start_background`, for as long as the manager exists."""
    while (manager := manager_ref()) is not None:
        manager.tick()
        seconds = manager.poll_seconds
        del manager  # no strong reference while sleeping, so the manager can go
        time.sleep(seconds)
