"""Run configuration: frozen dataclasses that round-trip through JSON.

Everything the UI, the store and the worker exchange is a `RunConfig`; choices are names
(presets, data sets, optimizers) so that configs stay plain JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

NORMALIZATIONS = ("none", "batch", "layer", "group")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
INITIALIZERS = ("zeros", "ones", "glorot_uniform", "he_normal", "random_normal", "random_uniform")
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 224
OWN_PRESET = "own"  # a model bnviz did not build (bnviz.Probe, bnviz inspect): nothing to retrain from its config


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and the value."""


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


@dataclass(frozen=True)
class ArchConfig:
    """A small CNN: optional zero padding, conv blocks, Flatten, Dropout, Dense softmax."""

    blocks: tuple[ConvBlock, ...] = (ConvBlock(16), ConvBlock(32, pool_stride=1), ConvBlock(16))
    rescale: float = 1 / 255  # a parameter-free Rescaling layer first; 1.0 feeds raw pixels, as the seed notebook did
    zero_pad: int = 1  # the seed starts with ZeroPadding2D()
    norm: str = "batch"  # none | batch | layer | group (the last two keep no running statistics)
    bn: BNConfig = field(default_factory=BNConfig)
    dropout: float = 0.5  # before the Dense head; 0 removes the layer
    group_count: int = 4  # groups for GroupNormalization


@dataclass(frozen=True)
class ProbeConfig:
    """What the probe records and how often (see bnviz.probe)."""

    enabled: bool = True
    every: int = 0  # steps between probes; 0 = geometric schedule (dense early, where mᵗ moves); epoch ends always
    probe_batch: int = 64  # fixed validation images for the histograms and the two-mode accuracy; 64 give ~10⁶ values per layer
    population_samples: int = 256  # fixed training images for the PreciseBN-style population stats (8 batches of 32)
    # Every probe record runs 2 × probe_batch + population_samples images forward. On the default run (python -m bench) a
    # record at 128/512 costs ~13 training steps, at 64/256 ~6; the diagnosis' thresholds (0.25 and 1 population SD) are
    # far above the sampling error of 256 images.
    bins: int = 40  # histogram bins, shared by train mode and inference mode
    budget: float = 0.03  # share of training time records may take inside the training loop; the rest are made when training ends


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
    optimizer: str = "adam"
    learning_rate: float = 1e-3
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


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from `dataclasses.asdict` output (unknown keys are an error)."""
    arch = dict(data.get("arch", {}))
    if "blocks" in arch:
        arch["blocks"] = tuple(ConvBlock(**b) for b in arch["blocks"])
    if "bn" in arch:
        arch["bn"] = BNConfig(**arch["bn"])
    rest = {k: v for k, v in data.items() if k not in ("arch", "probe")}
    try:
        return RunConfig(arch=ArchConfig(**arch), probe=ProbeConfig(**data.get("probe", {})), **rest)
    except TypeError as exc:
        raise ConfigError(f"Unknown configuration field: {exc}") from exc


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def validate(config: RunConfig) -> RunConfig:
    """Raise ConfigError naming the first bad field; return the config unchanged when valid."""
    bn, arch = config.arch.bn, config.arch
    _check(_finite(bn.momentum) and 0.0 <= bn.momentum <= 1.0, f"momentum must be in [0, 1]. Received: momentum={bn.momentum}")
    _check(_finite(bn.epsilon) and bn.epsilon > 0, f"epsilon must be > 0. Received: epsilon={bn.epsilon}")
    _check(bn.placement in ("after", "before"), f"placement must be 'after' or 'before'. Received: placement={bn.placement!r}")
    for name in ("beta_initializer", "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer"):
        value = getattr(bn, name)
        _check(value in INITIALIZERS, f"{name} must be one of {', '.join(INITIALIZERS)}. Received: {name}={value!r}")
    _check(arch.norm in NORMALIZATIONS, f"norm must be one of {', '.join(NORMALIZATIONS)}. Received: norm={arch.norm!r}")
    _check(1 <= len(arch.blocks) <= 6, f"blocks must number 1 to 6. Received: {len(arch.blocks)} blocks")
    for i, b in enumerate(arch.blocks):
        _check(1 <= b.filters <= 512, f"block {i + 1}: filters must be in [1, 512]. Received: filters={b.filters}")
        _check(1 <= b.kernel <= 11, f"block {i + 1}: kernel must be in [1, 11]. Received: kernel={b.kernel}")
        _check(1 <= b.pool <= 4, f"block {i + 1}: pool must be in [1, 4]. Received: pool={b.pool}")
        _check(b.pool_stride is None or 1 <= b.pool_stride <= 4, f"block {i + 1}: pool_stride must be in [1, 4]. Received: pool_stride={b.pool_stride}")
    _check(_finite(arch.dropout) and 0.0 <= arch.dropout < 1.0, f"dropout must be in [0, 1). Received: dropout={arch.dropout}")
    _check(_finite(arch.rescale) and arch.rescale > 0, f"rescale must be > 0. Received: rescale={arch.rescale}")
    _check(0 <= arch.zero_pad <= 8, f"zero_pad must be in [0, 8]. Received: zero_pad={arch.zero_pad}")
    _check(
        isinstance(config.input_size, int) and MIN_INPUT_SIZE <= config.input_size <= MAX_INPUT_SIZE,
        f"input_size must be in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}]. Received: input_size={config.input_size}",
    )
    _check(isinstance(config.epochs, int) and 1 <= config.epochs <= 500, f"epochs must be in [1, 500]. Received: epochs={config.epochs}")
    _check(isinstance(config.batch_size, int) and 2 <= config.batch_size <= 1024, f"batch_size must be in [2, 1024]. Received: batch_size={config.batch_size}")
    _check(config.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}. Received: optimizer={config.optimizer!r}")
    lr = config.learning_rate
    _check(_finite(lr) and 0 < lr <= 10, f"learning_rate must be in (0, 10]. Received: learning_rate={lr}")
    p = config.probe
    _check(p.every >= 0, f"probe every must be >= 0 (0 = geometric schedule). Received: every={p.every}")
    _check(_finite(p.budget) and 0 <= p.budget <= 100, f"probe budget must be in [0, 100] (a share of training time). Received: budget={p.budget}")
    _check(8 <= p.probe_batch <= 2048, f"probe_batch must be in [8, 2048]. Received: probe_batch={p.probe_batch}")
    _check(8 <= p.population_samples <= 20000, f"population_samples must be in [8, 20000]. Received: population_samples={p.population_samples}")
    _check(4 <= p.bins <= 200, f"bins must be in [4, 200]. Received: bins={p.bins}")
    return config


def check_batch_size(batch_size: int, train_images: int | None) -> None:
    """Refuse a batch larger than the training set once its size is known (None: not yet known).
    Keras would silently train on one short batch per epoch, so BN would see the whole set as one
    batch and the run would take a fraction of the steps its settings suggest."""
    _check(
        not train_images or batch_size <= train_images,
        f"batch_size must be at most the {train_images} training images of this data set. Received: batch_size={batch_size}",
    )
