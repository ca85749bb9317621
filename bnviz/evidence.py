"""Evidence gathered once training ends, from *training* data only, for the diagnosis.

- **Recalibrated accuracy**: PreciseBN (the moving statistics replaced by population statistics of
  training batches) applied to a copy of the model, then inference on every split. It tells whether
  the moving statistics are at fault without looking at the test data: if recalibration recovers
  the accuracy, they were; if not, something else is (a shift, overfitting, batches that were not
  i.i.d. during training). Batch statistics *on test batches* adapt to the test data itself
  (transductive), so they are shown but never taken as proof.
- **Input shift**: per split, how far its pixels and its first BN layer's input (inference mode)
  sit from the training split's, in training standard deviations, so a preprocessing mismatch of
  the test images is named as such instead of being blamed on BN.
"""

from __future__ import annotations

import keras
import numpy as np

from bnviz.data import Dataset
from bnviz.models import batch_norm_layers, uncompiled_clone
from bnviz.probe import StatelessForward, population_moments, tap_model
from bnviz.records import Evaluation

RECALIBRATION_BATCHES = 50  # ~1,600 images at batch 32: Wu & Johnson find 10³–10⁴ samples enough
SHIFT_SAMPLES = 256  # images per split for the shift figures


def recalibrate_model(model: keras.Model, x: np.ndarray, batch_size: int, forward: StatelessForward | None = None) -> int:
    """Assign every BN layer's moving statistics the population moments of its input over `x`
    (upstream layers in training mode, as PreciseBN does); returns the number of BN layers.
    `forward` may be one already compiled for a model with the same weights (saves tracing)."""
    bn_layers = batch_norm_layers(model)
    moments = population_moments(forward or StatelessForward(tap_model(model)[0]), x, batch_size, len(bn_layers))
    for layer, (mean, var) in zip(bn_layers, moments, strict=True):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)
    return len(bn_layers)


def recalibration_sample(data: Dataset, batch_size: int, batches: int, seed: int) -> np.ndarray:
    """The training images PreciseBN averages over: `batches` shuffled batches (fewer if the set is smaller)."""
    order = np.random.default_rng(seed + 2).permutation(len(data.x_train))[: batches * batch_size]
    return data.x_train[order]


def recalibrated_evaluation(model: keras.Model, data: Dataset, batch_size: int, seed: int, batches: int = RECALIBRATION_BATCHES,
                            forward: StatelessForward | None = None) -> Evaluation | None:
    """Inference-mode accuracy and loss per split after PreciseBN on a copy of `model` (the model
    itself is left as trained; `forward`, `model`'s own, computes the moments); None without BN layers."""
    if not batch_norm_layers(model):
        return None
    copy = uncompiled_clone(model)
    copy.set_weights(model.get_weights())
    copy.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    sample = recalibration_sample(data, batch_size, batches, seed)
    recalibrate_model(copy, sample, batch_size, forward)  # the copy holds model's weights: model's forward gives its moments
    accuracy, loss = {}, {}
    for split, (x, y) in data.splits().items():
        split_loss, split_accuracy = copy.evaluate(x, y, batch_size=max(batch_size, 64), verbose=0)
        accuracy[split], loss[split] = float(split_accuracy), float(split_loss)
    return Evaluation(accuracy, {}, loss, {}, batches=-(-len(sample) // batch_size), samples=len(sample))


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


def input_shift(model: keras.Model, data: Dataset, batch_size: int, seed: int, forward: StatelessForward | None = None) -> dict:
    """Per split (val, test) against train: the pixel shift and, with BN, the shift of the first BN
    layer's input in inference mode (see `channel_shift`); plus each split's mean pixel value."""
    rng = np.random.default_rng(seed + 3)
    sample = {name: x[rng.permutation(len(x))[:SHIFT_SAMPLES]] for name, (x, _) in data.splits().items()}
    pixels = {name: pixel_moments(x) for name, x in sample.items()}
    result: dict = {"pixel_mean": {name: float(m.mean()) for name, (m, _) in pixels.items()}, "pixels": {}, "first_bn_input": {}}
    forward = (forward or StatelessForward(tap_model(model)[0])) if batch_norm_layers(model) else None
    first = {name: _first_bn_input_moments(forward, x, batch_size) for name, x in sample.items()} if forward else {}
    for name in ("val", "test"):
        result["pixels"][name] = channel_shift(pixels["train"], pixels[name])
        if first:
            result["first_bn_input"][name] = channel_shift(first["train"], first[name])
    return result


def _first_bn_input_moments(forward: StatelessForward, x: np.ndarray, batch_size: int) -> Moments:
    """The first BN layer's input moments over `x` in inference mode (reduced in the graph, so a
    224² activation map is never held for the whole sample)."""
    mean, var = population_moments(forward, x, batch_size, 1, training=False)[0]
    return mean.astype(np.float64), np.sqrt(var.astype(np.float64))
