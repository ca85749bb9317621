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

import contextlib
import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from bnviz.config import OWN_PRESET, ArchConfig, BNConfig, Norm, ProbeConfig, RunConfig
from bnviz.scoring import Task, task_for
from bnviz.tf.models import batch_norm_layers
from bnviz.tf.probe import MultiInput, model_input, model_inputs

SPLITS = ("train", "val", "test")
SAMPLE_BYTES = 64 * 2**20  # images kept per run for PreciseBN (train first); the rest are dropped
FROZEN_NOTE = (
    "{names}: trainable=False. In Keras 3 a frozen BatchNormalization layer always normalises with its moving statistics, "
    "in fit too (as in tf.keras since TF 2.0), and never updates them: they stay what the pretrained model learnt, "
    "whether or not they fit this data. Its 'batch statistics' equal its moving statistics, and training mode shows no "
    "train/test gap for it; PreciseBN replaces them with this data's population statistics."
)

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def as_arrays(data: object, limit: int = 1 << 30) -> tuple[np.ndarray | MultiInput, np.ndarray]:
    """Up to `limit` samples of `(x, y)` numpy arrays or of a `tf.data.Dataset` yielding (x, y)
    (batched or not): float32 inputs (a `MultiInput` where x is a list or tuple of arrays, one per
    model input) and the targets as given (labels, one-hot rows, values, masks)."""
    if isinstance(data, (tuple, list)) and len(data) >= 2 and isinstance(data[0], (tuple, list)):
        x, y = MultiInput(tuple(np.asarray(a, np.float32)[:limit] for a in data[0])), np.asarray(data[1])[:limit]
        return _checked(x, y)
    if isinstance(data, (tuple, list)) and len(data) >= 2:
        x, y = np.asarray(data[0])[:limit], np.asarray(data[1])[:limit]
    elif hasattr(data, "as_numpy_iterator"):
        x, y = _take(data, limit)
    else:
        raise TypeError(f"Expected (x, y) arrays or a tf.data.Dataset of (x, y). Received: {type(data).__name__}")
    return _checked(x.astype(np.float32), y)


def _checked(x: np.ndarray | MultiInput, y: np.ndarray) -> tuple[np.ndarray | MultiInput, np.ndarray]:
    if len(x) != len(y) or len(x) == 0 or (isinstance(x, MultiInput) and len({len(a) for a in x.arrays}) > 1):
        raise ValueError(f"Expected as many targets as samples of every input, at least one. Received: {len(x)} samples, {len(y)} targets")
    return x, y


def model_task(model: keras.Model, targets: np.ndarray, inputs: np.ndarray | None = None) -> Task:
    """What `model`'s targets are (see `bnviz.scoring.task_for`), with its own compiled loss for
    targets that are not classes (mean squared error when it has none bnviz can call). A subclassed
    model has no symbolic output: its shape comes from one of `inputs` in inference mode (no update)."""
    loss = getattr(model, "loss", None)
    loss_fn, name = None, ""
    if loss is not None and not isinstance(loss, (list, tuple, dict)):
        with contextlib.suppress(ValueError, TypeError):
            loss_fn = keras.losses.get(loss)
            name = loss if isinstance(loss, str) else getattr(loss, "name", None) or getattr(loss, "__name__", "the model's loss")
    call = (lambda y, out: keras.ops.convert_to_numpy(loss_fn(y, out))) if loss_fn else None
    try:
        shape = tuple(model.outputs[0].shape)
    except (AttributeError, IndexError, TypeError):
        shape = (None, *keras.ops.shape(model(model_input(inputs[:1]), training=False))[1:])
    return task_for(shape, targets, call, str(name))


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
    inputs = model_inputs(model)
    shape = tuple(inputs[0].shape) if inputs else ()  # the first input's; a subclassed model has none
    arch = ArchConfig(
        blocks=(),
        rescale=1.0,
        zero_pad=0,
        dropout=0.0,
        norm=Norm.BATCH if bn else Norm.NONE,
        bn=BNConfig(momentum=float(bn[0].momentum), epsilon=float(bn[0].epsilon)) if bn else BNConfig(),
    )
    return RunConfig(
        arch=arch,
        preset=OWN_PRESET,
        name=name or model.name,
        dataset=dataset,
        input_size=int(shape[1] or 0) if len(shape) == 4 else 0,
        epochs=epochs,
        batch_size=batch_size,
        probe=probe or ProbeConfig(),
    )


def bn_notes(model: keras.Model) -> list[str]:
    """Plain-words notes on the model's BN layers for the run info (frozen layers, no BN at all)."""
    bn = batch_norm_layers(model)
    frozen = [layer.name for layer in bn if not layer.trainable]
    notes = [FROZEN_NOTE.format(names=", ".join(frozen))] if frozen else []
    return notes if bn else ["The model has no BatchNormalization layer: BN cannot be the cause of a train/test gap."]


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
            inputs = x[:keep].arrays if isinstance(x, MultiInput) else (x[:keep],)
            arrays |= {f"x_{split}" + (f"_{i}" if isinstance(x, MultiInput) else ""): a for i, a in enumerate(inputs)}
            arrays[f"y_{split}"] = y[:keep]
            budget -= x[:keep].nbytes
    atomic_write(path, lambda target: np.savez(target, **arrays))


def load_samples(path: Path) -> Splits:
    """The samples `save_samples` kept: one array per split, or a `MultiInput` where it kept `x_SPLIT_0`, `x_SPLIT_1`, …"""
    with np.load(path) as data:
        splits = {}
        for s in SPLITS:
            several = sorted((k for k in data.files if k.startswith(f"x_{s}_")), key=lambda k: int(k.rsplit("_", 1)[1]))
            x = MultiInput(tuple(data[k] for k in several)) if several else data[f"x_{s}"] if f"x_{s}" in data else None
            if x is not None and len(x):
                splits[s] = (x, data[f"y_{s}"])
        return splits


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
