"""Executors: who runs the jobs queued in the store. Local worker processes (`bnviz.tf.worker`, the
embedded default) or a Ray cluster (`BNVIZ_RAY_ADDRESS` for the dashboard, `--ray` on the CLI),
whose driver (`bnviz.rayexec`) runs train jobs as Ray tasks and leaves the other kinds, which
read saved model files, to local workers. Both only start processes that drain the queue, so
the pages never know which one runs; this module imports neither TensorFlow nor Ray.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bnviz.config import ConfigError
from bnviz.records import JobStatus, RunStatus
from bnviz.store import Store

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RAY_ENV = "BNVIZ_RAY_ADDRESS"
RAY_KINDS = ("train",)  # what Ray runs; recalibrate and inspect read the store's model files, so they stay local
RAY_RETRY_SECONDS = 30.0  # a driver that could not reach the cluster is started again after this long


def ray_address(value: str | None = None) -> str | None:
    """The Ray address asked for (`value`, else BNVIZ_RAY_ADDRESS): `auto`, `host:port` or `ray://…`;
    None for local workers. ConfigError, one clear line, when Ray is asked for but not installed."""
    address = (os.environ.get(RAY_ENV, "") if value is None else value).strip()
    if not address:
        return None
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            f"The Ray executor was asked for ({RAY_ENV} or --ray = {address!r}) but Ray is not installed: "
            f"pip install -r requirements-ray.txt, or unset {RAY_ENV} to train in local worker processes."
        )
    return address


def spawn_module(store: Store, log_name: str, module_args: list[str]) -> subprocess.Popen:
    """`python -m MODULE_ARGS --home HOME` in its own session (it survives a dashboard restart),
    output to home/logs; the arguments are a list, never a shell string."""
    logs = store.home / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(logs / f"{log_name}-{time.strftime('%Y%m%d-%H%M%S')}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", *module_args, "--home", str(store.home)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class Executor(Protocol):
    """Starts processes for the queued jobs it takes; `pump` is cheap, idempotent and never blocks."""

    def pump(self, store: Store) -> None: ...

    def active(self) -> int: ...

    def describe(self) -> str: ...


@dataclass
class LocalExecutor:
    """Keeps up to `max_workers` worker processes draining the queue (jobs of `kinds`; all when empty)."""

    max_workers: int = 1
    kinds: tuple[str, ...] = ()
    _procs: list[subprocess.Popen] = field(default_factory=list, init=False, repr=False)

    def pump(self, store: Store) -> None:
        """Start workers for queued jobs while fewer than `max_workers` processes (this executor's,
        another server's, a `bnviz train`) are busy with jobs of its kinds."""
        self._procs = [p for p in self._procs if p.poll() is None]
        mine = {p.pid for p in self._procs}
        running = store.list_jobs(status=[JobStatus.RUNNING])
        busy = {r.pid for r in store.list_runs(status=[RunStatus.RUNNING])} | {j.owner.pid for j in running if j.owner}
        elsewhere = {j.owner.pid for j in running if j.owner and self.kinds and j.kind not in self.kinds}  # a Ray driver
        queued = len(store.list_jobs(status=[JobStatus.QUEUED], kinds=self.kinds or None))
        threads = max(1, (os.cpu_count() or 2) // self.max_workers)
        kinds = ["--kinds", ",".join(self.kinds)] if self.kinds else []
        for _ in range(min(queued, self.max_workers - len(self._procs) - len(busy - elsewhere - mine - {None}))):
            self._procs.append(spawn_module(store, "worker", ["bnviz.tf.worker", "--threads", str(threads), *kinds]))

    def active(self) -> int:
        return sum(1 for p in self._procs if p.poll() is None)

    def describe(self) -> str:
        return f"{self.max_workers} local worker{'s' * (self.max_workers != 1)} (BNVIZ_MAX_WORKERS)"


@dataclass
class RayExecutor:
    """Keeps one Ray driver process (`bnviz.rayexec`) alive while train jobs are queued; a driver
    that could not reach the cluster has said why on the queued jobs and is retried later."""

    address: str
    retry_seconds: float = RAY_RETRY_SECONDS
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _failed_at: float = field(default=-math.inf, init=False, repr=False)

    def pump(self, store: Store) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None and self._proc.returncode != 0:
            self._failed_at = time.monotonic()
        self._proc = None
        waiting = time.monotonic() - self._failed_at < self.retry_seconds
        if not waiting and store.list_jobs(status=[JobStatus.QUEUED], kinds=RAY_KINDS):
            self._proc = spawn_module(store, "ray-driver", ["bnviz.rayexec", "--address", self.address])

    def active(self) -> int:
        return int(self._proc is not None and self._proc.poll() is None)

    def describe(self) -> str:
        return f"Ray cluster at {self.address} (BNVIZ_RAY_ADDRESS)"


def make_executors(max_workers: int, address: str | None, kinds: tuple[str, ...]) -> list[Executor]:
    """Local workers for every kind; with a Ray address, Ray for training and local workers for the
    other `kinds`."""
    if not address:
        return [LocalExecutor(max_workers)]
    return [RayExecutor(address), LocalExecutor(max_workers, tuple(k for k in kinds if k not in RAY_KINDS))]
