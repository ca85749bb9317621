"""A worker process: claims queued runs from the store one at a time and trains them.

Started by `bnviz.jobs.JobManager` as `python -m bnviz.worker --home DIR`; it exits when the
queue is empty. It writes only to the store, so the dashboard process never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import traceback


def _configure_threads(threads: int) -> None:
    if threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))


def drain_queue(home: str, threads: int = 0) -> int:
    """Train queued runs until none is left; return how many this worker ran."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _configure_threads(threads)
    from bnviz.store import Store
    from bnviz.train import execute_run

    store, ran = Store(home), 0
    while (run_id := store.claim_next(os.getpid())) is not None:
        ran += 1
        try:
            execute_run(store, run_id)
        except Exception as exc:  # a bad run must not take the queue down with it
            traceback.print_exc()
            store.finish(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
    return ran


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bnviz.worker", description=__doc__)
    parser.add_argument("--home", required=True)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    args = parser.parse_args()
    drain_queue(args.home, args.threads)


if __name__ == "__main__":
    main()
