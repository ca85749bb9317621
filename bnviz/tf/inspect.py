"""Post-mortem of a saved model: `bnviz inspect MODEL.keras --data DIR|ZIP [--test DIR]`.

Loads the model in Keras safe mode (no Lambda or custom code ever runs), checks that the data fits
it, evaluates it in both BN modes, records every BN layer once (histograms in both modes, moving
vs population statistics) and keeps the model and the samples, so the run is diagnosed, recalibrated
(PreciseBN) and exported like any other. Its training history is unknown: the run has no step rows
and its one record sits at step 0, so the diagnosis skips what needs the step count (mᵗ).

Every bad input is refused before anything is written, with one line that says what was received:
a file that is not a Keras model, layers safe mode refuses (named with their class), image size or
channels that do not match the data, a class count that differs from the model's outputs, files
over `bnviz.forms.MAX_UPLOAD_BYTES`. A model without BN is still evaluated; the diagnosis says BN is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from bnviz import forms
from bnviz.config import MAX_INPUT_SIZE, MIN_INPUT_SIZE, ProbeConfig
from bnviz.data import DataError, Dataset, extract_zip, from_folder
from bnviz.jobs import JobFailed
from bnviz.records import Job, RunStatus
from bnviz.store import Store
from bnviz.tf.evidence import evaluate_run, store_evidence
from bnviz.tf.models import bn_layer_info, layer_rows, load_model_safely
from bnviz.tf.own import Splits, atomic_write, bn_notes, model_task, own_config, samples_path, save_samples
from bnviz.tf.probe import RecordMaker, Snapshot, population_size
from bnviz.uploads import uploads_dir

DEFAULT_SIZE = 64  # for a model whose input takes any image size
HISTORY_NOTE = (
    "Inspected from a saved model: its training history is unknown (how many steps, which batches, whether the momentum "
    "changed), and fit's own accuracy is not known. Stale initial values leave a fingerprint the statistics themselves show "
    "(every channel's moving mean and variance the same mix w·initial + (1 − w)·population), from which the number of "
    "steps is estimated; lag and batch effects do not fit that line. What holds without a history: the accuracy in both BN "
    "modes, how far each layer's moving statistics sit from this data's population statistics, and what PreciseBN recovers."
)


class InspectError(DataError):
    """A bad model or data input; the message is one line that says what was received."""


def inspect_model(
    store: Store,
    model_path: str | Path,
    data: str | Path,
    test: str | Path | None = None,
    name: str = "",
    batch_size: int = 32,
    seed: int = 0,
    progress: Callable[[str], None] = lambda text: None,
    job_id: str | None = None,
    steps: int | None = None,
) -> str:
    """Inspect a saved model on an image folder or zip; returns the new run's id. `steps`, when the
    user knows how many training steps the model took, lets the diagnosis weigh the initial values."""
    if steps is not None and steps < 1:
        raise InspectError(f"steps must be a positive number of training steps. Received: steps={steps}")
    progress("Loading the model in safe mode")
    model = load_checked(model_path)
    size = _input_size(model)
    progress("Reading the images")
    dataset, splits = _splits(store, data, test, size, seed)
    _check_outputs(model, dataset)
    config = own_config(model, name or Path(model_path).stem, batch_size, str(dataset.name), 0, ProbeConfig())
    run_id = store.create_run(config, status=RunStatus.RUNNING)
    try:
        extra = ({"job": job_id} if job_id else {}) | ({"known_steps": int(steps)} if steps else {})
        _record(store, run_id, model, splits, config.probe, batch_size, seed, progress, extra)
    except BaseException:
        store.delete_run(run_id)  # nothing half-written: no run at all rather than a partial one
        raise
    return run_id


def _record(
    store: Store, run_id: str, model: keras.Model, splits: Splits, probe: ProbeConfig, batch_size: int, seed: int, progress: Callable[[str], None], extra: dict
) -> None:
    info = {
        **extra,
        "source": "inspect",
        "bn_layers": bn_layer_info(model),
        "layers": layer_rows(model),
        "notes": [HISTORY_NOTE, *bn_notes(model)],
        "params": {"total": int(model.count_params())},
        "data": {s: len(x) for s, (x, _) in splits.items()},
    }
    task = model_task(model, splits["train"][1])
    store.start(run_id, os.getpid(), 0, 0, info | {"task": task.kind, "loss_name": task.loss_name})
    progress("Recording every BN layer")
    rng = np.random.default_rng(seed + 1)
    (xv, yv), (xt, _) = splits["val"], splits["train"]
    sample = population_size(model, probe.population_images(batch_size))
    pick, population = rng.permutation(len(xv))[: probe.probe_images(batch_size)], xt[rng.permutation(len(xt))[:sample]]
    maker = RecordMaker(model, probe, (xv[pick], yv[pick]), population, batch_size, task)
    store.add_records(run_id, (), [maker.make(Snapshot(0, 0, model.get_weights(), None))])
    progress("Evaluating in both BN modes, and after PreciseBN on the training images")
    store_evidence(store, run_id, evaluate_run(maker.forward, splits, batch_size, seed, task))  # make() left the copy holding model's weights
    save_samples(samples_path(store.models_dir, run_id), splits)
    atomic_write(store.model_path(run_id), model.save)
    store.finish(run_id, RunStatus.DONE, model_path=str(store.model_path(run_id)))


# --- the model ---------------------------------------------------------------------------------
def load_checked(path: str | Path) -> keras.Model:
    """The model at `path`, loaded in safe mode; InspectError for anything that is not a loadable .keras file.
    No size cap: the file is the user's own (a ResNet50 saved with Adam's state is 284 MB); the dashboard
    caps what is uploaded to it (forms.save_upload)."""
    path = Path(path)
    if not path.is_file():
        raise InspectError(f"No model file at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InspectError(f"{path.name} is not a Keras model file: a .keras file is a zip holding config.json ({exc}).") from exc
    refused = list(_refused_layers(config))
    if refused:
        raise InspectError(
            "Keras safe mode refuses to load " + "; ".join(refused) + ". Rebuild the model with built-in layers, or inspect it in "
            "your own script with bnviz.Probe."
        )
    try:
        model = load_model_safely(str(path))
    except Exception as exc:
        raise InspectError(f"Keras could not load {path.name} in safe mode: {str(exc).splitlines()[0]}") from exc
    if not isinstance(model, keras.Model):
        raise InspectError(f"{path.name} holds a {type(model).__name__}, not a model.")
    return model


def _check_zip(path: Path) -> None:
    """A data zip is extracted to disk: it is held to the upload cap, as an uploaded one is."""
    try:
        forms.check_upload_size(path.name, path.stat().st_size)
    except DataError as exc:
        raise InspectError(str(exc)) from exc


def _refused_layers(config: object) -> Iterator[str]:
    """'layer NAME (class CLASS)' for each Lambda or non-Keras class in a saved model's config."""
    if isinstance(config, list):
        for item in config:
            yield from _refused_layers(item)
    elif isinstance(config, dict):
        cls, module = config.get("class_name"), config.get("module")
        if isinstance(cls, str) and "config" in config and cls != "__keras_tensor__":
            name = config.get("name") or (config["config"].get("name") if isinstance(config["config"], dict) else None)
            if cls == "Lambda":
                yield f"layer {name!r} (class Lambda: it holds Python code)"
                return
            if not (isinstance(module, str) and module.startswith("keras")):
                yield f"layer {name!r} (class {cls}: custom code, not part of Keras)"
                return
        for value in config.values():
            yield from _refused_layers(value)


