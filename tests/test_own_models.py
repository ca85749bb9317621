"""The own-model scenario bank: users' own Keras scripts, run through the user's path (`bnviz.Probe`
in a plain `fit`, `bnviz inspect` of a saved model), each asserting the verdict's cause *and* the
numbers behind it against what plain Keras/NumPy measure.

The data is what users reach for: scikit-learn's digits, classes 0–5, raw pixels (0–240) upscaled to
32×32×3, and a hand-written copy of the notebook's +BN model (three Conv-ReLU-BN-Pool blocks).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from bnviz.diagnose import BN_CAUSES, diagnose, fingerprint
from bnviz.store import Store
from tests.test_inspect import run_cli

pytestmark = pytest.mark.slow  # real training: ~4 s per run on 2 cores


@pytest.fixture(scope="module")
def digits():
    return load_digits_splits()


def load_digits_splits() -> dict:
    """Digits 0–5 as raw 32×32×3 pixels, split 700 / 180 / 203."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < 6
    x = np.kron((d.images[keep] * 15).astype("float32")[..., None], np.ones((1, 4, 4, 3), "float32"))  # 32×32×3, 0–240
    y = d.target[keep].astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return {"train": (x[:700], y[:700]), "val": (x[700:880], y[700:880]), "test": (x[880:], y[880:])}


def notebook_model(momentum: float, dense_bn: bool = False, bn: bool = True):
    """The notebook's +BN model as a user writes it by hand (BN after each ReLU conv)."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    for filters in (16, 32, 16):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.BatchNormalization(momentum=momentum)(x) if bn else x
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    if dense_bn:
        x = layers.BatchNormalization(momentum=momentum, name="bn_dense1")(layers.Dense(16, activation="relu")(x))
        x = layers.BatchNormalization(momentum=momentum, name="bn_dense2")(layers.Dense(16, activation="relu")(x))
    return keras.Model(inputs, layers.Dense(6, activation="softmax")(x))


def probe_run(
    home: Path,
    digits: dict,
    momentum: float,
    epochs: int,
    splits=("train", "val", "test"),
    batch_size: int = 32,
    test_scale: float = 1.0,
    seed: int = 0,
    **model_args,
):
    """Train the user's model with bnviz.Probe given `splits`; returns (model, run data, findings, bnviz warnings)."""
    import keras

    import bnviz

    keras.utils.set_random_seed(seed)
    model = notebook_model(momentum, **model_args)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    given = {"train": digits["train"], "val": digits["val"], "test": (digits["test"][0] * test_scale, digits["test"][1])}
    names = {"train": "train_data", "val": "validation_data", "test": "test_data"}
    probe = bnviz.Probe(name="mine", home=home, batch_size=batch_size, **{names[s]: given[s] for s in splits})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*digits["train"], epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[probe])
    data = Store(home).load_run(probe.run_id)
    return model, data, diagnose(data), [str(w.message) for w in caught if "bnviz" in str(w.message)]


def by_key(findings):
    return {f.key: f for f in findings}


def plain_inference_accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def test_probe_with_all_data_names_stale_initial_values_with_their_weight(tmp_path, digits):
    model, data, findings, said = probe_run(tmp_path, digits, 0.99, 3)
    top, stale = findings[0], by_key(findings)["stale_initial_values"]
    assert top.cause == "stale_initial_values" and not said
    assert stale.numbers["steps"] == 66 and stale.numbers["init_weight"] == pytest.approx(0.99**66)
    test = data.evaluations["final"].accuracy["test"]
    assert test == pytest.approx(plain_inference_accuracy(model, *digits["test"]), abs=1e-6)  # the same number Keras gives
    assert data.evaluations["recalibrated"].accuracy["test"] - test >= 0.05 and data.evaluations["recalibrated"].calibrated_on == "train"
    w, r2, _ = fingerprint(data)  # the post-mortem's estimate, checked where t is known
    assert r2 > 0.9 and math.log(w) / math.log(0.99) == pytest.approx(66, rel=0.2)


def test_a_good_momentum_is_healthy(tmp_path, digits):
    _, data, findings, _ = probe_run(tmp_path, digits, 0.8, 3)
    assert findings[0].cause == "healthy" and "fit the data" in findings[0].detail
    final, recal = data.evaluations["final"].accuracy, data.evaluations["recalibrated"].accuracy
    assert abs(recal["test"] - final["test"]) < 0.05


def test_probe_without_train_data_says_so_and_judges_by_the_training_batches_it_saw(tmp_path, digits):
    _, data, findings, said = probe_run(tmp_path, digits, 0.99, 3, splits=("val", "test"))
    assert len(said) == 1 and "train_data=" in said[0]
    assert findings[0].cause == "stale_initial_values" and "training batches the probe saw" in findings[0].detail
    assert "recalibrated" not in data.evaluations and "train_data=" in by_key(findings)["missing_evidence"].detail
    assert "healthy" not in findings[0].cause


def test_probe_with_test_data_only_never_calibrates_on_it(tmp_path, digits):
    _, data, findings, _ = probe_run(tmp_path, digits, 0.99, 3, splits=("test",))
    assert findings[0].cause in (*BN_CAUSES, "insufficient_evidence") and findings[0].cause != "healthy"
    assert "recalibrated" not in data.evaluations and data.run.info["missing_evidence"]["recalibrated"].startswith("No train images")


