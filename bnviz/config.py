"""Run configuration: frozen dataclasses that round-trip through JSON.

Everything the UI, the store and the worker exchange is a `RunConfig`; choices are names
(presets, data sets, optimizers) so that configs stay plain JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Norm(StrEnum):
    """The normalisation after each conv, with the questions the rest of bnviz asks of it. A `StrEnum`,
    so configs stay plain JSON ("batch") and `Norm.BATCH == "batch"`."""

    NONE = "none"
    BATCH = "batch"
    LAYER = "layer"
    GROUP = "group"

    @property
    def has_moving_stats(self) -> bool:
        """Does inference use statistics kept from training (BN's moving mean and variance), the ones
        that can go stale? Layer and group normalisation compute theirs from each input."""
        return self is Norm.BATCH

    @property
    def normalizes(self) -> bool:
        return self is not Norm.NONE

    @property
    def keras_layer(self) -> str:
        """The Keras layer's class name ("" for none)."""
        return f"{self.value.capitalize()}Normalization" if self.normalizes else ""


NORMALIZATIONS = tuple(Norm)
OPTIMIZERS = ("adam", "sgd", "rmsprop")
INITIALIZERS = ("zeros", "ones", "glorot_uniform", "he_normal", "random_normal", "random_uniform")
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 224
OWN_PRESET = "own"  # a model bnviz did not build (bnviz.Probe, bnviz inspect): nothing to retrain from its config


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and the value, and
    `field` names the setting (bnviz.config.SETTINGS) the message belongs beside ("" for none)."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ConvBlock:
    """Conv2D(filters, kernel, relu) followed by MaxPooling2D(pool, pool_stride)."""

    filters: int = 16
    kernel: int = 3
    pool: int = 2
    pool_stride: int | None = None  # None: stride = pool (the usual halving)


@dataclass(frozen=True)
class BNConfig:
    """Every keras.layers.BatchNormalization argument, plus where the layer sits."""

    momentum: float = 0.99  # Keras default: moving = m*moving + (1-m)*batch; the seed's collapse
    epsilon: float = 1e-3  # Keras default
    center: bool = True
    scale: bool = True
    beta_initializer: str = "zeros"
    gamma_initializer: str = "ones"
    moving_mean_initializer: str = "zeros"  # the value inference uses before any update
    moving_variance_initializer: str = "ones"
    placement: str = "after"  # "after" the ReLU (the seed) or "before" it (the paper)

    def keras_arguments(self) -> dict[str, Any]:
        """The `keras.layers.BatchNormalization` arguments: every field but where the layer sits."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name not in BN_PLACEMENT_FIELDS}


BN_PLACEMENT_FIELDS = ("placement",)
BN_ARGUMENTS = tuple(f.name for f in dataclasses.fields(BNConfig) if f.name not in BN_PLACEMENT_FIELDS)  # momentum, epsilon, center, ...


@dataclass(frozen=True)
class ArchConfig:
    """A small CNN: optional zero padding, conv blocks, Flatten, Dropout, Dense softmax."""

    blocks: tuple[ConvBlock, ...] = (ConvBlock(16), ConvBlock(32, pool_stride=1), ConvBlock(16))
    rescale: float = 1 / 255  # a parameter-free Rescaling layer first; 1.0 feeds raw pixels, as the seed notebook did
    zero_pad: int = 1  # the seed starts with ZeroPadding2D()
    norm: Norm = Norm.BATCH  # only batch keeps moving statistics (Norm.has_moving_stats)
    bn: BNConfig = field(default_factory=BNConfig)
    dropout: float = 0.5  # before the Dense head; 0 removes the layer
    group_count: int = 4  # groups for GroupNormalization

    def __post_init__(self) -> None:
        if isinstance(self.norm, str) and self.norm in NORMALIZATIONS:  # from JSON or a widget: the enum, so its questions can be asked
            object.__setattr__(self, "norm", Norm(self.norm))

    @property
    def has_moving_stats(self) -> bool:
        """Does this model keep BN moving statistics (the ones inference can get wrong)?"""
        return isinstance(self.norm, Norm) and self.norm.has_moving_stats


NO_BUDGET_LIMIT = 100.0  # the probe budget's top: every record at its step
MIN_PROBE_BATCH = 8  # fewer images make the probe batch's two-mode accuracy too coarse to read
MAX_PROBE_BATCH = 32  # 2·10⁶ values per layer at 64 px already; more only costs forward passes
MIN_POPULATION_DEFAULT, MAX_POPULATION_DEFAULT = 64, 128  # images; at 128 the population mean is within 0.010 SD (median) on the presets' runs
MIN_SPREAD_BATCHES = 4  # a spread of batch means from fewer is too rough to compare against


@dataclass(frozen=True)
class ProbeConfig:
    """What the probe records and how often (see bnviz.tf.probe)."""

    enabled: bool = True
    every: int = 0  # steps between probes; 0 = geometric through the first epoch (dense early, where mᵗ moves); epoch ends always
    # fixed validation images for the histograms and the two-mode accuracy; 0: the training batch size (8 to 32), so training
    # mode normalises it as a training step does; 32 give ~2·10⁶ values per layer at 64 px, of which the histograms keep 20,000
    probe_batch: int = 0
    population_samples: int = 0  # fixed training images for the PreciseBN-style population stats; 0: 4 training batches, 64 to 128
    # A probe record runs 2 × probe images forward, + 2 × population images where it measures the population
    # (~3 training steps at 32/128, ~⅔ of one without the population). 128 images suffice because the diagnosis'
    # thresholds (0.25 and 1 population SD) sit far above their sampling error (`python -m bench` measures it).
    population_every: int = 4  # the population is measured at every k-th record and the last (in inference mode at the last); NaN between
    bins: int = 40  # histogram bins, shared by train mode and inference mode
    budget: float = 0.03  # records are made in the loop paced evenly over the steps, or sooner within this share of training time; 0: all at the end

    def probe_images(self, batch_size: int) -> int:
        """The probe batch for training batches of `batch_size`: `probe_batch`, else the training batch
        within 8–32: training mode then normalises it as a step does, and a record's forward work
        shrinks with the step's (a ResNet50 at 224² fine-tuned at batch 16)."""
        return self.probe_batch or min(MAX_PROBE_BATCH, max(batch_size, MIN_PROBE_BATCH))

    def population_images(self, batch_size: int) -> int:
        """The population sample for training batches of `batch_size`: `population_samples`, else the
        `MIN_SPREAD_BATCHES` batches the i.i.d. spread needs, within 64–128 images (the mean is then
        within 0.01–0.02 population SD; 32 images at batch 4 turned the batch-noise scenario into lag)."""
        return self.population_samples or min(MAX_POPULATION_DEFAULT, max(MIN_POPULATION_DEFAULT, MIN_SPREAD_BATCHES * batch_size))


@dataclass(frozen=True)
class RunConfig:
    """One training run: architecture, data and optimisation."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    preset: str = ""  # the preset the arch came from, "" for a custom one
    name: str = ""
    dataset: str = "synthetic"  # synthetic | digits | a folder path inside the home folder
    input_size: int = 64  # the seed used 224; 64 keeps a run to seconds on 2 cores
    epochs: int = 3
    batch_size: int = 32
    shuffle: bool = True  # batches drawn afresh each epoch; False feeds the images class by class, in file order (non-i.i.d. batches)
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    late_epochs: int = 0  # the last N epochs train at late_learning_rate (a restart, as cyclic schedules make); 0: none
    late_learning_rate: float = 0.05
    seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return from_dict(json.loads(text))

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def with_momentum(self, momentum: float) -> RunConfig:
        return self.replace(arch=dataclasses.replace(self.arch, bn=dataclasses.replace(self.arch.bn, momentum=momentum)))


def from_dict(data: Any) -> RunConfig:
    """Build a RunConfig from `dataclasses.asdict` output (unknown keys, and anything but an object
    where the config has one, are a ConfigError)."""
    arch = dict(_object(_object(data, "a run configuration").get("arch", {}), "arch"))
    try:
        if "blocks" in arch:
            arch["blocks"] = tuple(ConvBlock(**_object(b, "each of arch.blocks")) for b in arch["blocks"])
        if "bn" in arch:
            arch["bn"] = BNConfig(**_object(arch["bn"], "arch.bn"))
        rest = {k: v for k, v in data.items() if k not in ("arch", "probe")}
        return RunConfig(arch=ArchConfig(**arch), probe=ProbeConfig(**_object(data.get("probe", {}), "probe")), **rest)
    except TypeError as exc:
        raise ConfigError(f"Unknown configuration field: {exc}") from exc


def _object(value: Any, where: str) -> dict[str, Any]:
    """`value` when it is a JSON object, else a ConfigError saying what `where` received."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object. Received: {json.dumps(value)[:40]}")
    return value


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: where it lives in a RunConfig, its type, range or choices, label,
    help and CLI flag. `validate`, the Train and Sweep widgets, the CLI flags and the placement of
    error messages (ConfigError.field is the setting's name) all derive from SETTINGS; its default
    is the RunConfig field's default."""

    name: str  # the CLI flag is --name-with-dashes
    path: tuple[str, ...]  # attribute path inside RunConfig
    kind: type  # int | float | str | bool
    label: str
    help: str = ""
    low: float | None = None
    high: float | None = None
    open_low: bool = False  # (low, ...] instead of [low, ...]
    open_high: bool = False
    choices: tuple[str, ...] = ()
    auto: bool = False  # 0 is also valid: the value is then chosen from the run (the help says how)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default(self) -> Any:
        return self.get(RunConfig())

    def get(self, config: RunConfig) -> Any:
        value: Any = config
        for attr in self.path:
            value = getattr(value, attr)
        return value

    def problem(self, value: Any) -> str | None:
        """The ConfigError message for `value`, None when it is valid."""
        shown = repr(value) if isinstance(value, str) else value
        if self.choices:
            return None if value in self.choices else f"{self.name} must be one of {', '.join(self.choices)}. Received: {self.name}={shown}"
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{self.name} must be true or false. Received: {self.name}={shown}"
        typed = (isinstance(value, int) and not isinstance(value, bool)) if self.kind is int else _finite(value)
        if typed and self.auto and value == 0:
            return None
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low) if typed else False
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high) if typed else False
        return None if typed and low_ok and high_ok else f"{self.name} must be {self.range_text}. Received: {self.name}={shown}"

    @property
    def range_text(self) -> str:
        if self.auto:
            return "0 (automatic) or " + dataclasses.replace(self, auto=False).range_text
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


