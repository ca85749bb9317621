"""The seed notebook's four models as named RunConfig builders (no Keras import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from bnviz.config import ArchConfig, BNConfig, ConfigError, ConvBlock, Norm, RunConfig

TWO_BLOCKS = (ConvBlock(16), ConvBlock(32, pool_stride=1))
THREE_BLOCKS = (*TWO_BLOCKS, ConvBlock(16))


def initial() -> ArchConfig:
    """ZeroPad, Conv16, MaxPool2, Conv32, MaxPool(2, stride 1), Flatten, Dropout, Dense6."""
    return ArchConfig(blocks=TWO_BLOCKS, norm=Norm.NONE)


def more_layers() -> ArchConfig:
    """`initial` plus Conv16 and MaxPool2: fewer parameters, better generalisation."""
    return ArchConfig(blocks=THREE_BLOCKS, norm=Norm.NONE)


def bn() -> ArchConfig:
    """`more-layers` with BatchNormalization(momentum=0.99) after each ReLU conv: the collapse."""
    return ArchConfig(blocks=THREE_BLOCKS, norm=Norm.BATCH, bn=BNConfig(momentum=0.99))


def final() -> ArchConfig:
    """`bn` with momentum 0.8 and no Dropout: the fix."""
    return ArchConfig(blocks=THREE_BLOCKS, norm=Norm.BATCH, bn=BNConfig(momentum=0.8), dropout=0.0)


PRESETS: dict[str, Callable[[], ArchConfig]] = {
    "initial": initial,
    "more-layers": more_layers,
    "bn": bn,
    "final": final,
}

# What the seed notebook reported (train / val / test accuracy), shown beside bnviz's runs.
SEED_RESULTS: dict[str, tuple[float, float, float]] = {
    "initial": (0.83, 0.88, 0.83),
    "more-layers": (0.97, 0.97, 0.98),
    "bn": (0.99, 0.44, 0.46),
    "final": (1.0, 0.99, 0.99),
}


def preset_config(preset: str, **overrides: object) -> RunConfig:
    """A RunConfig for `preset`; `overrides` replace RunConfig fields (epochs, seed, name, ...)."""
    if preset not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}. Choose one of: {', '.join(PRESETS)}")
    return replace(RunConfig(arch=PRESETS[preset](), preset=preset, name=preset), **overrides)
