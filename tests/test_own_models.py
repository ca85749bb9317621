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

from bnviz.diagnose import BN_CAUSES, diagnose, fingerprint, ordered_layers
from bnviz.store import Store
from tests.test_inspect import run_cli

pytestmark = pytest.mark.slow  # real training: ~4 s per run on 2 cores


@pytest.fixture(scope="module")
def digits():
    return load_digits_splits()


def load_digits_splits() -> dict:
    """Digits 0–5 as raw 32×32×3 pixels, split 700 / 180 / 203."""
    x, y = _digit_images(0, 6)
    return {"train": (x[:700], y[:700]), "val": (x[700:880], y[700:880]), "test": (x[880:], y[880:])}


def fine_tune_splits() -> dict:
    """The fine-tuning task: digits 6–9 (labels 0–3) on a bright background, x·0.5 + 120 (a photo-like
    input, far from the pretraining digits' zero background), split 428 / 143 / 143."""
    x, y = _digit_images(6, 10)
    x = x * 0.5 + 120
    return {"train": (x[:428], y[:428]), "val": (x[428:571], y[428:571]), "test": (x[571:], y[571:])}


def _digit_images(low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits low..high−1 as raw 32×32×3 pixels (0–240), labels from 0, in a fixed shuffled order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = (d.target >= low) & (d.target < high)
    x = np.kron((d.images[keep] * 15).astype("float32")[..., None], np.ones((1, 4, 4, 3), "float32"))  # 32×32×3, 0–240
    y = (d.target[keep] - low).astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    return x[order], y[order]


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

    keras.utils.set_random_seed(seed)
    model = notebook_model(momentum, **model_args)
    given = {"train": digits["train"], "val": digits["val"], "test": (digits["test"][0] * test_scale, digits["test"][1])}
    return fit_with_probe(home, model, digits["train"], {s: given[s] for s in splits}, epochs, batch_size)


def fit_with_probe(home: Path, model, train: tuple, given: dict, epochs: int, batch_size: int):
    """Compile and fit `model` on `train` with bnviz.Probe given the splits `given`; returns (model, run data, findings, bnviz warnings)."""
    import keras

    import bnviz

    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    names = {"train": "train_data", "val": "validation_data", "test": "test_data"}
    probe = bnviz.Probe(name="mine", home=home, batch_size=batch_size, **{names[s]: data for s, data in given.items()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*train, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[probe])
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


# --- fine-tuning a pretrained model (the Keras transfer-learning guide's three ways) --------------------
FINE_TUNE_MODES = ("end_to_end", "frozen", "training_false")  # base trainable; base.trainable = False; base(x, training=False)
_PRETRAINED: dict[int, list] = {}


def pretrained_weights(digits: dict, seed: int) -> list:
    """The notebook model pretrained on digits 0–5 (3 epochs, m = 0.9, so its statistics have settled), once per seed."""
    import keras

    if seed not in _PRETRAINED:
        keras.utils.set_random_seed(seed)
        model = notebook_model(0.9)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        model.fit(*digits["train"], epochs=3, batch_size=32, verbose=0)
        _PRETRAINED[seed] = model.get_weights()
    return _PRETRAINED[seed]


def fine_tune_run(home: Path, digits: dict, mode: str, seed: int = 0, batch_size: int = 4):
    """Fine-tune the pretrained base (its BN at Keras' default momentum 0.99) with a new 4-class head on
    `fine_tune_splits()` for one epoch at `batch_size`, as the user writes it for `mode`; returns
    (base's BN moving statistics before, model, run data, findings)."""
    import keras
    from keras import layers

    pretrained = notebook_model(0.9)
    pretrained.set_weights(pretrained_weights(digits, seed))
    base = keras.Model(pretrained.inputs, pretrained.layers[-2].output, name="base")  # up to Flatten
    bn = [layer for layer in base.layers if isinstance(layer, layers.BatchNormalization)]
    for layer in bn:
        layer.momentum = 0.99
    base.trainable = mode != "frozen"
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    features = base(inputs, training=False) if mode == "training_false" else base(inputs)
    model = keras.Model(inputs, layers.Dense(4, activation="softmax")(features))
    before = [[w.copy() for w in layer.get_weights()] for layer in bn]
    task = fine_tune_splits()
    return (before, *fit_with_probe(home, model, task["train"], task, 1, batch_size)[:3])


def moving_statistics(model) -> list[list[np.ndarray]]:
    from keras import layers

    base = model.get_layer("base")
    return [layer.get_weights() for layer in base.layers if isinstance(layer, layers.BatchNormalization)]


def test_fine_tuning_with_bn_in_training_mode_names_the_rewritten_statistics(tmp_path, digits):
    """Batch 4, 107 steps: the pretrained statistics move toward the bright digits but still weigh 0.99¹⁰⁷ = 34 %."""
    before, model, data, findings = fine_tune_run(tmp_path, digits, "end_to_end")
    top, moved = findings[0], by_key(findings)["overwritten_in_fine_tuning"]
    assert top.cause == "overwritten_in_fine_tuning" and top.severity in ("critical", "warning") and "base.trainable = False" in top.remedies[0]
    acc, recal = data.evaluations["final"].accuracies(), data.evaluations["recalibrated"].accuracies()
    assert recal["test"] - acc["test"] >= 0.1 and acc["test_batchstats"] - acc["test"] >= 0.1  # training fine, inference not (0.12: deterministic ops)
    first = data.layers[ordered_layers(data)[0]]  # named by how many BN layers the process built before
    assert np.allclose(first.moving_mean[0], before[0][2]) and np.allclose(first.moving_var[0], before[0][3])  # step 0 holds the pretrained values
    expected = max(np.median(np.abs(t.moving_mean[-1] - t.moving_mean[0]) / np.sqrt(t.measured().pop_var[-1] + 1e-3)) for t in data.layers.values())
    assert moved.numbers["moved_sd"] == pytest.approx(expected, rel=1e-4) and moved.numbers["moved_sd"] >= 0.25
    assert (moved.numbers["steps"], moved.numbers["batch_size"]) == (107, 4) and "after 107 steps at batch size 4" in top.detail


def test_a_frozen_base_keeps_its_statistics_and_is_healthy(tmp_path, digits):
    before, model, data, findings = fine_tune_run(tmp_path, digits, "frozen")
    top, kept = findings[0], by_key(findings)["frozen_as_intended"]
    assert top.cause == "healthy" and "kept them" in top.detail and "overwritten_in_fine_tuning" not in by_key(findings)
    assert kept.numbers["moved_sd"] == 0 and kept.numbers["scale_change"] == 1 and kept.numbers["frozen"] == 3
    assert all(np.array_equal(a, b) for layer, old in zip(moving_statistics(model), before, strict=True) for a, b in zip(layer, old, strict=True))
    acc = data.evaluations["final"].accuracies()
    assert acc["test"] == pytest.approx(acc["test_batchstats"])  # frozen BN normalises alike in both modes


def test_training_false_on_the_base_is_overridden_by_fit_in_keras_3(tmp_path, digits):
    """The guide's `base(inputs, training=False)` with a trainable base: Keras 3.15's fit calls the model with
    training=True, which overrides it, so BN runs in training mode and rewrites its statistics (keras-team/keras#20285)."""
    before, model, data, findings = fine_tune_run(tmp_path, digits, "training_false")
    after = moving_statistics(model)
    assert not np.allclose(after[0][2], before[0][2]) and not np.allclose(after[0][0], before[0][0])  # moving mean and gamma both moved
    assert findings[0].cause == "overwritten_in_fine_tuning" and "training=False does not prevent this" in findings[0].detail


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