_BN, _ARCH, _PROBE = ("arch", "bn"), ("arch",), ("probe",)
_INIT_HELP = "the value {} starts from before any training step"
SETTINGS: tuple[Setting, ...] = (
    Setting("momentum", (*_BN, "momentum"), float, "BN momentum m: moving = m·moving + (1 − m)·batch", "Keras convention; PyTorch's momentum is 1 − m", 0, 1),
    Setting("epsilon", (*_BN, "epsilon"), float, "BN epsilon", "added to the variance before dividing by its square root", 0, open_low=True),
    Setting("center", (*_BN, "center"), bool, "BN center (learn β)", "add a learned offset β after normalising"),
    Setting("scale", (*_BN, "scale"), bool, "BN scale (learn γ)", "multiply by a learned scale γ after normalising"),
    Setting("beta_initializer", (*_BN, "beta_initializer"), str, "β initializer", _INIT_HELP.format("β"), choices=INITIALIZERS),
    Setting("gamma_initializer", (*_BN, "gamma_initializer"), str, "γ initializer", _INIT_HELP.format("γ"), choices=INITIALIZERS),
    Setting(
        "moving_mean_initializer",
        (*_BN, "moving_mean_initializer"),
        str,
        "Moving mean initializer",
        "the mean inference uses before the moving average has seen data",
        choices=INITIALIZERS,
    ),
    Setting(
        "moving_variance_initializer",
        (*_BN, "moving_variance_initializer"),
        str,
        "Moving variance initializer",
        "the variance inference uses before the moving average has seen data",
        choices=INITIALIZERS,
    ),
    Setting("placement", (*_BN, "placement"), str, "BN placement", "after the ReLU (the seed) or before it (the paper)", choices=("after", "before")),
    Setting("norm", (*_ARCH, "norm"), str, "Normalisation", "layer and group normalisation keep no moving statistics", choices=NORMALIZATIONS),
    Setting("dropout", (*_ARCH, "dropout"), float, "Dropout before the Dense head", "0 removes the layer", 0, 1, open_high=True),
    Setting("rescale", (*_ARCH, "rescale"), float, "Pixel rescale factor", "1/255 scales to 0–1; 1 feeds raw pixels as the seed did", 0, open_low=True),
    Setting("zero_pad", (*_ARCH, "zero_pad"), int, "Zero padding", "pixels of ZeroPadding2D before the first block", 0, 8),
    Setting("group_count", (*_ARCH, "group_count"), int, "Groups (GroupNormalization)", "must divide every block's filters", 1, 512),
    Setting("input_size", ("input_size",), int, "Input size (pixels per side)", "", MIN_INPUT_SIZE, MAX_INPUT_SIZE),
    Setting("epochs", ("epochs",), int, "Epochs", "", 1, 500),
    Setting("batch_size", ("batch_size",), int, "Batch size", "images per step: BN's batch statistics come from this many", 2, 1024),
    Setting("shuffle", ("shuffle",), bool, "Shuffle batches each epoch", "off: class by class, in file order: batches that are not i.i.d."),
    Setting("optimizer", ("optimizer",), str, "Optimizer", "", choices=OPTIMIZERS),
    Setting("learning_rate", ("learning_rate",), float, "Learning rate", "", 0, 10, open_low=True),
    Setting(
        "late_epochs",
        ("late_epochs",),
        int,
        "Epochs at the late learning rate",
        "the last N epochs train at the late learning rate, a restart as cyclic schedules make (0: none)",
        0,
        500,
    ),
    Setting("late_learning_rate", ("late_learning_rate",), float, "Late learning rate", "the rate of the last late_epochs epochs", 0, 10, open_low=True),
    Setting("seed", ("seed",), int, "Seed", "data split, weights and batch order", 0, 2**31 - 1),
    Setting("probe", (*_PROBE, "enabled"), bool, "Probe", "record the BN statistics while training"),
    Setting(
        "probe_every",
        (*_PROBE, "every"),
        int,
        "Probe every N steps",
        "0: geometric through the first epoch, dense early where mᵗ moves fastest; epoch ends always",
        0,
        100_000,
    ),
    Setting(
        "probe_budget",
        (*_PROBE, "budget"),
        float,
        "Time the probe may take inside training",
        "a share of training time. Each record runs the probe batch and the population sample forward from a weight snapshot; "
        "records are made as training goes, paced evenly over the steps, or sooner within this share (live charts); "
        "0 makes every record when training ends, so training itself runs at full speed",
        0,
        NO_BUDGET_LIMIT,
    ),
    Setting(
        "probe_batch",
        (*_PROBE, "probe_batch"),
        int,
        "Probe batch",
        "fixed validation images for histograms and two-mode accuracy; 0: the training batch size, within 8–32",
        8,
        2048,
        auto=True,
    ),
    Setting(
        "population_samples",
        (*_PROBE, "population_samples"),
        int,
        "Population samples",
        "fixed training images for the population statistics; 0: four training batches, 64 to 128",
        8,
        20000,
        auto=True,
    ),
    Setting(
        "population_every",
        (*_PROBE, "population_every"),
        int,
        "Measure the population every N records",
        "the population sample runs forward at every N-th record and the last; 1 measures it at every record (~2× the probe's work)",
        1,
        10_000,
    ),
    Setting("bins", (*_PROBE, "bins"), int, "Histogram bins", "", 4, 200),
)
SETTING = {s.name: s for s in SETTINGS}
FILTERS_RANGE, BLOCKS_RANGE = (1, 512), (1, 6)
BLOCK_RANGES = {"filters": FILTERS_RANGE, "kernel": (1, 11), "pool": (1, 4), "pool_stride": (1, 4)}  # pool_stride None: = pool


