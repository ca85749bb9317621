"""PreciseBN: recompute every BN layer's moving mean/variance over N training batches with the
weights frozen, then evaluate again. No retraining; the run gains a "precisebn" evaluation, which
says which split it averaged over and how many images (`--calibrate-on`, training images unless
named: calibrating on test images and scoring on them is transductive, and is labelled so).

As in fvcore's `update_bn_stats`, BN layers use batch statistics while the population moments are
gathered (so each layer sees the inputs it saw in training), every batch is weighted by its element
count, and the variance is the population one, E[x²] − E[x]² (biased, as Keras uses).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bnviz.config import OWN_PRESET, ConfigError
from bnviz.data import load_dataset
from bnviz.jobs import JobFailed, recalibration_run
from bnviz.records import Evaluation, Job, Run
from bnviz.store import Store, StoreError
from bnviz.tf.evidence import RECALIBRATION_BATCHES, Splits, recalibrated_evaluation
from bnviz.tf.models import batch_norm_layers, load_model_safely
from bnviz.tf.own import atomic_write, load_samples, model_task, samples_path
from bnviz.tf.probe import StatelessForward

DEFAULT_BATCHES = RECALIBRATION_BATCHES


def recalibrate(
    store: Store,
    run_id: str,
    batches: int = DEFAULT_BATCHES,
    progress: Callable[[str], None] = lambda text: None,
    save: str | Path | None = None,
    calibrate_on: str = "train",
) -> dict[str, Evaluation | None]:
    """Recalibrate a finished run's model over `calibrate_on`'s images (training images unless the
    user names another split); returns {"before": ..., "after": ...} evaluations. The recalibrated
    model goes beside the run's model, and to `save` (a .keras path) when given."""
    run = recalibration_run(store, run_id, batches, calibrate_on, save)
    config = run.config
    model = load_model_safely(run.model_path)
    if not batch_norm_layers(model):
        raise StoreError(f"Run {run_id}'s model has no BatchNormalization layer: nothing to recalibrate.")
    splits = _run_splits(store, run)
    if calibrate_on not in splits:
        hint = "Give bnviz.Probe train_data= next time, or name" if calibrate_on == "train" else "Name"
        raise StoreError(
            f"Run {run_id} kept no {calibrate_on} images to recalibrate on (it has: {', '.join(splits) or 'none'}). {hint} "
            "a split it has with --calibrate-on (a held-out split then scores transductively)."
        )
    task = model_task(model, splits[calibrate_on][1])
    forward = StatelessForward.of(model)
    count = -(-min(len(splits[calibrate_on][0]), batches * config.batch_size) // config.batch_size)
    progress(f"averaging BN statistics over {count} {calibrate_on} batches")
    after = recalibrated_evaluation(forward, splits, config.batch_size, config.seed, task, calibrate_on, batches, keep=True)  # into `model`
    store.add_evaluation(run_id, "precisebn", after)
    for path in filter(None, (store.models_dir / f"{run_id}-precisebn.keras", save)):
        atomic_write(Path(path), model.save)
    return {"before": store.evaluations(run_id).get("final"), "after": after}


def _run_splits(store: Store, run: Run) -> Splits:
    """The images a run was evaluated on: a template run reloads its data set; a run of the user's
    own model (bnviz.Probe, bnviz inspect) reads the samples kept with it."""
    config = run.config
    if config.preset == OWN_PRESET:
        return load_samples(samples_path(store.models_dir, run.id))
    return load_dataset(config.dataset, config.input_size, config.seed).splits()


def recalibrate_job(store: Store, job: Job, progress: Callable[[str], None]) -> None:
    """Handler of "recalibrate" jobs: args {"batches": N} on the job's run."""
    try:
        after = recalibrate(store, job.run_id, int(job.args.get("batches", DEFAULT_BATCHES)), progress)["after"]
    except (ConfigError, StoreError) as exc:
        raise JobFailed(str(exc)) from exc
    split = next((s for s in ("test", "val", "train") if s in after.accuracy), None)
    value = after.accuracy.get(split, float("nan"))
    progress(f"done: {split} accuracy {value:.0%} in inference mode" if value == value else f"done: {split} loss {after.loss.get(split, float('nan')):.4g}")
