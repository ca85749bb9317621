"""A worker process: claims queued jobs of any kind from the store one at a time and runs each
with the handler `bnviz.jobs.JOB_HANDLERS` names for its kind.

Started by `bnviz.jobs.JobManager` as `python -m bnviz.tf.worker --home DIR`; it exits when the
queue is empty, or after a job that brought it to its `WorkerLimits` (a job count, a resident
memory ceiling), since Keras/TensorFlow keep memory from every run; the launcher then starts a
fresh worker for the rest. A worker whose launcher is gone (the dashboard stopped) starts its own
successor instead, so the queue still drains with nobody pumping. It writes only to the
store, so the dashboard process never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from bnviz.executors import LAUNCHER_ENV, WorkerLimits, spawn_module
from bnviz.jobs import JobCancelled, JobFailed, load_handler, resident_mb
from bnviz.records import ACTIVE, Job, JobStatus, RunStatus
from bnviz.store import Store


def _configure_threads(threads: int) -> None:
    if threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))


def run_job(store: Store, job: Job) -> JobStatus:
    """Run one claimed job to its end and record how it ended; a failing handler (or one that
    cannot be imported) fails its job with a one-line message, the traceback goes to the log."""
    try:
        load_handler(job.kind)(store, job, lambda text: store.set_job_progress(job.id, text))
    except JobCancelled as exc:
        store.finish_job(job.id, JobStatus.CANCELLED, str(exc) or None)
        return JobStatus.CANCELLED
    except Exception as exc:  # a bad job must not take the queue down with it
        traceback.print_exc()
        error = str(exc) if isinstance(exc, JobFailed) else f"{type(exc).__name__}: {exc}"
        store.finish_job(job.id, JobStatus.FAILED, error.splitlines()[0] if error else type(exc).__name__)
        if job.kind == "train" and job.run_id and store.get_run(job.run_id).status in ACTIVE:
            store.finish(job.run_id, RunStatus.FAILED, error=error)
        return JobStatus.FAILED
    store.finish_job(job.id, JobStatus.DONE)
    return JobStatus.DONE


def drain_queue(home: str, threads: int = 0, kinds: tuple[str, ...] = (), limits: WorkerLimits | None = None) -> int:
    """Run queued jobs (of `kinds`, all when empty) until none is left or, after a job, `limits`
    are reached (which it logs); return how many this worker ran."""
    limits = limits or WorkerLimits()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _configure_threads(threads)
    store, ran = Store(home), 0
    while (job := store.claim_job(kinds=kinds)) is not None:
        ran += 1
        run_job(store, job)
        rss = resident_mb()
        if ran >= limits.max_jobs or rss > limits.max_rss_mb:
            limit = f"the limit of {limits.max_jobs}" if ran >= limits.max_jobs else f"above {limits.max_rss_mb:g} MB"
            print(f"bnviz worker {os.getpid()}: {ran} jobs, {rss:.0f} MB resident ({limit}); a fresh worker takes the rest", file=sys.stderr, flush=True)
            break
    return ran


def main() -> None:
    defaults = WorkerLimits.from_env()
    parser = argparse.ArgumentParser(prog="python -m bnviz.tf.worker", description=__doc__)
    parser.add_argument("--home", required=True)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    parser.add_argument("--kinds", default="", help="comma-separated job kinds to take (default: every kind)")
    parser.add_argument("--max-jobs", type=int, default=defaults.max_jobs, help="exit after this many jobs (BNVIZ_WORKER_MAX_JOBS)")
    parser.add_argument("--max-rss-mb", type=float, default=defaults.max_rss_mb, help="exit after a job above this resident memory (BNVIZ_WORKER_MAX_RSS_MB)")
    args = parser.parse_args()
    launcher = int(os.environ.get(LAUNCHER_ENV) or os.getppid())  # set by spawn_module: the parent may be gone already
    kinds, limits, store = tuple(filter(None, args.kinds.split(","))), WorkerLimits(args.max_jobs, args.max_rss_mb), Store(args.home)
    drain_queue(args.home, args.threads, kinds, limits)
    if os.getppid() != launcher and store.list_jobs(status=[JobStatus.QUEUED], kinds=kinds or None):  # orphaned: nobody else would start one
        spawn_module(store, "worker", ["bnviz.tf.worker", "--threads", str(args.threads), "--kinds", args.kinds, *limits.args()])


if __name__ == "__main__":
    main()
