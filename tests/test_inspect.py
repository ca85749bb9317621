"""bnviz inspect: a saved model examined on image data, and every bad input refused cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnviz.data import DataError
from bnviz.store import Store
from tests.conftest import TINY, one_bit_png, zip_bytes


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`bnviz ARGS` in this process (TensorFlow is loaded once): exit code, stdout, stderr."""
    from bnviz.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def image_files(data, count: int = 60) -> dict[str, bytes]:
    """PNG files of the first `count` training images, one folder per class."""
    files = {}
    for i, (x, y) in enumerate(zip(data.x_train[:count], data.y_train[:count], strict=True)):
        buffer = __import__("io").BytesIO()
        Image.fromarray(x.astype(np.uint8)).save(buffer, "PNG")
        files[f"images/{data.class_names[y]}/{i}.png"] = buffer.getvalue()
    return files


@pytest.fixture(scope="module")
def saved(tiny_data, tmp_path_factory):
    """A trained residual model with BN after Conv and Dense, saved; the data as a folder and a zip."""
    import keras

    from tests.test_callback import residual_model

    folder = tmp_path_factory.mktemp("inspect")
    keras.utils.set_random_seed(0)
    model = residual_model(tiny_data.num_classes)
    model.fit(tiny_data.x_train, tiny_data.y_train, batch_size=16, epochs=1, verbose=0)
    model.save(folder / "model.keras")
    files = image_files(tiny_data)
    (folder / "data.zip").write_bytes(zip_bytes(files))
    for name, content in files.items():
        (folder / "dir" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "dir" / name).write_bytes(content)
    return folder, model


@pytest.mark.slow
def test_inspect_records_every_bn_layer_and_says_the_history_is_unknown(saved, tmp_path, capsys):
    folder, model = saved
    code, out, err = run_cli(capsys, "inspect", str(folder / "model.keras"), "--data", str(folder / "data.zip"), "--home", str(tmp_path), "--json")
    assert code == 0, err
    result = json.loads(out)
    data = Store(tmp_path).load_run(result["run_id"])
    assert (data.run.status, data.run.info["source"], data.run.preset) == ("done", "inspect", "own")
    assert set(data.layers) == {"res_bn_a", "res_bn_b", "dense_bn"} and list(data.probes["step"]) == [0] and data.steps.empty
    np.testing.assert_array_equal(data.layers["dense_bn"].moving_var[0], model.get_layer("dense_bn").moving_variance.numpy())
    stale = next((f for f in result["findings"] if f["key"] == "stale_initial_values"), None)  # no step count: the fingerprint speaks
    assert stale is None or ("steps" not in stale["numbers"] and "fingerprint_weight" in stale["numbers"])
    assert "fingerprint" in next(f["detail"] for f in result["findings"] if f["key"] == "model_notes")
    accuracy = result["evaluation"]["accuracy"]
    assert all(0 <= accuracy[k] <= 1 for k in ("train", "val", "test", "train_batchstats", "test_batchstats"))
    assert not list((tmp_path / "uploads").glob("*")), "the extracted zip is removed once read"
    code, out, err = run_cli(capsys, "recalibrate", result["run_id"], "--save", str(tmp_path / "fixed.keras"), "--home", str(tmp_path), "--json")
    assert code == 0, err
    assert json.loads(out)["after"]["samples"] > 0 and (tmp_path / "fixed.keras").stat().st_size > 0


