"""Run one training job end to end: data, model, fit with recorder and probe, evaluation in
both BN modes, model file. The CLI calls `execute_run`; workers call it through `train_job`, the
handler of "train" jobs."""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from bnviz.config import RunConfig, check_batch_size, validate
from bnviz.data import BUILTIN_DATASETS, Dataset, load_dataset
from bnviz.jobs import JobCancelled, JobFailed
from bnviz.records import Evaluation, Job, ProbeRecord, RunStatus
from bnviz.shapes import param_totals
from bnviz.store import Store
from bnviz.tf.evidence import evaluate_run, private_forward, store_evidence
from bnviz.tf.models import bn_layer_info, compile_model, layer_rows
from bnviz.tf.probe import CLASS_TASK, BNProbe

COMMIT_SECONDS = 1.0  # step metrics reach the store at least this often
CANCEL_POLL_SECONDS = 0.5
PROGRESS_SECONDS = 2.0  # a train job's progress text changes at most this often


class Recorder(keras.callbacks.Callback):
    """Writes step metrics and probe records to the store in small transactions, stops the run on
    a cancel request or a non-finite loss, and reports progress (CSVLogger/TerminateOnNaN shape).
    `stop_on_nan=False` (the user's own fit, `bnviz.Probe`) records the fault but lets training go on."""

    def __init__(self, store: Store, run_id: str, on_step: Callable[[int, dict], None] | None = None, stop_on_nan: bool = True):
        super().__init__()
        self.store, self.run_id, self.on_step, self.stop_on_nan = store, run_id, on_step, stop_on_nan
        self.steps: list[tuple[int, int, float, float]] = []
        self.probes: list[ProbeRecord] = []
        self.step, self.epoch = 0, 0
        self.fit_accuracy = self.fit_loss = math.nan  # what fit reports: the running mean over the last epoch, batch statistics
        self.cancelled = False
        self.failure: str | None = None
        self._last_commit = self._last_poll = time.monotonic()

    def add_probe(self, record: ProbeRecord) -> None:
        self.probes.append(record)
        self.commit()

    def commit(self) -> None:
        if self.steps or self.probes:
            self.store.add_records(self.run_id, self.steps, self.probes)
            self.steps, self.probes = [], []
        self._last_commit = time.monotonic()

    def not_cancelled(self) -> bool:
        """False once a cancel was requested, also after the last step (the probe asks between the
        records it makes once training ends)."""
        self.cancelled = self.cancelled or self.store.cancel_requested(self.run_id)
        return not self.cancelled

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        loss, accuracy = float((logs or {}).get("loss", math.nan)), float((logs or {}).get("accuracy", math.nan))
        self.steps.append((self.step, self.epoch, loss, accuracy))
        self.fit_accuracy, self.fit_loss = accuracy, loss
        if self.on_step:
            self.on_step(self.step, {"loss": loss, "accuracy": accuracy, "epoch": self.epoch})
        if not math.isfinite(loss) and self.failure is None:
            self.failure = f"Loss became {loss} at step {self.step} (epoch {self.epoch})" + ("; training stopped." if self.stop_on_nan else ".")
            if self.stop_on_nan:
                self.model.stop_training = True
        now = time.monotonic()
        if now - self._last_poll > CANCEL_POLL_SECONDS:
            self._last_poll = now
            if self.store.cancel_requested(self.run_id):
                self.cancelled = self.model.stop_training = True
        if now - self._last_commit > COMMIT_SECONDS:
            self.commit()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.commit()


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: RunStatus
    steps: int
    seconds: float
    model_path: str | None
    evaluation: Evaluation | None
    error: str | None = None


