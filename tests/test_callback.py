"""bnviz.Probe in the user's own fit: the same records, no change to training, any model shape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from bnviz.config import ProbeConfig
from bnviz.store import Store
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
PROBE = ProbeConfig(every=2, probe_batch=16, population_samples=32, budget=100.0)  # budget 100: every record made live, mid-training


def residual_model(num_classes: int, dropout: float = 0.3):
    """A user-style Functional model: a residual block with BN after convolutions, a synchronized BN
    after Dense, Dropout."""
    import keras
    from keras import layers

    inputs = keras.Input((TINY, TINY, 3))
    x = layers.Conv2D(4, 3, padding="same")(layers.Rescaling(1 / 255)(inputs))
    a = layers.BatchNormalization(name="res_bn_a")(x)
    b = layers.BatchNormalization(name="res_bn_b")(layers.Conv2D(4, 3, padding="same")(layers.ReLU()(a)))
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(layers.Add()([a, b])))
    x = layers.Dropout(dropout)(layers.BatchNormalization(momentum=0.9, synchronized=True, name="dense_bn")(layers.Dense(8)(x)))
    model = keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x), name="residual")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _fit(data, home: Path | None, model_fn=residual_model, **probe_args):
    import keras
    import tensorflow as tf

    import bnviz

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(3)
    model = model_fn(data.num_classes)
    callbacks = [bnviz.Probe(name="mine", home=home, batch_size=16, probe=PROBE, **probe_args)] if home else []
    model.fit(data.x_train, data.y_train, batch_size=16, epochs=2, verbose=0, shuffle=True, callbacks=callbacks)
    return model, (callbacks[0] if callbacks else None)


@pytest.fixture(scope="module")
def probed(tiny_data, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    d = tiny_data
    model, probe = _fit(d, home, test_data=(d.x_test, d.y_test), validation_data=(d.x_val, d.y_val), train_data=(d.x_train[:32], d.y_train[:32]))
    return model, probe, Store(home)


@pytest.mark.slow
def test_probe_callback_does_not_change_training(tiny_data, probed):
    plain, _ = _fit(tiny_data, None)
    model, probe, _ = probed
    assert probe.run_id and probe.recorder.step == 18
    for a, b in zip(plain.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_probe_callback_records_every_bn_layer_like_a_bnviz_run(tiny_data, probed):
    model, probe, store = probed
    run = store.get_run(probe.run_id)
    data = store.load_run(run.id)
    assert (run.status, run.preset, run.info["source"]) == ("done", "own", "callback")
    assert [(layer["name"], layer["after"], layer["momentum"]) for layer in run.info["bn_layers"]] == [
        ("res_bn_a", "Conv2D", 0.99),
        ("res_bn_b", "Conv2D", 0.99),
        ("dense_bn", "Dense", 0.9),
    ]
    assert [layer["synchronized"] for layer in run.info["bn_layers"]] == [False, False, True]
    assert set(data.layers) == {"res_bn_a", "res_bn_b", "dense_bn"} and len(data.steps) == 18
    assert data.layers["dense_bn"].moving_mean.shape == (len(data.probes), 8)
    np.testing.assert_allclose(data.layers["dense_bn"].moving_mean[-1], model.get_layer("dense_bn").moving_mean.numpy(), rtol=1e-6)
    assert probe.bn_probe.live_records == len(data.probes) > 3  # budget 100: all made live
    final = data.evaluations["final"]
    assert all(0 <= final.accuracy_of(k) <= 1 for k in ("train", "val", "test", "test_batchstats", "fit"))
    assert Path(run.model_path).exists()


def test_population_statistics_on_any_axis_match_numpy(tiny_data, tmp_path):
    """BN over axis 1 (rows of a channels-last map): per-row moments over batch, columns and channels."""
    import keras
    from keras import layers

    def model_fn(num_classes: int):
        inputs = keras.Input((TINY, TINY, 3))
        x = layers.BatchNormalization(axis=1, name="rows_bn")(layers.Conv2D(2, 3, padding="same")(inputs))
        model = keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(layers.Flatten()(x)))
        model.compile("sgd", "sparse_categorical_crossentropy")
        return model

    d = tiny_data
    sample = d.x_train[:32]
    _, probe = _fit(d, tmp_path, model_fn, validation_data=(d.x_val, d.y_val), train_data=(sample, d.y_train[:32]))
    trace = Store(tmp_path).load_run(probe.run_id).layers["rows_bn"]
    keras.utils.set_random_seed(3)  # as _fit: the model before its first step, whose weights the step-0 record measures
    initial = model_fn(d.num_classes)
    conv_out = keras.Model(initial.inputs, initial.get_layer("rows_bn").input).predict(sample, verbose=0).astype(np.float64)
    assert trace.steps[0] == 0 and trace.pop_mean.shape == (len(trace.steps), TINY)
    np.testing.assert_allclose(trace.pop_mean[0], conv_out.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(trace.pop_var[0], conv_out.var(axis=(0, 2, 3)), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_frozen_bn_in_a_nested_sequential_model_from_a_dataset(tiny_data, tmp_path):
    import keras
    import tensorflow as tf
    from keras import layers

    def model_fn(num_classes: int):
        backbone = keras.Sequential([keras.Input((TINY, TINY, 3)), layers.Conv2D(4, 3), layers.BatchNormalization(name="frozen_bn")], name="backbone")
        backbone.trainable = False
        inputs = keras.Input((TINY, TINY, 3))
        model = keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(layers.Flatten()(backbone(inputs))))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
        return model

    d = tiny_data
    test = tf.data.Dataset.from_tensor_slices((d.x_test, d.y_test)).batch(8)
    _, probe = _fit(d, tmp_path, model_fn, test_data=test)
    run = Store(tmp_path).get_run(probe.run_id)
    assert run.status == "done" and run.info["bn_layers"][0]["trainable"] is False
    assert "always normalises with its moving statistics" in run.info["notes"][0]
    data = Store(tmp_path).load_run(run.id)
    final = data.evaluations["final"]
    assert final.accuracy_of("test") >= 0 and "train" not in final.accuracy and not np.isnan(data.steps["accuracy"]).any()
    np.testing.assert_array_equal(data.layers["frozen_bn"].moving_mean[0], data.layers["frozen_bn"].moving_mean[-1])  # frozen: never updated


def sequential_without_input(num_classes: int):
    """The shortest user model: no Input layer, so Keras builds it only when fit starts."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [layers.Conv2D(4, 3), layers.BatchNormalization(), layers.Flatten(), layers.Dropout(0.2), layers.Dense(num_classes, activation="softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_a_sequential_model_without_input_is_probed_and_trains_identically(tiny_data, tmp_path):
    plain, _ = _fit(tiny_data, None, sequential_without_input)
    model, probe = _fit(tiny_data, tmp_path, sequential_without_input, validation_data=(tiny_data.x_val, tiny_data.y_val))
    assert Store(tmp_path).get_run(probe.run_id).status == "done" and len(Store(tmp_path).load_run(probe.run_id).probes) > 3
    for a, b in zip(plain.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def custom_compiled(num_classes: int):
    """A user's model compiled with a loss function and an optimizer class Keras has no registration for."""
    import keras

    class MyAdam(keras.optimizers.Adam):
        pass

    def my_loss(y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

    model = sequential_without_input(num_classes)
    model.compile(MyAdam(), my_loss, metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_a_model_compiled_with_an_unregistered_loss_and_optimizer_is_probed(tiny_data, tmp_path):
    """The probe's copy is not compiled: `clone_model` alone would recompile it from the config and fail
    to find `my_loss`, leaving the run with no record."""
    model, probe = _fit(tiny_data, tmp_path, custom_compiled, validation_data=(tiny_data.x_val, tiny_data.y_val))
    run = Store(tmp_path).get_run(probe.run_id)
    assert run.status == "done" and run.error is None and len(Store(tmp_path).load_run(probe.run_id).probes) > 3
    assert model.compiled and model.loss.__name__ == "my_loss"  # the user's model is left as it was
    model.evaluate(tiny_data.x_val, tiny_data.y_val, verbose=0)


@pytest.mark.slow
def test_a_fault_in_the_probe_stops_the_probe_not_training(tiny_data, tmp_path, monkeypatch):
    from bnviz.tf.probe import RecordMaker

    def fail(self, snapshot, population=True, inference=True):
        raise OSError("No space left on device")

    monkeypatch.setattr(RecordMaker, "make", fail)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, probe = _fit(
            tiny_data, tmp_path, sequential_without_input, validation_data=(tiny_data.x_val, tiny_data.y_val), train_data=(tiny_data.x_train, tiny_data.y_train)
        )
    plain, _ = _fit(tiny_data, None, sequential_without_input)
    for a, b in zip(plain.weights, model.weights, strict=True):  # all 18 steps trained, as without the probe
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    run = Store(tmp_path).get_run(probe.run_id)
    assert probe.recorder.step < 18 and run.status == "failed" and run.error == "The probe stopped: OSError: No space left on device"
    assert [str(w.message) for w in caught if "bnviz" in str(w.message)] == [
        "bnviz.Probe stopped recording (OSError: No space left on device); training goes on."
    ]


def test_a_model_with_two_inputs_is_followed_and_its_samples_kept_per_input(tmp_path):
    import keras
    from keras import layers

    import bnviz
    from bnviz.tf.own import load_samples, samples_path

    a, b = keras.Input((4,)), keras.Input((3,))
    model = keras.Model([a, b], layers.Dense(2, activation="softmax")(layers.BatchNormalization()(layers.Concatenate()([a, b]))))
    model.compile("sgd", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, z, y = rng.random((64, 4)).astype("float32") * 5, rng.random((64, 3)).astype("float32"), rng.integers(0, 2, 64)
    probe = bnviz.Probe(home=tmp_path, batch_size=16, train_data=([x, z], y), test_data=([x[:16], z[:16]], y[:16]))
    model.fit([x, z], y, batch_size=16, epochs=2, verbose=0, callbacks=[probe])
    data = Store(tmp_path).load_run(probe.run_id)
    assert data.run.status == "done" and list(data.layers) == [model.layers[3].name]
    pooled = np.concatenate([x, z], axis=1)  # the BN input: the concatenation, whose population mean numpy knows
    np.testing.assert_allclose(data.layers[model.layers[3].name].pop_mean[0], pooled.mean(axis=0), rtol=1e-4)
    kept = load_samples(samples_path(Store(tmp_path).models_dir, probe.run_id))["train"][0]
    np.testing.assert_array_equal(kept.arrays[1], z)


USER_SCRIPT = """
import numpy as np, keras
import bnviz
from tests.test_callback import residual_model
from bnviz.data import synthetic

d = synthetic(20, seed=0, train_per_class=12, val_per_class=4, test_per_class=4)
keras.utils.set_random_seed(0)
model = residual_model(d.num_classes)
model.fit(d.x_train, d.y_train, validation_data=(d.x_val, d.y_val), epochs=2, batch_size=16, verbose=0,
          callbacks=[bnviz.Probe(name="my-resnet", test_data=(d.x_test, d.y_test), batch_size=16)])
"""


def _cli(*args: str, cwd: Path, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bnviz", *args, "--json"], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_a_user_script_then_diagnose_and_recalibrate_through_the_cli(tmp_path):
    """The callback from a script in another folder (./bnviz-runs by default), then the CLI on its run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("BNVIZ_HOME", None)
    (tmp_path / "train_mine.py").write_text(textwrap.dedent(USER_SCRIPT))
    out = subprocess.run([sys.executable, "train_mine.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    runs = _cli("list", cwd=tmp_path, env=env)["runs"]
    assert [(r["name"], r["status"], r["preset"]) for r in runs] == [("my-resnet", "done", "own")]
    findings = _cli("diagnose", runs[0]["id"], cwd=tmp_path, env=env)["findings"]
    assert findings and all(f["title"] for f in findings)
    refused = subprocess.run([sys.executable, "-m", "bnviz", "recalibrate", runs[0]["id"]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert refused.returncode == 2 and "kept no train images" in refused.stderr and "--calibrate-on" in refused.stderr  # never test images unasked
    result = _cli("recalibrate", runs[0]["id"], "--calibrate-on", "test", "--save", "fixed.keras", cwd=tmp_path, env=env)
    assert result["after"]["samples"] > 0 and result["after"]["calibrated_on"] == "test" and result["transductive"] and (tmp_path / "fixed.keras").exists()
    assert (tmp_path / "bnviz-runs" / "runs.sqlite").exists()


@pytest.mark.slow
def test_pip_installs_the_package_with_a_bnviz_command(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "tests", "bench", "pages", "bnviz-runs", "build", "*.egg-info", "__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    metadata = next(target.glob("bnviz-*.dist-info")) / "METADATA"
    assert "Requires-Dist: keras==3.15.*" in metadata.read_text()
    env = {**os.environ, "PYTHONPATH": str(target), "BNVIZ_HOME": str(tmp_path / "home")}
    listed = subprocess.run([sys.executable, str(target / "bin" / "bnviz"), "list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.strip() == "No runs yet.", listed.stderr
