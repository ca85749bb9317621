"""The scenario bank: one small real-training run per regime bnviz diagnoses, each built so that its
cause is known, on 16-pixel images (seconds per run on 2 cores).

Every scenario goes the way a user's run goes: `Store.create_run`, `train.execute_run`,
`Store.load_run`, `diagnose`. A scenario states its cause, how it is built (one line for the
docs/diagnoses.md table "What bnviz diagnoses") and its *claims*: raw numbers that show the run really is what
it says, independent of the diagnosis (a stale run's recalibrated accuracy far above its inference
accuracy, a shifted test set that recalibration cannot rescue...). `tests/test_scenarios.py` checks
the claims and the verdict; `python -m bench.scenarios` prints the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bnviz.config import RunConfig
from bnviz.data import Dataset, digits, synthetic
from bnviz.diagnose import CAUSES, Finding, diagnose
from bnviz.presets import preset_config
from bnviz.records import RunData, RunStatus
from bnviz.store import Store
from bnviz.tf.train import execute_run

SIZE = 16  # the smallest input bnviz accepts: every run takes seconds
SEEDS = (0, 1, 2)  # the seeds each recipe was checked on (bench); the tests train seed 0
BLAMING = ("critical", "warning")  # severities that put a cause forward
DARKEN = 0.35  # the test-shift scenario multiplies its test images' pixel values by this
FEW = 10  # training images per class in the overfitting scenario (the loader keeps 15 % of them for validation)


@dataclass(frozen=True)
class Outcome:
    """One trained scenario: its stored data, the diagnosis and the accuracies the claims read."""

    data: RunData
    findings: list[Finding]
    seconds: float

    def accuracy(self, split: str, mode: str = "inference") -> float:
        """Accuracy on `split` (train, val, test) with the moving statistics ("inference"), BN on the
        split's own shuffled batches ("batchstats") or PreciseBN statistics from training batches
        ("recalibrated"); "fit" is what fit reported over the last epoch."""
        evaluation = self.data.evaluations["recalibrated" if mode == "recalibrated" else "final"]
        return evaluation.accuracy_of("fit" if mode == "fit" else f"{split}_batchstats" if mode == "batchstats" else split)

    @property
    def verdict(self) -> Finding:
        return self.findings[0]

    def blamed(self) -> list[str]:
        """Causes other than the verdict's that a finding puts forward (critical or warning)."""
        return [f.key for f in self.findings[1:] if f.key in CAUSES and f.key != self.verdict.cause and f.severity in BLAMING]


Claim = tuple[str, Callable[[Outcome], bool]]  # what the raw numbers must show, and the check


@dataclass(frozen=True)
class Scenario:
    """A regime built on purpose: `build(home, seed)` returns the run's config (writing any folder
    data set into `home`); `claims` are what its raw numbers must show whatever the diagnosis says."""

    name: str
    cause: str  # the verdict's cause the diagnosis must name
    how: str  # how it is built, for the docs/diagnoses.md table
    build: Callable[[Path, int], RunConfig]
    claims: tuple[Claim, ...]


def run(scenario: Scenario, home: Path, seed: int = 0) -> Outcome:
    """Train `scenario` in a store at `home` and diagnose it, as the dashboard does."""
    store = Store(home)
    run_id = store.create_run(scenario.build(home, seed))
    result = execute_run(store, run_id)
    if result.status != RunStatus.DONE:
        raise RuntimeError(f"Scenario {scenario.name} (seed {seed}) ended {result.status}: {result.error}")
    data = store.load_run(run_id)
    return Outcome(data, diagnose(data), result.seconds)


def run_by_name(name: str, home: Path, seed: int = 0) -> Outcome:
    """`run` for the scenario called `name`: what a fresh process can be asked to do (a Scenario's
    claims are lambdas, which do not pickle)."""
    return run(next(s for s in SCENARIOS if s.name == name), home, seed)


def failed_claims(scenario: Scenario, outcome: Outcome) -> list[str]:
    """The claims the outcome's raw numbers do not bear out (empty: the scenario is what it says)."""
    return [text for text, holds in scenario.claims if not holds(outcome)]


