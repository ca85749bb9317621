"""Executors: who runs the jobs queued in the store. Local worker processes (`bnviz.tf.worker`, the
embedded default) or a Ray cluster (`BNVIZ_RAY_ADDRESS` for the dashboard, `--ray` on the CLI),
whose driver (`bnviz.rayexec`) runs train jobs as Ray tasks and leaves the other kinds, which
read saved model files, to local workers. Both only start processes that drain the queue, so
the pages never know which one runs; this module imports neither TensorFlow nor Ray.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import ipaddress
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
LAUNCHER_ENV = "BNVIZ_LAUNCHER_PID"  # the process that started a worker: while it is the worker's parent, it starts the next one
RAY_AUTH = "RAY_AUTH_MODE"  # Ray's own switch; "token" on every node and driver turns token authentication on
RAY_MIN_VERSION = (2, 52)  # the first Ray with token authentication


def ray_address(value: str | None = None) -> str | None:
    """The Ray address asked for (`value`, else BNVIZ_RAY_ADDRESS): `auto`, `host:port` or `ray://…`;
    None for local workers. ConfigError, one clear line, when Ray is asked for but not installed, too
    old for token authentication, or beyond loopback without it (`check_ray_auth`)."""
    address = (os.environ.get(RAY_ENV, "") if value is None else value).strip()
    if not address:
        return None
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            f"The Ray executor was asked for ({RAY_ENV} or --ray = {address!r}) but Ray is not installed: "
            f"pip install -r requirements-ray.txt, or unset {RAY_ENV} to train in local worker processes."
        )
    version = importlib.metadata.version("ray")
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < RAY_MIN_VERSION:
        raise ConfigError(f"Ray {version} has no token authentication (it needs 2.52 or later): pip install -r requirements-ray.txt.")
    check_ray_auth(address)
    return address


def is_loopback(address: str) -> bool:
    """Is the head at `address` on this machine's loopback (127.0.0.0/8, ::1, localhost)? `auto` is
    not: it finds whatever cluster this machine belongs to, whose head may listen on the network."""
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_ray_auth(address: str, env: dict[str, str] | None = None) -> None:
    """Refuse a cluster beyond loopback unless this process runs with Ray token authentication
    (RAY_AUTH_MODE=token): without it anyone who reaches the head's ports runs code there, and the
    head holds the store. The message leaves the address out, since the dashboard shows it to everyone."""
    mode = (os.environ if env is None else env).get(RAY_AUTH, "").strip().lower()
    if mode != "token" and not is_loopback(address):
        raise ConfigError(
            f"The Ray cluster in {RAY_ENV} or --ray is not on 127.0.0.1 and {RAY_AUTH} is {mode or 'unset'} here, "
            f"so anyone who reaches it could run code on it: start every node and bnviz with {RAY_AUTH}=token "
            "(ray get-auth-token --generate writes the token to ~/.ray/auth_token; copy it to each machine)."
        )


def _positive(env: dict[str, str], key: str, kind: type, default: float) -> float:
    """`env[key]` as a positive `kind` (`default` when unset); ConfigError, one line, otherwise."""
    raw = env.get(key, "").strip()
    try:
        value = kind(raw) if raw else default
    except ValueError:
        value = 0
    if not value > 0:  # NaN too
        raise ConfigError(f"{key} must be a positive {'whole ' * (kind is int)}number. Received: {key}={raw!r}; unset it for the default, {default:g}.")
    return value


@dataclass(frozen=True)
class WorkerLimits:
    """When a local worker stops taking jobs and exits, so that the launcher starts a fresh one for
    the rest of the queue: Keras/TensorFlow keep ~16 MB per run in a long-lived process (744 → 828 MB
    over 5 runs), so a worker that drained a long queue alone would grow without bound."""

    max_jobs: int = 20  # BNVIZ_WORKER_MAX_JOBS: 20 × ~16 MB ≈ 320 MB over a fresh worker, against one TF import (~4 s) per 20 runs
    max_rss_mb: float = 2048.0  # BNVIZ_WORKER_MAX_RSS_MB: resident memory checked after each job; a fresh worker with a tiny run is ~750 MB

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerLimits:
        """The limits from BNVIZ_WORKER_MAX_JOBS and BNVIZ_WORKER_MAX_RSS_MB, defaults where unset."""
        env = os.environ if env is None else env
        return cls(_positive(env, "BNVIZ_WORKER_MAX_JOBS", int, cls.max_jobs), _positive(env, "BNVIZ_WORKER_MAX_RSS_MB", float, cls.max_rss_mb))

    def args(self) -> list[str]:
        """The worker's command-line flags for these limits."""
        return ["--max-jobs", str(self.max_jobs), "--max-rss-mb", f"{self.max_rss_mb:g}"]


def spawn_module(store: Store, log_name: str, module_args: list[str]) -> subprocess.Popen:
    """`python -m MODULE_ARGS --home HOME` in its own session (it survives a dashboard restart),
    output to home/logs, this process's pid in LAUNCHER_ENV; the arguments are a list, never a shell string."""
    logs = store.home / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])), LAUNCHER_ENV: str(os.getpid())}
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
    """Keeps up to `max_workers` worker processes draining the queue (jobs of `kinds`; all when empty);
    a worker that reached its `limits` exits, and the next pump starts a fresh one for the rest."""

    max_workers: int = 1
    kinds: tuple[str, ...] = ()
    limits: WorkerLimits = field(default_factory=WorkerLimits.from_env)
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
            self._procs.append(spawn_module(store, "worker", ["bnviz.tf.worker", "--threads", str(threads), *kinds, *self.limits.args()]))

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
        """That a cluster is in use and its driver's state, never its address: the sidebar shows
        this to every viewer."""
        if self.active():
            state = "driver running"
        elif time.monotonic() - self._failed_at < self.retry_seconds:
            state = f"unreachable, retried every {self.retry_seconds:.0f} s"
        else:
            state = "idle"
        return f"a Ray cluster (BNVIZ_RAY_ADDRESS), {state}"


def make_executors(max_workers: int, address: str | None, kinds: tuple[str, ...]) -> list[Executor]:
    """Local workers for every kind; with a Ray address, Ray for training and local workers for the
    other `kinds`."""
    if not address:
        return [LocalExecutor(max_workers)]
    return [RayExecutor(address), LocalExecutor(max_workers, tuple(k for k in kinds if k not in RAY_KINDS))]
