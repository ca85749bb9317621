"""`bnviz.Probe`: the probe as a Keras callback for the user's own `fit`.

    import bnviz
    model.fit(x, y, validation_data=(xv, yv), epochs=5,
              callbacks=[bnviz.Probe(name="my-resnet", test_data=(xt, yt), validation_data=(xv, yv))])

It records into the same store as bnviz's own runs (`home=`, else `$BNVIZ_HOME`, else
./bnviz-runs), with the same guarantees: records are made on a private copy of the model, so
training is bit-for-bit what it would be without it; they are made inside the loop paced evenly
over the steps (`probe.budget` 0: all when training ends). The run is visible live on a
dashboard started on the same home folder. When training ends it evaluates the model in both BN
modes on the data it was given, saves the model and the samples, and the run is like any other:
Diagnose, PreciseBN, Compare, Export.

Keras 3 does not show callbacks the data of `fit`, so the probe uses what it is given: the probe
batch comes from `validation_data` (else `test_data`, else `train_data`), the population statistics
from `train_data` (else `validation_data`, else `test_data`; the run info says which).
`validation_data` given to `fit` is not seen either: pass it here too. Without `train_data` there
is no PreciseBN (it never calibrates on held-out data by itself): one line says so when `fit`
starts, and the verdict names what is missing instead of guessing. Keeping a sample of the batches
`fit` feeds would mean retracing the user's train step (and, under XLA, changing it); bnviz does not.
`batch_size` should be fit's: batch statistics are measured on batches of that size.

In a Jupyter kernel the probe also shows a live panel under the cell and, when `fit` ends, the
verdict and its charts there (bnviz.notebook); `display=False` turns that off, and outside a
notebook it does nothing. `probe.run` is the run as a notebook object, `probe.recalibrate()` PreciseBN.

Any model is followed: Sequential, Functional, nested, several inputs (pass the data as a list,
as to `fit`), BN inside TimeDistributed, a custom layer or a subclassed model (see `probe.private_copy`).
Inputs given as a dict get one warning when `fit` starts, and the model trains on unprobed. A fault inside the probe (a full disk, a store
it cannot write) never stops training: the probe stops, the run is marked failed with the message.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable

import keras
import numpy as np

from bnviz.config import ProbeConfig
from bnviz.notebook import LivePanel, Recalibrated, RunView, in_notebook
from bnviz.records import RunStatus
from bnviz.store import Store
from bnviz.tf.evidence import evaluate_run, private_forward, store_evidence
from bnviz.tf.models import bn_layer_info, layer_rows
from bnviz.tf.own import Splits, as_arrays, atomic_write, bn_notes, model_task, own_config, samples_path, save_samples
from bnviz.tf.probe import BNProbe, population_size
from bnviz.tf.train import Recorder

NO_TRAIN_DATA = (
    "bnviz.Probe got no train_data: Keras shows callbacks neither fit's training data nor its validation_data, so PreciseBN and "
    "the training population cannot be measured and the verdict will say so; pass train_data=(x[:512], y[:512]) to have them."
)
ACCURACY_KEYS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")
MAX_EVAL_SAMPLES = 20000  # per split, for the final evaluation


class Probe(keras.callbacks.Callback):
    """Record what every BN layer of the user's model does during `fit` (see the module docstring)."""

    def __init__(
        self,
        name: str = "",
        test_data: object = None,
        validation_data: object = None,
        train_data: object = None,
        home: str | os.PathLike | None = None,
        batch_size: int = 32,
        probe: ProbeConfig | None = None,
        seed: int = 0,
        display: bool = True,
    ):
        super().__init__()
        if test_data is None and validation_data is None and train_data is None:
            raise ValueError("bnviz.Probe needs data to probe with: pass test_data=(x, y), validation_data= or train_data=.")
        self.name, self.home, self.batch_size, self.seed = name, home, batch_size, seed
        self.config = probe or ProbeConfig()
        self.data = {"train": train_data, "val": validation_data, "test": test_data}
        self.run_id: str | None = None
        self._parts: list[keras.callbacks.Callback] = []
        self.display = display and in_notebook()  # in a notebook: the live panel, then the answer under the cell
        self.panel: LivePanel | None = None
        self.unprobed = ""  # why fit went on unprobed, when it did

    def on_train_begin(self, logs: dict | None = None) -> None:
        given = [v for v in self.data.values() if v is not None]
        if isinstance(self.model, keras.Sequential) and not getattr(self.model, "inputs", None):
            self.model.build((None, *as_arrays(given[0], 1)[0].shape[1:]))  # a Sequential without Input: give it its graph (no new weights)
        if any(isinstance(data, (tuple, list)) and len(data) >= 2 and isinstance(data[0], dict) for data in given):
            self.unprobed = "bnviz.Probe cannot follow this model: its inputs are given as a dict; pass them to the probe as a list in the model's input order."
            warnings.warn(self.unprobed + " Training goes on unprobed.", stacklevel=2)
            return
        self._guarded(self._begin, logs)

    def _begin(self, logs: dict | None) -> None:
        self.splits = {k: as_arrays(v, MAX_EVAL_SAMPLES) for k, v in self.data.items() if v is not None}
        x, y = next(iter(self.splits.values()))
        self.task = model_task(self.model, y, x)
        if "train" not in self.splits:
            warnings.warn(NO_TRAIN_DATA, stacklevel=3)
        self.store = Store(self.home)
        self._start_run(self.splits)
        for part in self._parts:
            part.set_model(self.model)
            part.set_params(self.params)
            part.on_train_begin(logs)
        if self.display:
            self.panel = LivePanel(self.store, self.run_id, self.total_steps, self.recorder.commit)
            self.panel.start()

    def _guarded(self, step: Callable[..., None], *args: object) -> None:
        """Run a probe step; a fault in it stops the probe (the run is marked failed), never training."""
        try:
            step(*args)
        except Exception as exc:
            self._parts = []
            if self.run_id:
                with contextlib.suppress(Exception):  # the store itself may be what failed
                    self.store.finish(self.run_id, RunStatus.FAILED, error=f"The probe stopped: {type(exc).__name__}: {exc}")
            warnings.warn(f"bnviz.Probe stopped recording ({type(exc).__name__}: {exc}); training goes on.", stacklevel=2)

    def _start_run(self, splits: Splits) -> None:
        steps, epochs = self.params.get("steps") or 0, self.params.get("epochs", 1)
        config = own_config(self.model, self.name, self.batch_size, "", epochs, self.config)
        probe_split = next(s for s in ("val", "test", "train") if s in splits)
        population_split = next(s for s in ("train", "val", "test") if s in splits)
        info = {
            "source": "callback",
            "bn_layers": bn_layer_info(self.model),
            "layers": layer_rows(self.model),
            "notes": bn_notes(self.model),
            "params": {"total": int(self.model.count_params())},
            "probe_data": probe_split,
            "population_data": population_split,
            "data": {s: len(x) for s, (x, _) in splits.items()},
            "task": self.task.kind,
            "loss_name": self.task.loss_name,
        }
        self.run_id = self.store.create_run(config, status=RunStatus.RUNNING)
        self.store.start(self.run_id, os.getpid(), steps, steps * epochs, info)
        self.total_steps = steps * epochs or None
        self.recorder = Recorder(self.store, self.run_id, stop_on_nan=False)
        self._parts = [self.recorder]
        self.bn_probe: BNProbe | None = None
        if self.config.enabled:
            rng = np.random.default_rng(self.seed + 1)
            xp, yp = splits[probe_split]
            pick = rng.permutation(len(xp))[: self.config.probe_images(self.batch_size)]
            sample = population_size(self.model, self.config.population_images(self.batch_size))
            population = splits[population_split][0][rng.permutation(len(splits[population_split][0]))[:sample]]
            self.bn_probe = BNProbe(
                self.config, (xp[pick], yp[pick]), population, self.batch_size, self.recorder.add_probe, self.recorder.not_cancelled, self.task
            )
            self._parts.append(self.bn_probe)

    def _each(self, hook: str, *args: object) -> None:
        """Call `hook` on the recorder, then the BN probe, until a fault stops the probe."""
        for part in list(self._parts):
            if part not in self._parts:
                return
            self._guarded(getattr(part, hook), *args)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._each("on_epoch_begin", epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._each("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        logs.setdefault("accuracy", next((logs[k] for k in ACCURACY_KEYS if k in logs), math.nan))
        self._each("on_train_batch_end", batch, logs)
        if self.panel is not None and self._parts:
            self.panel.step()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._each("on_train_end", logs)
        if self._parts:
            self._parts = []
            self._guarded(self._finish)  # the user's training is done and must not fail because of the probe
        if self.panel is not None:
            self.panel.refresh()
            self._guarded(self._show_answer)

    @property
    def run(self) -> RunView:
        """The run this probe records, as a notebook object (bnviz.notebook.RunView): it displays as
        the top of its Diagnose page, and has .diagnose(), .figures and .recalibrate()."""
        if self.run_id is None:
            raise RuntimeError(self.unprobed or "This bnviz.Probe has recorded nothing yet: pass it to fit(callbacks=[probe]) first.")
        return RunView(self.store, self.run_id)

    def recalibrate(self, batches: int | None = None, calibrate_on: str = "train") -> Recalibrated:
        """PreciseBN on the trained model (see RunView.recalibrate): the repaired model and its accuracy."""
        return self.run.recalibrate(batches, calibrate_on)

    def _show_answer(self) -> None:
        """Under the cell that trained: the verdict, the figures, the two charts and the fix."""
        from IPython.display import display

        display(self.run)

    def _finish(self) -> None:
        recorder = self.recorder
        if recorder.failure or recorder.cancelled:
            status = RunStatus.FAILED if recorder.failure else RunStatus.CANCELLED
            self.store.finish(self.run_id, status, error=recorder.failure or f"Cancelled at step {recorder.step}.")
            return
        forward = (self.bn_probe.forward_for(self.model) if self.bn_probe else None) or private_forward(self.model)
        evidence = evaluate_run(forward, self.splits, self.batch_size, self.seed, self.task, recorder.fit_accuracy, recorder.fit_loss)
        store_evidence(self.store, self.run_id, evidence)
        save_samples(samples_path(self.store.models_dir, self.run_id), self.splits)
        path = self.store.model_path(self.run_id)
        atomic_write(path, self.model.save)
        self.store.update_info(self.run_id, steps=recorder.step)
        self.store.finish(self.run_id, RunStatus.DONE, model_path=str(path))