def test_inspect_a_folder_with_a_separate_test_folder_and_a_model_without_bn(tiny_data, saved, tmp_path, capsys):
    import keras
    from keras import layers

    folder, _ = saved
    inputs = keras.Input((TINY, TINY, 3))
    plain = keras.Model(inputs, layers.Dense(tiny_data.num_classes, activation="softmax")(layers.Flatten()(inputs)))
    plain.save(tmp_path / "plain.keras")
    code, out, err = run_cli(
        capsys,
        "inspect",
        str(tmp_path / "plain.keras"),
        "--data",
        str(folder / "dir"),
        "--test",
        str(folder / "data.zip"),
        "--home",
        str(tmp_path / "home"),
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["bn_layers"] == [] and any("no BatchNormalization layer" in f["detail"] for f in result["findings"])
    run = Store(tmp_path / "home").get_run(result["run_id"])
    assert run.info["data"]["test"] == 60  # the whole --test zip is the test split


def _bad_models(tiny_data, folder: Path) -> dict[str, Path]:
    import keras
    from keras import layers

    @keras.saving.register_keras_serializable(package="tests")
    class Doubler(layers.Layer):
        def call(self, x):
            return x * 2

    def save(name: str, inputs, x, classes: int = tiny_data.num_classes) -> Path:
        keras.Model(inputs, layers.Dense(classes, activation="softmax")(layers.Flatten()(x))).save(folder / name)
        return folder / name

    rgb, gray, wide = keras.Input((TINY, TINY, 3)), keras.Input((TINY, TINY, 1)), keras.Input((TINY, 2 * TINY, 3))
    (folder / "notes.keras").write_text("not a model")
    return {
        "not_a_model": folder / "notes.keras",
        "lambda": save("lambda.keras", rgb, layers.Lambda(lambda t: t / 255, name="scale_pixels")(rgb)),
        "custom": save("custom.keras", rgb, Doubler(name="doubler")(rgb)),
        "channels": save("gray.keras", gray, layers.BatchNormalization()(gray)),
        "shape": save("wide.keras", wide, wide),
        "classes": save("four.keras", rgb, layers.BatchNormalization()(rgb), classes=4),
    }


BAD = {
    "not_a_model": ("is not a Keras model file",),
    "lambda": ("'scale_pixels'", "class Lambda"),
    "custom": ("'doubler'", "class Doubler"),
    "channels": ("(20, 20, 1)", "(20, 20, 3)"),
    "shape": ("(20, 40, 3)", "(20, 20, 3)"),
    "classes": ("4 outputs", "6 classes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_models_get_one_clear_line_and_leave_nothing_behind(tiny_data, saved, tmp_path, capsys, case):
    folder, _ = saved
    model = _bad_models(tiny_data, tmp_path)[case]
    home = tmp_path / "home"
    code, out, err = run_cli(capsys, "inspect", str(model), "--data", str(folder / "data.zip"), "--home", str(home))
    errors = [line for line in err.splitlines() if line.startswith("bnviz inspect: error:")]
    assert code == 2 and len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err, err
    assert all(part in errors[0] for part in BAD[case]), err
    assert Store(home).list_runs() == [] and not list((home / "models").iterdir()) and not list((home / "uploads").glob("*"))


@pytest.mark.slow
def test_a_zip_with_a_file_and_a_folder_of_one_name_is_one_line_on_the_cli(tiny_data, saved, tmp_path):
    """It traced back with FileExistsError: a real `bnviz inspect` process now exits 2 with one line and leaves no upload."""
    from tests.test_cli import bnviz

    folder, _ = saved
    files = image_files(tiny_data)
    clash = tmp_path / "clash.zip"
    clash.write_bytes(zip_bytes({**files, "images/forest/x": b"a file", "images/forest/x/0.png": next(iter(files.values()))}))
    out = bnviz("inspect", str(folder / "model.keras"), "--data", str(clash), home=tmp_path / "home")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "bnviz inspect: error: clash.zip: Zip holds both a file and a folder named 'images/forest/x'; rename one and zip it again"
    )
    assert not list((tmp_path / "home").glob("uploads/*")) and Store(tmp_path / "home").list_runs() == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_over_the_pixel_cap_is_refused_with_its_name(tiny_data, saved, tmp_path, capsys):
    folder, _ = saved
    (tmp_path / "huge.zip").write_bytes(zip_bytes({**image_files(tiny_data), "images/forest/huge.png": one_bit_png(12000, 12000)}))
    code, _, err = run_cli(capsys, "inspect", str(folder / "model.keras"), "--data", str(tmp_path / "huge.zip"), "--home", str(tmp_path / "home"))
    assert code == 2 and err.endswith(
        "\nbnviz inspect: error: huge.zip: forest/huge.png is 12000×12000 pixels (144 Mpx); "
        "bnviz decodes images up to 25 Mpx (bnviz.data.MAX_IMAGE_PIXELS): shrink it or remove it\n"
    )
    assert not list((tmp_path / "home").glob("uploads/*"))


def test_the_upload_cap_holds_for_uploads_and_data_zips_not_for_a_model_on_disk(saved, tmp_path, capsys, monkeypatch):
    from bnviz import forms
    from bnviz.tf.inspect import load_checked

    folder, model = saved
    monkeypatch.setattr(forms, "MAX_UPLOAD_BYTES", 1000)
    assert load_checked(folder / "model.keras").count_params() == model.count_params()  # the user's own file, however large
    with pytest.raises(DataError, match="the limit is 1,000 bytes"):
        forms.save_upload(tmp_path / "home", "model.keras", (folder / "model.keras").read_bytes())
    code, _, err = run_cli(capsys, "inspect", str(folder / "model.keras"), "--data", str(folder / "data.zip"), "--home", str(tmp_path))
    assert code == 2 and "data.zip is" in err and "the limit is 1,000 bytes" in err, err
    assert Store(tmp_path).list_runs() == []


def test_inspect_runs_as_a_job_of_the_worker(saved, tmp_path):
    """The "inspect" job kind: the run names its job; a bad input fails the job with the one-line message."""
    from bnviz.tf.worker import run_job

    folder, _ = saved
    store = Store(tmp_path)
    good = store.enqueue_job("inspect", {"model": str(folder / "model.keras"), "data": str(folder / "data.zip"), "name": "uploaded"})
    bad = store.enqueue_job("inspect", {"model": str(folder / "data.zip"), "data": str(folder / "data.zip")})
    assert [run_job(store, store.claim_job()) for _ in range(2)] == ["done", "failed"]
    (run,) = store.list_runs()
    assert (run.name, run.status, run.info["job"]) == ("uploaded", "done", good)
    assert store.get_job(good).progress == f"done: run {run.id}"
    assert store.get_job(bad).error.startswith("data.zip is not a Keras model file")


@pytest.mark.slow
def test_a_failure_while_recording_leaves_no_run_and_no_file(saved, tmp_path, monkeypatch):
    import bnviz.tf.inspect
    from bnviz.tf.inspect import inspect_model

    def fail(*args, **kwargs):
        raise MemoryError("out of memory while saving")

    folder, _ = saved
    monkeypatch.setattr(bnviz.tf.inspect, "atomic_write", fail)  # after the records and samples, before the model is saved
    with pytest.raises(MemoryError):
        inspect_model(Store(tmp_path), folder / "model.keras", folder / "dir")
    assert Store(tmp_path).list_runs() == [] and not list((tmp_path / "models").iterdir())
