"""The Ray executor: `python -m bnviz.rayexec --home DIR --address ADDRESS`, started by
`bnviz.executors.RayExecutor` (the CLI's `--ray` calls `run_queued` in its own process).

The driver connects to the cluster, puts a `StoreWriter` actor on its own node (the store's
host) and runs every queued train job as a Ray task on whichever node has a free CPU. The task
trains through a `StoreProxy`, which forwards the Store methods training calls (get_run, start,
add_records, cancel_requested, add_evaluation, update_info, finish, set_job_progress, ...) to
the writer, so records reach the store live and nodes never need its file system; the model
file travels back as bytes. Built-in data sets are generated on the node; a data folder travels
zipped through Ray's object store, up to `BNVIZ_RAY_DATA_MB` (default 200 MB).

The driver owns its runs and jobs in the store (host, pid): if it dies, readers mark them
interrupted. A task whose worker or node dies ends its run interrupted, every record that
reached the store kept; Ray does not retry it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import ray
from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
from ray._raylet import GcsClient
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from bnviz.config import ConfigError
from bnviz.data import BUILTIN_DATASETS
from bnviz.executors import PROJECT_ROOT, RAY_AUTH, RAY_KINDS, RAY_RETRY_SECONDS
from bnviz.records import ACTIVE, Job, JobStatus, Run, RunStatus
from bnviz.store import Store

CONNECT_SECONDS = 60
DATA_MB = float(os.environ.get("BNVIZ_RAY_DATA_MB", "200"))
RUNTIME_ENV = {"py_modules": [str(PROJECT_ROOT / "bnviz")], "env_vars": {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}}


class DataRefused(ValueError):
    """A data folder that cannot travel to the nodes: the message says why and how to proceed."""


class DataTooLarge(DataRefused):
    """A data folder above the object-store cap."""


class ClusterRefused(ConfigError):
    """This process has no token, or one the cluster refuses: one line saying what to set."""


class ClusterUnreachable(ConfigError):
    """Nothing answers at the cluster's address: one line saying so (the driver retries)."""


class StoreWriter:
    """The one process that writes the store for Ray tasks: an actor on the driver's node."""

    def __init__(self, home: str, owner_pid: int):
        self.store, self.owner_pid = Store(home), owner_pid

    def call(self, name: str, *args: object, **kwargs: object) -> object:
        """Store method `name` (or this class's own), public ones only."""
        if name.startswith("_"):
            raise AttributeError(f"StoreWriter does not forward {name!r}")
        target = self if name in ("start", "save_model") else self.store
        return getattr(target, name)(*args, **kwargs)

    def start(self, run_id: str, pid: int, steps_per_epoch: int, total_steps: int, info: dict) -> None:
        """The driver, on this host, owns the run (readers can check it is alive); the node that
        trains it is in `info["node"]`."""
        self.store.start(run_id, self.owner_pid, steps_per_epoch, total_steps, info)

    def save_model(self, run_id: str, blob: bytes) -> str:
        path = self.store.model_path(run_id)
        path.write_bytes(blob)
        return str(path)


class StoreProxy:
    """A Store stand-in inside a Ray task: every public Store method is forwarded to the writer and
    waited for, in order; `start` adds the node, `model_path` is a scratch file on this node whose
    bytes `finish` sends back, and `get_run` points a folder data set at its unpacked copy here."""

    def __init__(self, writer: ray.actor.ActorHandle, node: dict, dataset: str | None = None):
        self.writer, self.node, self.dataset = writer, node, dataset
        self.scratch = Path(tempfile.mkdtemp(prefix="bnviz-ray-"))

    def __getattr__(self, name: str):
        if name.startswith("_") or not callable(getattr(Store, name, None)):
            raise AttributeError(f"StoreProxy has no {name!r}")
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)

    def _call(self, name: str, *args: object, **kwargs: object) -> object:
        return ray.get(self.writer.call.remote(name, *args, **kwargs))

    def get_run(self, run_id: str) -> Run:
        run = self._call("get_run", run_id)
        return dataclasses.replace(run, config=run.config.replace(dataset=self.dataset)) if self.dataset else run

    def start(self, run_id: str, pid: int, steps_per_epoch: int, total_steps: int, info: dict) -> None:
        self._call("start", run_id, pid, steps_per_epoch, total_steps, {**info, "node": self.node})

    def model_path(self, run_id: str) -> Path:
        return self.scratch / f"{run_id}.keras"

    @contextlib.contextmanager
    def saving(self, path: Path) -> Iterator[None]:
        """The model goes to this node's scratch folder, not the writer's home (a context manager
        cannot travel to the writer); a failed write fails the run, and the scratch folder goes."""
        yield

    def finish(self, run_id: str, status: str, error: str | None = None, model_path: str | None = None) -> None:
        if model_path:
            model_path = self._call("save_model", run_id, Path(model_path).read_bytes())
        self._call("finish", run_id, status, error, model_path)