# --- data sets written into the home folder, as a user's folder would be --------------------
def write_folder(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], class_names: tuple[str, ...]) -> Path:
    """Write each split's (images, labels) as PNG files in `root/split/class/`: the train/ + test/
    layout that `bnviz.data.from_folder` takes as its train and test splits."""
    for split, (images, labels) in splits.items():
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(folder / f"{index:04d}.png")
    return root


def _training_split(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All labelled images but the test split: the loader carves validation out of them again."""
    return np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val])


# --- the recipes ----------------------------------------------------------------------------
def _init_weight(outcome: Outcome) -> float:
    """mᵗ: the weight the moving statistics still give their initial values (0 and 1)."""
    config = outcome.data.run.config
    return config.arch.bn.momentum ** int(outcome.data.run.info["steps"])


def _gain(outcome: Outcome, split: str = "test") -> float:
    """What recalibration (PreciseBN on training batches) adds to inference accuracy."""
    return outcome.accuracy(split, "recalibrated") - outcome.accuracy(split)


def healthy(home: Path, seed: int) -> RunConfig:
    """The seed notebook's fix: m = 0.8 forgets the initial values within ~20 of its 114 steps."""
    return preset_config("final", input_size=SIZE, epochs=3, seed=seed, name="healthy")


def stale(home: Path, seed: int) -> RunConfig:
    """The seed notebook's collapse, shortened: after 38 steps at m = 0.99 the initial 0/1 still weigh 0.99³⁸ = 0.68."""
    return preset_config("bn", input_size=SIZE, epochs=1, seed=seed, name="stale")


def lag(home: Path, seed: int) -> RunConfig:
    """Adam at lr 0.1 keeps the weights, and so the batch statistics, moving to the end; at m = 0.995 the average
    trails them by ~200 steps. The initial values are gone (0.995⁹⁵⁰ = 0.009) and the average spans ~6,400 images,
    more than the recalibration's 50 batches, so neither stale values nor sampling noise explain the gap: drift does.
    (m = 0.98 over 266 steps gave gains of 0.05–0.19: too close to the 0.05 threshold on some seeds.)"""
    config = preset_config("bn", input_size=SIZE, epochs=25, seed=seed, optimizer="adam", learning_rate=0.1, name="lag")
    return config.with_momentum(0.995)


def non_iid(home: Path, seed: int) -> RunConfig:
    """The `healthy` recipe with class-sorted batches: every batch holds one or two classes."""
    return preset_config("final", input_size=SIZE, epochs=3, seed=seed, shuffle=False, name="non-iid")


def noisy_batches(home: Path, seed: int) -> RunConfig:
    """m = 0.1 keeps ~1 batch of 4 images in the moving statistics: they are as noisy as one small batch."""
    return preset_config("final", input_size=SIZE, epochs=1, seed=seed, batch_size=4, name="batch-noise").with_momentum(0.1)


def frozen(home: Path, seed: int) -> RunConfig:
    """m = 1 never updates the moving statistics: inference normalises with 0 and 1, as with a frozen BN layer."""
    return preset_config("final", input_size=SIZE, epochs=2, seed=seed, name="never-moved").with_momentum(1.0)


def shifted_test(home: Path, seed: int) -> RunConfig:
    """Digits in train/ and test/ folders, the test images alone darkened: a preprocessing mismatch."""
    data = digits(SIZE, seed)
    root = write_folder(home / "shifted-digits", {"train": _training_split(data), "test": (data.x_test * DARKEN, data.y_test)}, data.class_names)
    return preset_config("final", input_size=SIZE, epochs=3, seed=seed, dataset=str(root), name="test-shift")


def few_images(home: Path, seed: int) -> RunConfig:
    """Ten synthetic images per class to train on, fifty per class to test on, many epochs."""
    data = synthetic(SIZE, seed, train_per_class=FEW, val_per_class=1, test_per_class=50)
    root = write_folder(home / "few-images", {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}, data.class_names)
    return preset_config("final", input_size=SIZE, epochs=60, batch_size=8, seed=seed, dataset=str(root), name="overfitting")


def _moving_values_initial(outcome: Outcome) -> bool:
    """Every BN layer's last recorded moving mean is still exactly 0 and its moving variance 1."""
    layers = outcome.data.layers.values()
    return bool(layers) and all(np.all(t.moving_mean[-1] == 0) and np.all(t.moving_var[-1] == 1) for t in layers)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "healthy",
        "healthy",
        "`final` preset (m = 0.8), 3 epochs on synthetic images",
        healthy,
        (
            ("test accuracy >= 0.85", lambda o: o.accuracy("test") >= 0.85),
            ("recalibration changes test accuracy by < 0.05", lambda o: abs(_gain(o)) < 0.05),
            ("train - val < 0.1", lambda o: o.accuracy("train") - o.accuracy("val") < 0.1),
        ),
    ),
    Scenario(
        "stale initial values",
        "stale_initial_values",
        "`bn` preset (m = 0.99), 1 epoch (38 steps: mᵗ = 0.68)",
        stale,
        (
            ("mᵗ >= 0.5", lambda o: _init_weight(o) >= 0.5),
            ("recalibrated test >= inference test + 0.25", lambda o: _gain(o) >= 0.25),
        ),
    ),
    Scenario(
        "lag",
        "lag",
        "`bn` preset at m = 0.995, Adam lr 0.1, 25 epochs (950 steps: mᵗ = 0.009)",
        lag,
        (
            ("mᵗ < 0.01", lambda o: _init_weight(o) < 0.01),
            ("recalibrated test >= inference test + 0.07", lambda o: _gain(o) >= 0.07),
        ),
    ),
    Scenario(
        "non-i.i.d. batches",
        "non_iid_batches",
        "`final` preset, `shuffle=False` (class-sorted batches), 3 epochs",
        non_iid,
        (
            ("mᵗ < 0.01", lambda o: _init_weight(o) < 0.01),
            (
                "train accuracy < 0.7 in every mode (the same recipe shuffled, `healthy`, trains to > 0.9)",
                lambda o: max(o.accuracy("train", mode) for mode in ("inference", "batchstats", "fit", "recalibrated")) < 0.7,
            ),
            ("recalibration changes test accuracy by < 0.05", lambda o: abs(_gain(o)) < 0.05),
        ),
    ),
    Scenario(
        "batch noise",
        "batch_noise",
        "`final` preset at m = 0.1, batch size 4, 1 epoch",
        noisy_batches,
        (
            ("mᵗ < 0.01", lambda o: _init_weight(o) < 0.01),
            ("recalibrated test >= inference test + 0.07", lambda o: _gain(o) >= 0.07),
        ),
    ),
    Scenario(
        "never moved",
        "never_moved",
        "`final` preset at m = 1.0, 2 epochs",
        frozen,
        (
            ("moving statistics still 0 and 1", _moving_values_initial),
            ("recalibrated test >= inference test + 0.3", lambda o: _gain(o) >= 0.3),
        ),
    ),
    Scenario(
        "test shift",
        "test_shift",
        f"digits in train/ + test/ folders, test images alone × {DARKEN}; `final` preset, 3 epochs",
        shifted_test,
        (
            ("val accuracy >= 0.9", lambda o: o.accuracy("val") >= 0.9),
            ("test accuracy <= val - 0.3", lambda o: o.accuracy("test") <= o.accuracy("val") - 0.3),
            ("recalibration changes test accuracy by < 0.05", lambda o: abs(_gain(o)) < 0.05),
        ),
    ),
    Scenario(
        "overfitting",
        "overfitting",
        f"{FEW} synthetic images per class (batch 8, 60 epochs), `final` preset",
        few_images,
        (
            ("train accuracy >= 0.9 in both modes", lambda o: min(o.accuracy("train"), o.accuracy("train", "batchstats")) >= 0.9),
            ("test <= train - 0.3 in both modes", lambda o: max(o.accuracy("test"), o.accuracy("test", "batchstats")) <= o.accuracy("train") - 0.3),
            ("recalibration changes test accuracy by < 0.05", lambda o: abs(_gain(o)) < 0.05),
        ),
    ),
)
