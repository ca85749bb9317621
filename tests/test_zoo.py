"""The model zoo: BatchNormalization models written in the styles people use, each trained with and
without `bnviz.Probe`. For every one: training is bit-identical, every BN layer the probe claims to
follow has records (or the model gets one clear warning that says why and what would work), and the
verdict is right for how it was trained: these are trained well (momentum 0.9, ~40 steps on inputs
the model can learn), so no BN fault may be named, and never a false "not i.i.d." or "never moved".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from bnviz.diagnose import diagnose
from bnviz.store import Store

pytestmark = pytest.mark.slow  # two short fits per model

N, BATCH, EPOCHS, M = 160, 16, 4, 0.9
FALSE_CAUSES = ("never_moved", "non_iid_batches", "stale_initial_values", "insufficient_evidence")


@dataclass(frozen=True)
class Case:
    build: Callable  # () -> compiled model
    data: Callable  # rng -> (x, y)
    refused: str = ""  # a phrase of the one warning, for models the probe cannot follow


def _images(rng, size=8, channels=3):
    x = rng.normal(0, 1, (N, size, size, channels)).astype("float32")
    return x, (x[..., 0].mean(axis=(1, 2)) > 0).astype("int64")


def _vectors(rng, width=10):
    x = rng.normal(0, 1, (N, width)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64")


def _compile(model, loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
    import keras

    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=list(metrics))
    return model


def conv_classifier():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                layers.Conv2D(8, 3),
                layers.BatchNormalization(momentum=M),
                layers.ReLU(),
                layers.GlobalAveragePooling2D(),
                layers.Dense(2, activation="softmax"),
            ]
        )
    )


def sequential_without_input():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential(
            [layers.Conv2D(8, 3), layers.BatchNormalization(momentum=M), layers.ReLU(), layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")]
        )
    )


def conv1d():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential(
            [
                keras.Input((16, 4)),
                layers.Conv1D(8, 3),
                layers.BatchNormalization(momentum=M),
                layers.ReLU(),
                layers.GlobalAveragePooling1D(),
                layers.Dense(2, activation="softmax"),
            ]
        )
    )


def dense_mlp():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential([keras.Input((10,)), layers.Dense(16), layers.BatchNormalization(momentum=M), layers.ReLU(), layers.Dense(2, activation="softmax")])
    )


def regression_mlp():
    import keras
    from keras import layers

    return _compile(keras.Sequential([keras.Input((10,)), layers.Dense(16), layers.BatchNormalization(momentum=M), layers.ReLU(), layers.Dense(1)]), "mse", ())


def binary_sigmoid():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                layers.Conv2D(8, 3),
                layers.BatchNormalization(momentum=M),
                layers.ReLU(),
                layers.GlobalAveragePooling2D(),
                layers.Dense(1, activation="sigmoid"),
            ]
        ),
        "binary_crossentropy",
    )


def binary_logit():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential([keras.Input((10,)), layers.Dense(16), layers.BatchNormalization(momentum=M), layers.ReLU(), layers.Dense(1)]),
        keras.losses.BinaryCrossentropy(from_logits=True),
        [keras.metrics.BinaryAccuracy(threshold=0.0)],
    )


def unet_mask():
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    down = layers.ReLU()(layers.BatchNormalization(momentum=M)(layers.Conv2D(8, 3, padding="same")(inputs)))
    up = layers.Concatenate()([layers.UpSampling2D()(layers.MaxPooling2D()(down)), down])
    return _compile(keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(up)), "binary_crossentropy", ())


def generator():
    import keras
    from keras import layers

    inputs = keras.Input((8,))
    x = layers.ReLU()(layers.BatchNormalization(momentum=M)(layers.Dense(4 * 4 * 8)(inputs)))
    x = layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="tanh")(layers.Reshape((4, 4, 8))(x))
    return _compile(keras.Model(inputs, x), "mae", ())


def resnet_block():
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    y = layers.BatchNormalization(momentum=M)(layers.Conv2D(8, 3, padding="same", use_bias=False)(layers.ReLU()(x)))
    x = layers.ReLU()(layers.Add()([x, y]))
    return _compile(keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))))


def dropout_before_bn():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential(
            [
                keras.Input((10,)),
                layers.Dense(32, activation="relu"),
                layers.Dropout(0.3),
                layers.BatchNormalization(momentum=M),
                layers.Dense(2, activation="softmax"),
            ]
        )
    )


def bn_on_the_input():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential(
            [keras.Input((10,)), layers.BatchNormalization(momentum=M), layers.Dense(16, activation="relu"), layers.Dense(2, activation="softmax")]
        )
    )


def time_distributed():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential(
            [keras.Input((5, 6)), layers.TimeDistributed(layers.BatchNormalization(momentum=M)), layers.LSTM(8), layers.Dense(2, activation="softmax")]
        )
    )


def one_hot():
    import keras
    from keras import layers

    return _compile(
        keras.Sequential([keras.Input((10,)), layers.Dense(16), layers.BatchNormalization(momentum=M), layers.ReLU(), layers.Dense(2, activation="softmax")]),
        "categorical_crossentropy",
    )


def frozen_base():
    """The transfer-learning guide: a frozen base called with training=False, a new head."""
    import keras
    from keras import layers

    base = keras.Sequential(
        [keras.Input((8, 8, 3)), layers.Conv2D(8, 3), layers.BatchNormalization(momentum=M), layers.ReLU(), layers.GlobalAveragePooling2D()], name="base"
    )
    base.trainable = False
    inputs = keras.Input((8, 8, 3))
    return _compile(keras.Model(inputs, layers.Dense(2, activation="softmax")(base(inputs, training=False))))


def two_inputs():
    import keras
    from keras import layers

    a, b = keras.Input((10,), name="a"), keras.Input((10,), name="b")
    x = layers.BatchNormalization(momentum=M)(layers.Dense(8)(layers.Concatenate()([a, b])))
    return _compile(keras.Model([a, b], layers.Dense(2, activation="softmax")(x)))


def subclassed():
    import keras
    from keras import layers

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense, self.bn, self.out = layers.Dense(8), layers.BatchNormalization(momentum=M), layers.Dense(2, activation="softmax")

        def call(self, x, training=False):
            return self.out(self.bn(self.dense(x), training=training))

    return _compile(Net())


def bn_in_a_custom_layer():
    """A residual unit written as a Layer subclass with BN inside, used in a Functional model."""
    import keras
    from keras import layers

    class ConvUnit(layers.Layer):
        def __init__(self, filters, **kwargs):
            super().__init__(**kwargs)
            self.conv, self.bn, self.drop = layers.Conv2D(filters, 3, padding="same"), layers.BatchNormalization(momentum=M), layers.Dropout(0.2)

        def call(self, x, training=None):
            return self.drop(keras.ops.relu(self.bn(self.conv(x), training=training)), training=training)

    inputs = keras.Input((8, 8, 3))
    x = ConvUnit(8)(inputs)
    return _compile(keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))))


def _y_regression(rng):
    x, _ = _vectors(rng)
    return x, (x[:, :1] * 2 + 1).astype("float32")


def _mask(rng):
    x, _ = _images(rng)
    return x, (x[..., :1] > 0).astype("float32")


def _images_to_images(rng):
    x = rng.normal(0, 1, (N, 8)).astype("float32")
    return x, np.tanh(np.repeat(x[:, :3, None, None], 8, axis=2).repeat(8, axis=3).transpose(0, 2, 3, 1)).astype("float32")


def _sequences(rng):
    x = rng.normal(0, 1, (N, 5, 6)).astype("float32")
    return x, (x[:, :, 0].mean(axis=1) > 0).astype("int64")


def _series(rng):
    x = rng.normal(0, 1, (N, 16, 4)).astype("float32")
    return x, (x[..., 0].mean(axis=1) > 0).astype("int64")


ZOO = {
    "conv classifier": Case(conv_classifier, _images),
    "Sequential without Input": Case(sequential_without_input, _images),
    "Conv1D": Case(conv1d, _series),
    "Dense MLP": Case(dense_mlp, _vectors),
    "regression MLP": Case(regression_mlp, _y_regression),
    "binary sigmoid": Case(binary_sigmoid, lambda rng: _images(rng)),
    "binary logit head": Case(binary_logit, _vectors),
    "U-Net mask": Case(unet_mask, _mask),
    "GAN-style generator": Case(generator, _images_to_images),
    "ResNet block with Add": Case(resnet_block, _images),
    "Dropout before BN": Case(dropout_before_bn, _vectors),
    "BN on the input": Case(bn_on_the_input, _vectors),
    "TimeDistributed BN before an LSTM": Case(time_distributed, _sequences),
    "one-hot targets": Case(one_hot, lambda rng: (lambda x, y: (x, np.eye(2, dtype="float32")[y]))(*_vectors(rng))),
    "frozen base, training=False": Case(frozen_base, _images),
    "two inputs (a conditional model)": Case(two_inputs, lambda rng: (lambda x, y: ([x, x[:, ::-1].copy()], y))(*_vectors(rng))),
    "subclassed model": Case(subclassed, _vectors),
    "named inputs given as a dict": Case(two_inputs, lambda rng: (lambda x, y: ({"a": x, "b": x}, y))(*_vectors(rng)), refused="as a dict"),
    "BN inside a custom Layer": Case(bn_in_a_custom_layer, _images),
}


def _fit(case: Case, home=None):
    import keras
    import tensorflow as tf

    import bnviz

    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    x, y = case.data(rng)
    keras.utils.set_random_seed(1)
    model = case.build()
    part = lambda s: (_sliced(x, s), y[s])  # noqa: E731
    split = {"train_data": part(slice(0, 128)), "validation_data": part(slice(128, 144)), "test_data": part(slice(144, None))}
    probe = bnviz.Probe(name="zoo", home=home, batch_size=BATCH, **split) if home else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, shuffle=True, callbacks=[probe] if probe else [])
    return model, probe, [str(w.message) for w in caught if "bnviz" in str(w.message)]


def _sliced(x, index):
    """Samples `index` of one input array, or of each of several (a list, or a dict by name)."""
    if isinstance(x, dict):
        return {k: a[index] for k, a in x.items()}
    return [a[index] for a in x] if isinstance(x, list) else x[index]


@pytest.mark.parametrize("kind", list(ZOO))
def test_every_kind_of_model_trains_identically_and_is_followed_or_refused_in_one_sentence(kind, tmp_path):
    from bnviz.tf.models import batch_norm_layers

    case = ZOO[kind]
    probed, probe, said = _fit(case, tmp_path)
    plain, _, _ = _fit(case)
    for a, b in zip(plain.weights, probed.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{kind}: {a.path}")
    if case.refused:
        assert probe.run_id is None and len(said) == 1 and case.refused in said[0] and "unprobed" in said[0]
        with pytest.raises(RuntimeError, match=case.refused):
            probe.run  # noqa: B018  (the notebook object says why there is none)
        return
    assert not said, said
    data = Store(tmp_path).load_run(probe.run_id)
    assert data.run.status == "done", data.run.error
    assert set(data.layers) == {layer.name for layer in batch_norm_layers(probed)}  # every BN layer it claims, with records
    assert all(len(trace.steps) >= 3 for trace in data.layers.values())
    findings = diagnose(data)
    assert findings[0].cause not in FALSE_CAUSES, (kind, findings[0].title, findings[0].detail)
    text = " ".join(f"{f.title} {f.detail}" for f in findings).lower()
    assert " nan" not in text and "(nan" not in text, text