def test_a_test_only_shift_through_the_probe_is_a_shift_not_overfitting(tmp_path, digits):
    _, data, findings, _ = probe_run(tmp_path, digits, 0.8, 3, test_scale=0.5)
    acc = data.evaluations["final"].accuracies()
    assert findings[0].cause == "test_shift" and acc["val"] - acc["test"] > 0.1 and acc["test_batchstats"] > acc["test"] + 0.1
    assert by_key(findings)["test_shift"].numbers["test_shift"] > 0.3 and "Overfitting" not in findings[0].title


def test_batch_size_two_with_dense_bn_models_the_variance_bias(tmp_path, digits):
    small = {s: (x[:200], y[:200]) for s, (x, y) in digits.items()}
    _, data, findings, _ = probe_run(tmp_path, small, 0.9, 1, batch_size=2, dense_bn=True)
    noise = by_key(findings)["batch_noise"]
    assert noise.numbers["variance_bias"] == pytest.approx(math.sqrt(2)) and "biased" in noise.detail
    layer = by_key(findings)["layer_bn_dense1"]
    assert layer.numbers["own_scale_error"] < 1 / 1.12  # the moving variance is too small: not "fits the data"
    assert "fit the data" not in findings[0].detail or findings[0].cause in BN_CAUSES


def test_a_model_without_bn_is_never_given_a_bn_cause(tmp_path, digits):
    _, data, findings, _ = probe_run(tmp_path, digits, 0.99, 2, bn=False)
    assert findings[0].cause not in BN_CAUSES and not data.layers


# --- the post-mortem of a saved model ---------------------------------------------------------------
def save_images(folder: Path, x: np.ndarray, y: np.ndarray) -> Path:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x.astype(np.uint8), y, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{i}.png")
    return folder


def trained_and_saved(tmp_path: Path, digits: dict, momentum: float, epochs: int, late_learning_rate: float | None = None, seed: int = 0) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    model = notebook_model(momentum)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*digits["train"], epochs=epochs, batch_size=32, verbose=0)
    if late_learning_rate:
        model.optimizer.learning_rate.assign(late_learning_rate)
        model.fit(*digits["train"], epochs=2, batch_size=32, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def inspect(capsys, tmp_path: Path, model: Path, data: Path, *extra: str):
    code, out, err = run_cli(capsys, "inspect", str(model), "--data", str(data), "--home", str(tmp_path / "home"), *extra)
    assert code == 0, err
    run_id = next(line.split()[1] for line in out.splitlines() if line.startswith("Run "))
    return inspected(tmp_path, run_id)


def inspected(tmp_path: Path, run_id: str):
    data = Store(tmp_path / "home").load_run(run_id)
    return data, diagnose(data)


def test_inspect_after_a_short_run_finds_the_initial_values_and_their_steps(tmp_path, digits, capsys):
    model = trained_and_saved(tmp_path, digits, 0.99, 3)
    folder = save_images(tmp_path / "images", *digits["train"])
    data, findings = inspect(capsys, tmp_path, model, folder)
    stale = by_key(findings)["stale_initial_values"]
    assert findings[0].cause == "stale_initial_values" and "steps" not in stale.numbers
    assert stale.numbers["implied_steps"] == pytest.approx(66, rel=0.2) and stale.numbers["fingerprint_r2"] > 0.9
    _, told = inspect(capsys, tmp_path, model, folder, "--steps", "66")
    assert by_key(told)["stale_initial_values"].numbers["init_weight"] == pytest.approx(0.99**66)


def test_inspect_after_a_long_run_with_a_learning_rate_jump_is_not_called_initial_values(tmp_path, digits, capsys):
    model = trained_and_saved(tmp_path, digits, 0.99, 20, late_learning_rate=0.05)
    data, findings = inspect(capsys, tmp_path, model, save_images(tmp_path / "images", *digits["train"]))
    assert findings[0].cause == "statistics_off"  # lag or batch effects: named by what the numbers show, not by a guessed history
    recal, final = data.evaluations["recalibrated"].accuracy["test"], data.evaluations["final"].accuracy["test"]
    assert findings[0].numbers["accuracy_drop"] == pytest.approx(recal - final) and recal - final >= 0.05
    stale = by_key(findings).get("stale_initial_values")
    assert stale is None or (stale.severity in ("ok", "info") and "not the fingerprint of initial values" in stale.detail)


def test_a_test_only_shift_through_inspect_is_a_shift(tmp_path, digits, capsys):
    model = trained_and_saved(tmp_path, digits, 0.8, 3)
    folder = save_images(tmp_path / "images", *digits["train"])
    test = save_images(tmp_path / "test", digits["test"][0] * 0.5, digits["test"][1])
    data, findings = inspect(capsys, tmp_path, model, folder, "--test", str(test))
    assert findings[0].cause == "test_shift" and "nan" not in " ".join(f.detail for f in findings)
    assert data.run.info["input_shift"]["first_bn_input"]["test"] > 0.3
