"""PreciseBN: recompute every BN layer's moving mean/variance over N training batches with the
weights frozen, then evaluate again. No retraining; the run gains a "precisebn" evaluation.

As in fvcore's `update_bn_stats`, BN layers use batch statistics while the population moments are
gathered (so each layer sees the inputs it saw in training), every batch is weighted by its element
count, and the variance is the population one, E[x²] − E[x]² (biased, as Keras uses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from bnviz.config import OWN_PRESET, ConfigError
from bnviz.data import load_dataset
from bnviz.evidence import RECALIBRATION_BATCHES, recalibrate_model
from bnviz.jobs import JobFailed
from bnviz.models import batch_norm_layers, load_model_safely
from bnviz.own import SPLITS, atomic_write, evaluate_splits, load_samples, samples_path
from bnviz.records import Evaluation, Job, RunStatus
from bnviz.store import Run, Store, StoreError
from bnviz.train import evaluate_both_modes

DEFAULT_BATCHES = RECALIBRATION_BATCHES


def recalibrate(store: Store, run_id: str, batches: int = DEFAULT_BATCHES, progress: Callable[[str], None] = lambda text: None,
                save: str | Path | None = None) -> dict[str, Evaluation | None]:
    """Recalibrate a finished run's model; returns {"before": ..., "after": ...} evaluations. The
    recalibrated model goes beside the run's model, and to `save` (a .keras path) when given."""
    if batches < 1:
        raise ConfigError(f"batches must be >= 1. Received: batches={batches}")
    if save is not None and Path(save).suffix != ".keras":
        raise ConfigError(f"The recalibrated model is saved as a .keras file. Received: --save {save}")
    run = store.get_run(run_id)
    if run.status != RunStatus.DONE or not run.model_path:
        raise StoreError(f"Run {run_id} has no finished model to recalibrate (status: {run.status}).")
    config = run.config
    model = load_model_safely(run.model_path)
    if not batch_norm_layers(model):
        raise StoreError(f"Run {run_id}'s model has no BatchNormalization layer: nothing to recalibrate.")
    x_train, evaluate = _run_data(store, run)
    sample = x_train[np.random.default_rng(config.seed + 2).permutation(len(x_train))[: batches * config.batch_size]]
    progress(f"averaging BN statistics over {-(-len(sample) // config.batch_size)} training batches")
    recalibrate_model(model, sample, config.batch_size)
    progress("evaluating in both BN modes")
    after = dataclasses.replace(evaluate(model), batches=-(-len(sample) // config.batch_size), samples=len(sample))
    store.add_evaluation(run_id, "precisebn", after)
    for path in filter(None, (store.models_dir / f"{run_id}-precisebn.keras", save)):
        atomic_write(Path(path), model.save)
    return {"before": store.evaluations(run_id).get("final"), "after": after}


def _run_data(store: Store, run: Run) -> tuple[np.ndarray, Callable[[keras.Model], Evaluation]]:
    """The training images to recalibrate on and how to evaluate: a template run reloads its data
    set; a run of the user's own model (bnviz.Probe, bnviz inspect) reads the samples kept with it."""
    config = run.config
    if config.preset == OWN_PRESET:
        splits = load_samples(samples_path(store.models_dir, run.id))
        train = next(splits[s][0] for s in SPLITS if s in splits)
        return train, lambda model: evaluate_splits(model, splits, config.batch_size, config.seed)
    data = load_dataset(config.dataset, config.input_size, config.seed)

    def evaluate(model: keras.Model) -> Evaluation:
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return evaluate_both_modes(model, data, config.batch_size, config.seed)

    return data.x_train, evaluate


def recalibrate_job(store: Store, job: Job, progress: Callable[[str], None]) -> None:
    """Handler of "recalibrate" jobs: args {"batches": N} on the job's run."""
    try:
        after = recalibrate(store, job.run_id, int(job.args.get("batches", DEFAULT_BATCHES)), progress)["after"]
    except (ConfigError, StoreError) as exc:
        raise JobFailed(str(exc)) from exc
    progress(f"done: test accuracy {after.accuracy['test']:.0%} in inference mode")
