"""How a model's outputs are scored against its targets, whatever the task: class labels (sparse or
one-hot, per image or per pixel), a binary target on one output unit (probability or logit), or
any other target (regression, a mask, an image), scored by the model's own loss only.

BN's statistics do not depend on the task, so the probe records every model; only the numbers it
reports beside them do: accuracy and cross-entropy where the targets are classes, the loss alone
where they are not (accuracy NaN, and the diagnosis compares losses). NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CLASSES, BINARY, VALUES = "classes", "binary", "values"
LossFn = Callable[[np.ndarray, np.ndarray], object]  # (targets, outputs) -> per-sample or mean loss


@dataclass(frozen=True)
class Task:
    """What the targets are (`kind`: classes, binary or values) and, for values, the loss to score
    them with (the model's own compiled loss, else mean squared error), named for the reports."""

    kind: str
    loss_name: str = "cross-entropy"
    loss: LossFn | None = None

    @property
    def has_accuracy(self) -> bool:
        return self.kind != VALUES


def _integral(y: np.ndarray) -> bool:
    return y.size > 0 and np.issubdtype(y.dtype, np.number) and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y)))


def _one_hot_like(y: np.ndarray) -> bool:
    """Rows of non-negative values that sum to 1: one-hot or smoothed labels."""
    return y.size > 0 and bool(np.all(y >= 0)) and bool(np.allclose(y.sum(axis=-1), 1.0, atol=1e-3))


def task_for(output_shape: tuple, targets: np.ndarray, loss: LossFn | None = None, loss_name: str = "") -> Task:
    """The task of a model with outputs shaped `output_shape` (batch axis included) trained on
    `targets`; `loss` (the model's compiled loss) scores targets that are not classes."""
    y = np.asarray(targets)
    units = int(output_shape[-1]) if len(output_shape) > 1 and output_shape[-1] else 1
    lead = tuple(output_shape[1:-1]) if len(output_shape) > 1 else ()
    if units > 1 and y.shape[1:] == tuple(output_shape[1:]) and _one_hot_like(y):
        return Task(CLASSES)
    if _integral(y) and tuple(y.shape[1:]) in (lead, (*lead, 1)):
        if units > 1 and y.min() >= 0 and y.max() < units:
            return Task(CLASSES)
        if units == 1 and set(np.unique(y).tolist()) <= {0, 1}:
            return Task(BINARY, "binary cross-entropy")
    return Task(VALUES, loss_name or ("the model's loss" if loss else "mean squared error"), loss)


def class_labels(targets: np.ndarray, outputs_rank: int) -> np.ndarray:
    """Integer labels from sparse labels or one-hot rows (argmax over the last axis)."""
    y = np.asarray(targets)
    if y.ndim == outputs_rank and y.shape[-1] > 1:
        return np.argmax(y, axis=-1)
    return y.reshape(y.shape[: outputs_rank - 1]) if y.ndim >= outputs_rank else y


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities along the last axis: rows that already are stay, logits go through a softmax."""
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def positive_probability(outputs: np.ndarray) -> np.ndarray:
    """One unit's probability of the positive class: kept if every output lies in [0, 1] (a sigmoid),
    else read as a logit (`from_logits=True`)."""
    z = np.asarray(outputs, np.float64)
    return z if np.all((z >= 0) & (z <= 1)) else 1 / (1 + np.exp(-z))


def batch_totals(outputs: np.ndarray, targets: np.ndarray, task: Task) -> tuple[float, float, int]:
    """Summed correct predictions and summed per-sample loss over one batch, and its sample count,
    so that batches of any size combine into exact means (accuracy NaN for values)."""
    outputs = np.asarray(outputs)
    n = len(outputs)
    if task.kind == CLASSES:
        labels = class_labels(targets, outputs.ndim).astype(np.int64)
        probs = probabilities(outputs).reshape(-1, outputs.shape[-1])
        flat = labels.reshape(-1)
        picked = probs[np.arange(len(flat)), flat]
        return float(np.mean(np.argmax(probs, axis=1) == flat)) * n, float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0)))) * n, n
    if task.kind == BINARY:
        p = positive_probability(outputs).reshape(-1)
        y = np.asarray(targets, np.float64).reshape(-1)
        p_clip = np.clip(p, 1e-7, 1 - 1e-7)
        loss = -(y * np.log(p_clip) + (1 - y) * np.log(1 - p_clip))
        return float(np.mean((p >= 0.5) == (y >= 0.5))) * n, float(np.mean(loss)) * n, n
    return math.nan, _values_loss(outputs, np.asarray(targets), task) * n, n


def _values_loss(outputs: np.ndarray, targets: np.ndarray, task: Task) -> float:
    """The mean loss of one batch of any targets: the task's own loss, else mean squared error."""
    if task.loss is None:
        return float(np.mean((outputs.astype(np.float64) - targets.reshape(outputs.shape).astype(np.float64)) ** 2))
    return float(np.mean(np.asarray(task.loss(targets, outputs), np.float64)))


def scores(outputs: np.ndarray, targets: np.ndarray, task: Task) -> tuple[float, float]:
    """Accuracy (NaN for values) and mean loss of one batch."""
    correct, loss, n = batch_totals(outputs, targets, task)
    return correct / n, loss / n