def probe_inputs(data: Dataset, config: RunConfig) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The fixed validation probe batch and the fixed training sample for population statistics."""
    rng = np.random.default_rng(config.seed + 1)
    val = rng.permutation(len(data.x_val))[: config.probe.probe_images(config.batch_size)]
    train = rng.permutation(len(data.x_train))[: config.probe.population_images(config.batch_size)]
    return (data.x_val[val], data.y_val[val]), data.x_train[train]


def training_order(data: Dataset, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    """The training arrays as `fit` receives them. Without shuffling they come class by class, as a
    folder is read and as many users feed them: every batch then holds one or two classes, not an
    i.i.d. sample, which is the non-i.i.d. regime the diagnosis recognises."""
    if shuffle:
        return data.x_train, data.y_train
    order = np.argsort(data.y_train, kind="stable")
    return data.x_train[order], data.y_train[order]


def learning_rate_at(config: RunConfig, epoch: int, current: float | None = None) -> float:
    """The learning rate of 0-based `epoch`: late_learning_rate for the last late_epochs epochs."""
    return config.late_learning_rate if epoch >= config.epochs - config.late_epochs else config.learning_rate


def execute_run(store: Store, run_id: str, on_step: Callable[[int, dict], None] | None = None) -> RunResult:
    """Train run `run_id` (already in the store) and record everything; never raises for faults
    inside training: the run ends done, failed or cancelled, and the result says which."""
    started = time.monotonic()
    config = validate(store.get_run(run_id).config)
    keras.utils.set_random_seed(config.seed)
    data = _dataset(config)
    check_batch_size(config.batch_size, len(data.x_train))  # the Train page only knows an estimate
    model = compile_model(config, data.channels, data.num_classes)
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    layers = layer_rows(model)
    params = param_totals((row["trainable"], row["non_trainable"]) for row in layers)
    info = {"params": params, "layers": layers, "data": data.summary(), "bn_layers": bn_layer_info(model), "source": "bnviz"}
    store.start(run_id, os.getpid(), steps_per_epoch, steps_per_epoch * config.epochs, info)
    recorder = Recorder(store, run_id, on_step)
    probe = BNProbe(config.probe, *probe_inputs(data, config), config.batch_size, recorder.add_probe, recorder.not_cancelled) if config.probe.enabled else None
    callbacks: list[keras.callbacks.Callback] = [recorder, probe] if probe else [recorder]
    if config.late_epochs:
        callbacks.append(keras.callbacks.LearningRateScheduler(functools.partial(learning_rate_at, config)))
    x_train, y_train = training_order(data, config.shuffle)
    model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs, verbose=0, callbacks=callbacks, shuffle=config.shuffle)
    seconds = time.monotonic() - started
    if recorder.failure:
        store.finish(run_id, RunStatus.FAILED, error=recorder.failure)
        return RunResult(run_id, RunStatus.FAILED, recorder.step, seconds, None, None, recorder.failure)
    if recorder.cancelled:
        store.finish(run_id, RunStatus.CANCELLED, error=f"Cancelled at step {recorder.step}.")
        return RunResult(run_id, RunStatus.CANCELLED, recorder.step, seconds, None, None, f"Cancelled at step {recorder.step}.")
    # one private copy and its traces for the evaluation and the evidence: the probe's, traced already, where there is one
    forward = (probe.forward_for(model) if probe else None) or private_forward(model)
    evidence = evaluate_run(forward, data.splits(), config.batch_size, config.seed, CLASS_TASK, recorder.fit_accuracy, recorder.fit_loss)
    store_evidence(store, run_id, evidence)
    evaluation = evidence.final
    path = store.model_path(run_id)
    with store.saving(path):
        model.save(path)
    seconds = time.monotonic() - started
    store.update_info(run_id, seconds=seconds, steps=recorder.step)
    store.finish(run_id, RunStatus.DONE, model_path=str(path))
    return RunResult(run_id, RunStatus.DONE, recorder.step, seconds, str(path), evaluation)


def train_job(store: Store, job: Job, progress: Callable[[str], None]) -> None:
    """Handler of "train" jobs: train the job's run; the job ends as the run does."""
    if store.get_run(job.run_id).status == RunStatus.CANCELLED:
        raise JobCancelled("Cancelled before it started.")
    last = [0.0]

    def on_step(step: int, logs: dict) -> None:
        if time.monotonic() - last[0] > PROGRESS_SECONDS:
            last[0] = time.monotonic()
            progress(f"step {step:,} · epoch {logs['epoch']} · loss {logs['loss']:.3f}")

    result = execute_run(store, job.run_id, on_step)
    if result.status == RunStatus.CANCELLED:
        raise JobCancelled(result.error)
    if result.status == RunStatus.FAILED:
        raise JobFailed(result.error)
    progress(f"done after {result.steps:,} steps in {result.seconds:.1f} s")


def _dataset(config: RunConfig) -> Dataset:
    """The run's data. The embedded sets are generated from (name, size, seed) alone, so a process
    that trains several runs in a row (the story, a sweep, a worker draining the queue) keeps the
    last one instead of generating it again (1.5 s at 64 px); folders are read afresh every time."""
    if config.dataset in BUILTIN_DATASETS:
        return _builtin_dataset(config.dataset, config.input_size, config.seed)
    return load_dataset(config.dataset, config.input_size, config.seed)


@functools.lru_cache(maxsize=1)
def _builtin_dataset(name: str, input_size: int, seed: int) -> Dataset:
    return load_dataset(name, input_size, seed)  # callers only read the arrays
