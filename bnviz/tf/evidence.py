"""One evaluation path for every kind of run (bnviz's own, a `bnviz.Probe` run, an inspected model):
what the diagnosis reads, from whatever splits the run has.

- **Both BN modes**: accuracy (or, for targets that are not classes, the loss alone) per split in
  inference mode (moving statistics, as `evaluate` and `predict` run) and with batch statistics
  (shuffled batches of the training batch size, nothing updated).
- **Recalibrated**: PreciseBN (the moving statistics replaced by population statistics of the
  calibration split's batches) on the probe's private copy, then inference on every split. It tells
  whether the moving statistics are at fault without looking at the test data: calibrated on
  *training* images by default; never on test images unless asked for by name (then every figure
  says "transductive"). A run without the calibration split gets none, and the diagnosis says so.
- **Input shift**: per split, how far its pixels and its first BN layer's input (inference mode)
  sit from the reference split's (train, else val), in reference standard deviations, so a
  preprocessing mismatch of the test images is named as such instead of being blamed on BN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np

from bnviz.records import SPLITS, Evaluation
from bnviz.scoring import Task, batch_totals
from bnviz.store import Store
from bnviz.tf.probe import StatelessForward, first_input, population_moments, private_copy

RECALIBRATION_BATCHES = 50  # ~1,600 images at batch 32: Wu & Johnson find 10³–10⁴ samples enough
SHIFT_SAMPLES = 256  # images per split for the shift figures
CALIBRATION_SPLITS = ("train", "val", "test")
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


class EvidenceError(ValueError):
    """Evidence that cannot be gathered from what the run has (e.g. no images of the calibration split)."""


def private_forward(model: keras.Model) -> StatelessForward:
    """Compiled passes on a private copy holding `model`'s weights: recalibrating it never touches `model`."""
    copy, forward = private_copy(model)
    copy.set_weights(model.get_weights())
    return forward


def evaluate_modes(forward: StatelessForward, splits: Splits, batch_size: int, seed: int, task: Task, modes: tuple[bool, ...] = (False, True)) -> dict:
    """Per BN mode (False: inference, True: batch statistics), accuracy and loss per split, scored
    batch by batch (no output map of a whole split is held) on shuffled batches of `batch_size`."""
    result: dict[bool, tuple[dict[str, float], dict[str, float]]] = {mode: ({}, {}) for mode in modes}
    for split in SPLITS:
        if split not in splits or not len(splits[split][0]):
            continue
        x, y = splits[split]
        order = np.random.default_rng(seed).permutation(len(x))
        for training, (accuracy, loss) in result.items():
            totals = [
                batch_totals(forward.probabilities(x[index], training), y[index], task)
                for index in (order[i : i + batch_size] for i in range(0, len(x), batch_size))
            ]
            correct, losses, count = (sum(column) for column in zip(*totals, strict=True))
            accuracy[split], loss[split] = correct / count, losses / count
    return result


def final_evaluation(
    forward: StatelessForward, splits: Splits, batch_size: int, seed: int, task: Task, fit_accuracy: float = math.nan, fit_loss: float = math.nan
) -> Evaluation:
    """Both BN modes on every split the run has (see `evaluate_modes`), with what fit reported."""
    modes = evaluate_modes(forward, splits, batch_size, seed, task)
    (acc, loss), (acc_batch, loss_batch) = modes[False], modes[True]
    return Evaluation(acc, acc_batch, loss, loss_batch, fit_accuracy, fit_loss=fit_loss)


def calibration_sample(x: np.ndarray, batch_size: int, batches: int, seed: int) -> np.ndarray:
    """The images PreciseBN averages over: `batches` shuffled batches (fewer if the split is smaller)."""
    return x[np.random.default_rng(seed + 2).permutation(len(x))[: batches * batch_size]]


