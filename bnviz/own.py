"""Runs of models bnviz did not build: the user's own model trained with `bnviz.Probe`, and a saved
model examined by `bnviz inspect`.

Such a run has `preset="own"` and a `RunConfig` that describes the model as closely as the
template's fields allow (norm "batch" when it has a BN layer, the first BN layer's momentum and
epsilon); the truth per layer is in the run info's `bn_layers`, and `info["source"]` says where the
run came from ("callback" or "inspect"). Its images are not in a folder bnviz knows, so the
samples it was evaluated on are kept beside the model (`models/RUN-data.npz`, capped at
`SAMPLE_BYTES`): PreciseBN and the what-ifs that need no retraining read them from there.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from bnviz.config import OWN_PRESET, ArchConfig, BNConfig, ProbeConfig, RunConfig
from bnviz.models import batch_norm_layers
from bnviz.probe import StatelessForward, _accuracy_and_loss, tap_model
from bnviz.records import Evaluation

SPLITS = ("train", "val", "test")
SAMPLE_BYTES = 64 * 2**20  # images kept per run for PreciseBN (train first); the rest are dropped
FROZEN_NOTE = ("{names}: trainable=False. In Keras 3 a frozen BatchNormalization layer always normalises with its moving statistics, "
               "in fit too (as in tf.keras since TF 2.0), and never updates them: they stay what the pretrained model learnt, "
               "whether or not they fit this data. Its 'batch statistics' equal its moving statistics, and training mode shows no "
               "train/test gap for it; PreciseBN replaces them with this data's population statistics.")

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def sparse_labels(y: np.ndarray) -> np.ndarray:
    """Integer class labels from sparse labels or one-hot rows."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1).astype(np.int32)
    return y.reshape(len(y)).astype(np.int32)


def as_arrays(data: object, limit: int = 1 << 30) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` samples of `(x, y)` numpy arrays or of a `tf.data.Dataset` yielding (x, y)
    (batched or not), as float32 images and int labels."""
    if isinstance(data, (tuple, list)) and len(data) >= 2:
        x, y = np.asarray(data[0])[:limit], np.asarray(data[1])[:limit]
    elif hasattr(data, "as_numpy_iterator"):
        x, y = _take(data, limit)
    else:
        raise TypeError(f"Expected (x, y) arrays or a tf.data.Dataset of (x, y). Received: {type(data).__name__}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"Expected as many labels as images, at least one. Received: {len(x)} images, {len(y)} labels")
    return x.astype(np.float32), sparse_labels(y)


def _take(dataset, limit: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, count = [], [], 0
    batched = len(dataset.element_spec[0].shape) > 0 and dataset.element_spec[0].shape[0] is None
    for element in dataset.as_numpy_iterator():
        x, y = element[0], element[1]
        xs.append(x if batched else x[None])
        ys.append(y if batched else np.asarray(y)[None])
        count += len(xs[-1])
        if count >= limit:
            break
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def own_config(model: keras.Model, name: str, batch_size: int, dataset: str = "", epochs: int = 1, probe: ProbeConfig | None = None) -> RunConfig:
    """A RunConfig for a model bnviz did not build (see the module docstring)."""
    bn = batch_norm_layers(model)
    shape = model.inputs[0].shape
    arch = ArchConfig(blocks=(), rescale=1.0, zero_pad=0, dropout=0.0, norm="batch" if bn else "none",
                      bn=BNConfig(momentum=float(bn[0].momentum), epsilon=float(bn[0].epsilon)) if bn else BNConfig())
    return RunConfig(arch=arch, preset=OWN_PRESET, name=name or model.name, dataset=dataset, input_size=int(shape[1] or 0) if len(shape) == 4 else 0,
                     epochs=epochs, batch_size=batch_size, probe=probe or ProbeConfig())


def bn_notes(model: keras.Model) -> list[str]:
    """Plain-words notes on the model's BN layers for the run info (frozen layers, no BN at all)."""
    bn = batch_norm_layers(model)
    frozen = [layer.name for layer in bn if not layer.trainable]
    notes = [FROZEN_NOTE.format(names=", ".join(frozen))] if frozen else []
    return notes if bn else ["The model has no BatchNormalization layer: BN cannot be the cause of a train/test gap."]


def _probabilities(outputs: np.ndarray) -> np.ndarray:
    """Rows that are not already probabilities (logits) go through a softmax."""
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def evaluate_splits(model: keras.Model, splits: Splits, batch_size: int, seed: int = 0, fit_accuracy: float = math.nan,
                    forward: StatelessForward | None = None) -> Evaluation:
    """Accuracy and loss on each given split in inference mode (moving statistics) and with batch
    statistics (shuffled batches of `batch_size`, nothing updated), both through the tap model, so
    no compiled metric of the user's is needed; a split that was not given is left out. `forward`,
    the probe's passes holding `model`'s weights, saves tracing a tap model of its own."""
    forward = forward or StatelessForward(tap_model(model)[0])
    modes: dict[bool, tuple[dict[str, float], dict[str, float]]] = {False: ({}, {}), True: ({}, {})}
    for split in SPLITS:
        if split not in splits or not len(splits[split][0]):
            continue
        x, y = splits[split]
        order = np.random.default_rng(seed).permutation(len(x))
        for training, (accuracy, loss) in modes.items():
            outputs = np.concatenate([forward.probabilities(x[order[i : i + batch_size]], training) for i in range(0, len(x), batch_size)])
            accuracy[split], loss[split] = _accuracy_and_loss(_probabilities(outputs), y[order])
    (acc, loss), (acc_batch, loss_batch) = modes[False], modes[True]
    return Evaluation(acc, acc_batch, loss, loss_batch, fit_accuracy)


def samples_path(models_dir: Path, run_id: str) -> Path:
    return models_dir / f"{run_id}-data.npz"


def save_samples(path: Path, splits: Splits) -> None:
    """Keep the run's samples (train first, within `SAMPLE_BYTES`), written to a temporary file
    and renamed, so a reader never sees half a file."""
    arrays, budget = {}, SAMPLE_BYTES
    for split in SPLITS:
        if split in splits:
            x, y = splits[split]
            keep = max(0, min(len(x), budget // max(1, x[:1].nbytes)))
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x[:keep], y[:keep]
            budget -= x[:keep].nbytes
    atomic_write(path, lambda target: np.savez(target, **arrays))


def load_samples(path: Path) -> Splits:
    with np.load(path) as data:
        return {s: (data[f"x_{s}"], data[f"y_{s}"]) for s in SPLITS if f"x_{s}" in data and len(data[f"x_{s}"])}


def atomic_write(path: Path, write) -> None:
    """Call `write(temporary_path)` then rename it onto `path`: `path` is complete or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(temp)
        os.chmod(temp, 0o644)  # mkstemp makes it private; the model is for the user to share
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