def with_settings(config: RunConfig, **values: Any) -> RunConfig:
    """`config` with settings replaced by name (nested dataclasses are replaced along each path)."""
    for name, value in values.items():
        config = _replace_path(config, SETTING[name].path, value)
    return config


def with_filters(arch: ArchConfig, filters: tuple[int, ...] | list[int]) -> ArchConfig:
    """`arch` with one conv block per entry of `filters`: its own blocks keep their kernel and pool,
    added ones are plain Conv(3×3) + MaxPool(2)."""
    blocks = tuple(dataclasses.replace(arch.blocks[i], filters=f) if i < len(arch.blocks) else ConvBlock(f) for i, f in enumerate(filters))
    return dataclasses.replace(arch, blocks=blocks)


def _replace_path(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace_path(getattr(obj, path[0]), path[1:], value)})


def _check(ok: bool, message: str, field: str = "") -> None:
    if not ok:
        raise ConfigError(message, field)


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: RunConfig) -> RunConfig:
    """Raise ConfigError naming the first bad field; return the config unchanged when valid."""
    for setting in SETTINGS:
        problem = setting.problem(setting.get(config))
        _check(problem is None, problem or "", setting.name)
    blocks = config.arch.blocks
    low, high = BLOCKS_RANGE
    _check(low <= len(blocks) <= high, f"blocks must number {low} to {high}. Received: {len(blocks)} blocks", "filters")
    for i, block in enumerate(blocks):
        for name, (low, high) in BLOCK_RANGES.items():
            value = getattr(block, name)
            _check(
                value is None or (isinstance(value, int) and low <= value <= high),
                f"block {i + 1}: {name} must be in [{low}, {high}]. Received: {name}={value}",
                "filters" if name == "filters" else "",
            )
    return config


def check_batch_size(batch_size: int, train_images: int | None) -> None:
    """Refuse a batch larger than the training set once its size is known (None: not yet known).
    Keras would silently train on one short batch per epoch, so BN would see the whole set as one
    batch and the run would take a fraction of the steps its settings suggest."""
    _check(
        not train_images or batch_size <= train_images,
        f"batch_size must be at most the {train_images} training images of this data set. Received: batch_size={batch_size}",
        "batch_size",
    )