def _input_size(model: keras.Model) -> int:
    """The square image size the model takes; InspectError, with both shapes, for any input that is
    not one RGB image (bnviz reads every image as RGB and resizes it to a square)."""
    shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if shape is None or len(shape) != 3 or shape[-1] != 3 or shape[0] != shape[1]:
        got = f"{len(model.inputs)} inputs" if shape is None else f"input shape {shape}"
        side = shape[0] if shape and len(shape) == 3 and shape[0] else DEFAULT_SIZE
        raise InspectError(
            f"The model takes {got}; the data's images are read as ({side}, {side}, 3) (RGB, resized to a square): "
            "inspect needs a model with one input shaped (size, size, 3)."
        )
    size = shape[0] or DEFAULT_SIZE
    if not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise InspectError(f"The model takes {size}×{size} images; bnviz reads images at {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} px.")
    return size


def _check_outputs(model: keras.Model, dataset: Dataset) -> None:
    """One output head with a unit per class, or one unit for two classes (a binary classifier)."""
    outputs = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    if outputs != dataset.num_classes and not (outputs == 1 and dataset.num_classes == 2):
        raise InspectError(
            f"The model has {outputs if outputs is not None else len(model.outputs)} {'outputs' if outputs is not None else 'output heads'}; "
            f"the data has {dataset.num_classes} classes ({', '.join(dataset.class_names)})."
        )


# --- the data ----------------------------------------------------------------------------------
def _splits(store: Store, data: str | Path, test: str | Path | None, size: int, seed: int) -> tuple[Dataset, Splits]:
    """Train/val/test arrays from a folder or zip; `test` (a folder or zip) replaces the test split."""
    dataset = _load(store, data, size, seed)
    splits = dataset.splits()
    if test is not None:
        held_out = _load(store, test, size, seed, fractions=(0.0, 0.0))
        if held_out.class_names != dataset.class_names:
            raise InspectError(f"The test data's classes ({', '.join(held_out.class_names)}) differ from the data's ({', '.join(dataset.class_names)}).")
        splits["test"] = (held_out.x_train, held_out.y_train)
    return dataset, splits


def _load(store: Store, source: str | Path, size: int, seed: int, fractions: tuple[float, float] = (0.15, 0.15)) -> Dataset:
    """A folder, or a zip extracted to a scratch folder that is removed once its images are read."""
    source = Path(source)
    scratch = uploads_dir(store.home) / uuid.uuid4().hex[:12] if source.is_file() else None
    try:
        if scratch is None:
            return from_folder(source, size, seed, *fractions)
        _check_zip(source)
        return from_folder(extract_zip(source, scratch), size, seed, *fractions)
    except DataError as exc:
        raise InspectError(f"{source.name}: {exc}") from exc
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


# --- the job channel ---------------------------------------------------------------------------
def inspect_job(store: Store, job: Job, progress: Callable[[str], None]) -> None:
    """Handler of "inspect" jobs (bnviz.jobs): args {"model", "data", "test", "name", "steps"}: paths on
    this machine and, optionally, the training steps the user knows; the run it creates carries the job id in its info (`info["job"]`)."""
    args = job.args
    try:
        run_id = inspect_model(
            store, args["model"], args["data"], args.get("test"), args.get("name", ""), progress=progress, job_id=job.id, steps=args.get("steps")
        )
    except (InspectError, KeyError) as exc:
        raise JobFailed(str(exc) if isinstance(exc, InspectError) else f"inspect job without {exc} argument") from exc
    progress(f"done: run {run_id}")
