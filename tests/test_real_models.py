"""`bnviz.Probe` on the models practitioners bring: a `keras.applications` MobileNetV2 (52 BN layers,
depthwise convolutions, ReLU6; α 0.35 and 32² so CI trains it in seconds) nested inside the user's
Functional model as when fine-tuning, `weights=None` (offline). ResNet50 (53 BN layers after
convolutions with a bias, 23.5 M weights) passed the same tests once and is measured at 224² by
`python -m bench.real_models` (docs/real-models.md); BN after a biased convolution and `Add` are in
tests/test_zoo.py."""

from __future__ import annotations

import numpy as np
import pytest

from bnviz.diagnose import ordered_layers
from bnviz.stats import histogram_values
from bnviz.store import Store

SIZE, BATCH, STEPS = 32, 8, 6
FLOAT_ARRAYS_PER_CHANNEL = 9  # moving, batch, population, inference-mode population: mean and variance each; the i.i.d. spread


def _nested(classes: int):
    """The user's model around a keras.applications base: Input → base → pooling → Dense."""
    import keras

    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.35)
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(classes, activation="softmax")(keras.layers.GlobalAveragePooling2D()(base(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A short fit of the nested model with the probe; (store, run, model, BN layer count)."""
    import keras

    import bnviz
    from bnviz.data import synthetic

    bn_layers = 52
    data = synthetic(SIZE, seed=0, train_per_class=STEPS * BATCH // 6, val_per_class=4, test_per_class=4)
    keras.utils.set_random_seed(0)
    model = _nested(data.num_classes)
    home = tmp_path_factory.mktemp("mobilenetv2")
    probe = bnviz.Probe(
        name="MobileNetV2",
        home=home,
        train_data=(data.x_train, data.y_train),
        validation_data=(data.x_val, data.y_val),
        test_data=(data.x_test, data.y_test),
        batch_size=BATCH,
        display=False,
    )
    model.fit(data.x_train, data.y_train, batch_size=BATCH, epochs=1, verbose=0, callbacks=[probe])
    store = Store(home)
    return store, store.get_run(probe.run_id), model, bn_layers


@pytest.mark.slow
def test_every_bn_layer_of_a_nested_application_is_followed(recorded):
    store, run, model, bn_layers = recorded
    data = store.load_run(run.id)
    assert run.status == "done" and len(run.info["bn_layers"]) == bn_layers == len(data.layers)
    steps = data.layers[next(iter(data.layers))].steps
    assert list(steps) == sorted(steps) and steps[0] == 0 and steps[-1] == STEPS
    order = ordered_layers(data)  # network order inside the nested base: the verdict's "first layer that goes wrong" reads it
    assert order[0] == "bn_Conv1" and order[-1] == "Conv_1_bn" and order.index("block_2_expand_BN") < order.index("block_10_expand_BN"), order[:4]
    for name, trace in data.layers.items():
        assert np.isfinite(trace.moving_mean).all() and np.isfinite(trace.moving_var).all(), name
        assert np.isfinite(trace.measured().pop_mean[-1]).all() and np.isfinite(trace.infer_mean[-1]).all(), name  # the last record measures both
        assert (trace.hist_train.sum(axis=1) > 0).all() and (trace.hist_infer.sum(axis=1) > 0).all(), name


@pytest.mark.slow
def test_a_record_stays_small_at_fifty_bn_layers(recorded):
    """Per record: a few float32 arrays per channel and two 40-bin histograms per layer, each made of
    values thinned to the record's budget shared by all layers — never the activations."""
    store, run, _, bn_layers = recorded
    data = store.load_run(run.id)
    channels = sum(trace.moving_mean.shape[1] for trace in data.layers.values())
    per_layer = histogram_values(bn_layers)
    assert per_layer < 20_000
    for trace in data.layers.values():
        assert trace.hist_train.sum(axis=1).max() < 2 * per_layer  # the stride keeps under twice the values asked
    record_bytes = store.path.stat().st_size / len(data.probes)
    assert record_bytes < 2 * (channels * FLOAT_ARRAYS_PER_CHANNEL * 4 + bn_layers * 3 * 41 * 8)


@pytest.mark.slow
def test_the_diagnosis_reads_a_fifty_layer_run(recorded):
    from bnviz.diagnose import diagnose

    store, run, _, _ = recorded
    top, *_ = diagnose(store.load_run(run.id))
    assert top.title and top.detail


@pytest.mark.slow
def test_an_efficientnet_base_with_stochastic_depth_is_not_read_as_non_iid(tmp_path):
    """EfficientNetB0 drops whole residual branches per image (Dropout with noise_shape) and, at 32²,
    feeds its last blocks 1×1 maps whose batch means the BN layers upstream pin: its stem must be
    its first BN layer, the layers after the first Dropout flagged, and shuffled batches never read
    as non-i.i.d. (they did: a pinned spread of 1e-7 SD, and Keras listing the base in reverse)."""
    import keras

    import bnviz
    from bnviz.data import synthetic
    from bnviz.diagnose import diagnose

    data = synthetic(SIZE, seed=0, train_per_class=STEPS * BATCH // 6, val_per_class=4, test_per_class=4)
    keras.utils.set_random_seed(0)
    base = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(data.num_classes, activation="softmax")(keras.layers.GlobalAveragePooling2D()(base(inputs))))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    splits = {"train_data": (data.x_train, data.y_train), "validation_data": (data.x_val, data.y_val), "test_data": (data.x_test, data.y_test)}
    probe = bnviz.Probe(name="EfficientNetB0", home=tmp_path, batch_size=BATCH, display=False, **splits)
    model.fit(data.x_train, data.y_train, batch_size=BATCH, epochs=1, verbose=0, shuffle=True, callbacks=[probe])
    run = Store(tmp_path).load_run(probe.run_id)
    rows = run.run.info["bn_layers"]
    assert rows[0]["name"] == ordered_layers(run)[0] == "stem_bn" and not rows[0]["after_noise"]
    assert rows[-1]["name"] == "top_bn" and rows[-1]["after_noise"]  # the blocks' Dropout comes before it
    top = diagnose(run)[0]
    assert top.cause != "non_iid_batches", top.detail