def recalibrated_evaluation(
    forward: StatelessForward,
    splits: Splits,
    batch_size: int,
    seed: int,
    task: Task,
    calibrate_on: str = "train",
    batches: int = RECALIBRATION_BATCHES,
    keep: bool = False,
) -> Evaluation | None:
    """Inference-mode accuracy and loss per split after PreciseBN over `calibrate_on`'s images,
    assigned to `forward`'s own BN layers (a private copy's) and restored afterwards unless `keep`
    (bnviz recalibrate, whose forward runs on the model it saves); None without BN layers.
    EvidenceError when the run has no images of that split."""
    if not forward.bn_layers:
        return None
    if calibrate_on not in splits or not len(splits[calibrate_on][0]):
        raise EvidenceError(f"No {calibrate_on} images to recalibrate on (this run has: {', '.join(s for s in SPLITS if s in splits) or 'none'}).")
    sample = calibration_sample(splits[calibrate_on][0], batch_size, batches, seed)
    kept = [forward.moving(i) for i in range(len(forward.bn_layers))]
    for i, (mean, var) in enumerate(population_moments(forward, sample, batch_size, len(forward.bn_layers))):
        forward.assign_moving(i, mean, var)
    try:
        accuracy, loss = evaluate_modes(forward, splits, batch_size, seed, task, modes=(False,))[False]
    finally:
        for i, (mean, var) in enumerate(kept if not keep else ()):
            forward.assign_moving(i, mean, var)
    return Evaluation(accuracy, {}, loss, {}, batches=-(-len(sample) // batch_size), samples=len(sample), calibrated_on=calibrate_on)


@dataclass(frozen=True)
class RunEvidence:
    """Everything one evaluation pass gives the diagnosis; `missing` says what could not be measured and why."""

    final: Evaluation
    recalibrated: Evaluation | None
    input_shift: dict
    missing: dict[str, str] = field(default_factory=dict)


def evaluate_run(
    forward: StatelessForward, splits: Splits, batch_size: int, seed: int, task: Task, fit_accuracy: float = math.nan, fit_loss: float = math.nan
) -> RunEvidence:
    """The one evaluation every kind of run gets: both BN modes, PreciseBN on training images, the
    input shift. `forward` holds the run's final weights on a private copy."""
    final = final_evaluation(forward, splits, batch_size, seed, task, fit_accuracy, fit_loss)
    missing: dict[str, str] = {}
    try:
        recalibrated = recalibrated_evaluation(forward, splits, batch_size, seed, task)
    except EvidenceError as exc:
        recalibrated, missing["recalibrated"] = None, str(exc)
    return RunEvidence(final, recalibrated, input_shift(forward, splits, batch_size, seed), missing)


def store_evidence(store: Store, run_id: str, evidence: RunEvidence) -> None:
    """Write the evaluations ("final", "recalibrated") and the shift and what is missing into the run."""
    store.add_evaluation(run_id, "final", evidence.final)
    if evidence.recalibrated is not None:
        store.add_evaluation(run_id, "recalibrated", evidence.recalibrated)
    store.update_info(run_id, input_shift=evidence.input_shift, missing_evidence=evidence.missing)


Moments = tuple[np.ndarray, np.ndarray]  # per-channel mean and standard deviation


def channel_shift(reference: Moments, other: Moments) -> float:
    """How far one per-channel distribution sits from a reference one: the median over channels of
    max(|Δmean| / sd, |ln(sd ratio)|), in the reference's units. 0 for the same distribution; 0.5
    means half a standard deviation off, or a 1.65× change of contrast."""
    (ref_mean, ref_sd), (mean, sd) = reference, other
    floor = max(float(np.median(ref_sd)), 1e-6) * 1e-3  # constant channels must not divide by zero
    mean_shift = np.abs(mean - ref_mean) / np.maximum(ref_sd, floor)
    scale_shift = np.abs(np.log(np.maximum(sd, floor) / np.maximum(ref_sd, floor)))
    return float(np.median(np.maximum(mean_shift, scale_shift)))


def pixel_moments(x: np.ndarray) -> Moments:
    axes = tuple(range(x.ndim - 1))
    return x.mean(axis=axes, dtype=np.float64), x.std(axis=axes, dtype=np.float64)


def input_shift(forward: StatelessForward | None, splits: Splits, batch_size: int, seed: int) -> dict:
    """Per split (val, test) against the reference split (train, else val): the pixel shift and,
    with BN, the shift of the first BN layer's input in inference mode (see `channel_shift`); plus
    each split's mean pixel value. Empty shifts where the run has no reference or nothing to compare."""
    rng = np.random.default_rng(seed + 3)
    sample = {name: x[rng.permutation(len(x))[:SHIFT_SAMPLES]] for name, (x, _) in splits.items() if len(x) and np.ndim(first_input(x)) >= 2}
    reference = next((name for name in ("train", "val") if name in sample), None)
    result: dict = {
        "reference": reference,
        "pixel_mean": {name: float(np.mean(first_input(x))) for name, x in sample.items()},
        "pixels": {},
        "first_bn_input": {},
    }
    if reference is None:
        return result
    pixels = {name: pixel_moments(first_input(x)) for name, x in sample.items()}
    first = {name: _first_bn_input_moments(forward, x, batch_size) for name, x in sample.items()} if forward and forward.bn_layers else {}
    for name in ("val", "test"):
        if name in sample and name != reference:
            result["pixels"][name] = channel_shift(pixels[reference], pixels[name])
            if first:
                result["first_bn_input"][name] = channel_shift(first[reference], first[name])
    return result


def _first_bn_input_moments(forward: StatelessForward, x: np.ndarray, batch_size: int) -> Moments:
    """The first BN layer's input moments over `x` in inference mode (reduced in the graph, so a
    224² activation map is never held for the whole sample)."""
    mean, var = population_moments(forward, x, batch_size, 1, training=False)[0]
    return mean.astype(np.float64), np.sqrt(var.astype(np.float64))