def node_info() -> dict:
    """The node running this task: host name, IP, Ray node id and the worker's pid."""
    return {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def train_task(writer: ray.actor.ActorHandle, job: Job, data: bytes | None) -> str:
    """A Ray task: run one claimed train job on this node as a local worker would, through a proxy."""
    from bnviz.tf.worker import run_job

    proxy = StoreProxy(writer, node_info())
    try:
        if data is not None:  # unpacked under the folder's own name, which the run's data summary shows
            folder = proxy.scratch / Path(proxy.get_run(job.run_id).config.dataset).name
            zipfile.ZipFile(io.BytesIO(data)).extractall(folder)
            proxy.dataset = str(folder)
        return str(run_job(proxy, job))
    finally:
        shutil.rmtree(proxy.scratch, ignore_errors=True)


def pack_folder(folder: str, cap_mb: float = DATA_MB) -> bytes:
    """A data folder as zip bytes for the object store; DataTooLarge above `cap_mb`, DataRefused when
    a link in it leads outside it (packing would ship that file, whatever it is, to every node)."""
    root = Path(folder).resolve()
    entries = list(Path(folder).rglob("*"))
    outside = [p for p in entries if p.is_symlink() and not p.resolve().is_relative_to(root)]
    if outside:
        raise DataRefused(
            f"The data folder {folder} has {len(outside)} link{'s' * (len(outside) > 1)} leading outside it "
            f"({outside[0].relative_to(folder)} -> {outside[0].resolve()}); Ray runs carry only files inside the folder: "
            "copy those files in or remove the links."
        )
    files = [p for p in entries if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    if size > cap_mb * 2**20:
        raise DataTooLarge(
            f"The data folder {folder} holds {size / 2**20:.1f} MB; Ray runs carry at most {cap_mb:g} MB of data "
            "through the object store (BNVIZ_RAY_DATA_MB). Use a smaller folder or train locally (unset BNVIZ_RAY_ADDRESS)."
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:  # images are compressed already
        for path in files:
            zf.write(path, path.relative_to(folder))
    return buffer.getvalue()


def connect(address: str) -> None:
    """Join the cluster at `address` with bnviz shipped to every node (TensorFlow and the rest of
    requirements.txt must be installed there). A head that does not answer fails in seconds, here,
    instead of in ray.init, which waits minutes for a dead one; one that refuses this process's
    token fails in under a second with ClusterRefused (ray.init would wait 20 s, then say only
    "Failed to connect"); a hung join ends the process after CONNECT_SECONDS (SIGALRM's default
    action), and the executor retries."""
    if ray.is_initialized():
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise ClusterUnreachable(
                f"No Ray cluster answers at the address given ({exc.strerror or type(exc).__name__}): start one there "
                "(docs/scaling-out.md) or train locally without --ray / BNVIZ_RAY_ADDRESS."
            ) from None
    signal.alarm(CONNECT_SECONDS)
    try:
        if host and not address.startswith("ray://"):  # ray.init's own first steps (private API), without its 20 s wait
            ensure_token_if_auth_enabled(None, create_token_if_missing=False)  # a missing token, not GcsClient's abort
            GcsClient(address=address)  # a refused token
        ray.init(address=address, runtime_env=RUNTIME_ENV, logging_level="WARNING", log_to_driver=False)
    except ray.exceptions.AuthenticationError as exc:
        raise ClusterRefused(
            f"Ray token authentication failed ({exc.message.split('. ')[0].removeprefix('RPC error: ')}; "
            f"{RAY_AUTH} is {os.environ.get(RAY_AUTH) or 'unset'} here): run bnviz with {RAY_AUTH}=token and the head's token "
            "(its ~/.ray/auth_token, copied to this machine's ~/.ray/auth_token or named by RAY_AUTH_TOKEN_PATH)."
        ) from None
    finally:
        signal.alarm(0)


def say_waiting(store: Store, reason: BaseException | str) -> None:
    """Tell every queued train job why it waits (connecting, or why the cluster cannot be reached);
    the Runs page shows it to everyone, so the cluster's address stays out."""
    reason = (str(reason).strip().splitlines() or [type(reason).__name__])[0][:300]
    for job in store.list_jobs(kinds=RAY_KINDS, status=[JobStatus.QUEUED]):
        store.set_job_progress(job.id, f"waiting for the Ray cluster: {reason} (retried every {RAY_RETRY_SECONDS:.0f} s)")


@dataclasses.dataclass
class Driver:
    """Claims queued train jobs while the cluster has free CPUs, runs each as a task, settles the ends."""

    store: Store
    writer: ray.actor.ActorHandle = dataclasses.field(init=False)
    task: ray.remote_function.RemoteFunction = dataclasses.field(init=False)
    pending: dict[ray.ObjectRef, Job] = dataclasses.field(default_factory=dict)
    packed: dict[str, ray.ObjectRef] = dataclasses.field(default_factory=dict)  # data folder -> its zip in the object store

    def __post_init__(self) -> None:
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.writer = ray.remote(num_cpus=0)(StoreWriter).options(scheduling_strategy=here).remote(str(self.store.home), os.getpid())
        self.task = ray.remote(num_cpus=1, max_retries=0)(train_task)

    def run(self) -> int:
        """Run until no train job is queued or in flight; returns how many ended."""
        ended = 0
        while True:
            while len(self.pending) < max(1, int(ray.cluster_resources().get("CPU", 1))) and self.submit_next():
                pass
            if not self.pending:
                return ended
            done, _ = ray.wait(list(self.pending), num_returns=1, timeout=1.0)
            for ref in done:
                self.settle(ref, self.pending.pop(ref))
                ended += 1

    def submit_next(self) -> bool:
        """Claim the oldest queued train job and send it to the cluster; False when none is queued."""
        job = self.store.claim_job(kinds=RAY_KINDS)
        if job is None:
            return False
        dataset = self.store.get_run(job.run_id).config.dataset
        try:
            if dataset not in BUILTIN_DATASETS and dataset not in self.packed:
                self.packed[dataset] = ray.put(pack_folder(dataset))
        except (DataRefused, OSError) as exc:
            self.store.finish(job.run_id, RunStatus.FAILED, error=str(exc))
            self.store.finish_job(job.id, JobStatus.FAILED, str(exc))
            return True
        self.store.set_job_progress(job.id, "sent to the Ray cluster")
        self.pending[self.task.remote(self.writer, job, self.packed.get(dataset))] = job
        return True

    def settle(self, ref: ray.ObjectRef, job: Job) -> None:
        """A task ended: fine (it recorded its own end), or its worker, node or writer died."""
        try:
            ray.get(ref)
        except ray.exceptions.RayError as exc:
            interrupt(self.store, job, exc)


def interrupt(store: Store, job: Job, exc: BaseException) -> None:
    """Mark a job whose Ray task died, and its run, interrupted; every record that reached the store stays."""
    run = store.get_run(job.run_id)
    node = run.info.get("node", {})
    where = f"on {node.get('host', '?')} (Ray node {node.get('node_id', '?')[:8]})" if node else "before it started"
    cause = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160].rstrip(".")  # Ray's first sentence says what happened
    message = f"The Ray worker training it {where} stopped: {type(exc).__name__} {cause}. Every record that reached the store is kept."
    if run.status in ACTIVE:
        store.finish(job.run_id, RunStatus.INTERRUPTED, error=message)
    store.finish_job(job.id, JobStatus.INTERRUPTED, message)


def run_queued(store: Store, address: str) -> int:
    """Connect and run every queued train job on the cluster (the CLI's --ray); returns how many ended."""
    connect(address)
    return Driver(store).run()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bnviz.rayexec", description=__doc__)
    parser.add_argument("--home", required=True)
    parser.add_argument("--address", required=True, help="auto, host:port or ray://host:port")
    args = parser.parse_args()
    store = Store(args.home)
    started = time.monotonic()
    say_waiting(store, "connecting")
    try:
        connect(args.address)
    except Exception as exc:  # unreachable cluster: say so on the queued jobs and let the executor retry
        say_waiting(store, exc)
        print(f"Cannot reach the Ray cluster at {args.address} after {time.monotonic() - started:.0f} s: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"Ran {Driver(store).run()} train jobs on the Ray cluster at {args.address}", file=sys.stderr)


if __name__ == "__main__":
    main()
