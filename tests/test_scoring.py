"""bnviz.scoring: what a model's targets are, and its accuracy and loss on them, against Keras' own
metrics and losses computed on the same arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnviz.scoring import BINARY, CLASSES, VALUES, batch_totals, scores, task_for

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "output_shape, targets, kind",
    [
        ((None, 6), RNG.integers(0, 6, 20), CLASSES),
        ((None, 6), RNG.integers(0, 6, (20, 1)), CLASSES),
        ((None, 3), np.eye(3)[RNG.integers(0, 3, 20)], CLASSES),  # one-hot
        ((None, 3), np.eye(3)[RNG.integers(0, 3, 20)] * 0.9 + 0.1 / 3, CLASSES),  # label smoothing
        ((None, 8, 8, 4), RNG.integers(0, 4, (20, 8, 8)), CLASSES),  # a per-pixel sparse mask
        ((None, 1), RNG.integers(0, 2, 20).astype("float32"), BINARY),
        ((None,), RNG.integers(0, 2, 20), BINARY),
        ((None, 8, 8, 1), RNG.integers(0, 2, (20, 8, 8, 1)).astype("float32"), BINARY),  # a binary mask
        ((None, 1), RNG.normal(0, 1, (20, 1)), VALUES),  # regression
        ((None, 6), RNG.integers(0, 9, 20), VALUES),  # labels beyond the output units are not this model's classes
        ((None, 8, 8, 3), RNG.normal(0, 1, (20, 8, 8, 3)), VALUES),  # an image target
    ],
)
def test_the_task_follows_the_targets_and_the_output_shape(output_shape, targets, kind):
    assert task_for(output_shape, targets).kind == kind


def test_class_scores_match_keras_for_probabilities_logits_and_one_hot():
    import keras

    logits = RNG.normal(0, 2, (50, 5)).astype("float32")
    labels = RNG.integers(0, 5, 50)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    expected_loss = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
    expected_accuracy = float(np.mean(np.argmax(logits, 1) == labels))
    task = task_for((None, 5), labels)
    for outputs in (probs, logits):
        assert scores(outputs, labels, task) == pytest.approx((expected_accuracy, expected_loss), rel=1e-4)
    assert scores(probs, np.eye(5)[labels], task_for((None, 5), np.eye(5)[labels])) == pytest.approx((expected_accuracy, expected_loss), rel=1e-4)


def test_binary_scores_match_keras_for_a_sigmoid_and_a_logit_unit():
    import keras

    logits = RNG.normal(0, 2, (60, 1)).astype("float32")
    y = RNG.integers(0, 2, (60, 1)).astype("float32")
    sigmoid = keras.ops.convert_to_numpy(keras.ops.sigmoid(logits))
    expected = (float(keras.metrics.BinaryAccuracy()(y, sigmoid)), float(keras.losses.BinaryCrossentropy()(y, sigmoid)))
    task = task_for((None, 1), y)
    assert task.kind == BINARY
    assert scores(sigmoid, y, task) == pytest.approx(expected, rel=1e-4)
    assert scores(logits, y, task) == pytest.approx(expected, rel=1e-4)  # from_logits=True heads


def test_values_are_scored_by_the_models_own_loss_else_mean_squared_error():
    import keras

    y, out = RNG.normal(0, 1, (30, 4)), RNG.normal(0, 1, (30, 4))
    accuracy, loss = scores(out, y, task_for((None, 4), y))
    assert math.isnan(accuracy) and loss == pytest.approx(float(np.mean((out - y) ** 2)))
    mae = keras.losses.get("mae")
    task = task_for((None, 4), y, lambda t, o: keras.ops.convert_to_numpy(mae(t, o)), "mae")
    assert scores(out, y, task)[1] == pytest.approx(float(np.mean(np.abs(out - y))), rel=1e-5) and task.loss_name == "mae"


def test_batches_of_any_size_combine_into_the_whole_sets_means():
    probs = RNG.dirichlet(np.ones(4), 37)
    labels = RNG.integers(0, 4, 37)
    task = task_for((None, 4), labels)
    parts = [batch_totals(probs[i : i + 8], labels[i : i + 8], task) for i in range(0, 37, 8)]
    correct, loss, n = (sum(p) for p in zip(*parts, strict=True))
    assert (correct / n, loss / n) == pytest.approx(scores(probs, labels, task))
