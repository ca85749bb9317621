"""Layer shapes and parameter counts computed without Keras.

The dashboard shows a model's size and refuses models too large for memory before any worker
starts, and must not import TensorFlow to do so; tests check these numbers against Keras.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bnviz.config import ArchConfig, ConfigError, Norm


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    trainable: int
    non_trainable: int


def _norm_params(arch: ArchConfig, channels: int) -> tuple[int, int]:
    if arch.has_moving_stats:
        per_channel = int(arch.bn.center) + int(arch.bn.scale)
        return per_channel * channels, 2 * channels
    return (2 * channels, 0) if Norm(arch.norm).normalizes else (0, 0)


def layer_table(arch: ArchConfig, input_size: int, channels: int = 3, num_classes: int = 6) -> list[LayerRow]:
    """One row per Keras layer that `bnviz.tf.models.build_model` creates, in order."""
    size, rows = input_size, []
    if arch.rescale != 1:
        rows.append(LayerRow("rescaling", "Rescaling", (size, size, channels), 0, 0))
    if arch.zero_pad:
        size += 2 * arch.zero_pad
        rows.append(LayerRow("zero_padding2d", "ZeroPadding2D", (size, size, channels), 0, 0))
    for i, block in enumerate(arch.blocks, start=1):
        size = size - block.kernel + 1
        if size < 1:
            raise ConfigError(f"Input size {input_size} is too small for block {i}: the feature map vanishes", "input_size")
        rows.append(LayerRow(f"conv{i}", "Conv2D", (size, size, block.filters), (block.kernel**2 * channels + 1) * block.filters, 0))
        channels = block.filters
        if arch.norm != "none":
            trainable, frozen = _norm_params(arch, channels)
            rows.append(LayerRow(f"norm{i}", Norm(arch.norm).keras_layer, (size, size, channels), trainable, frozen))
            if arch.bn.placement == "before":
                rows.append(LayerRow(f"relu{i}", "Activation", (size, size, channels), 0, 0))
        stride = block.pool_stride or block.pool
        size = (size - block.pool) // stride + 1
        if size < 1:
            raise ConfigError(f"Input size {input_size} is too small for block {i}: the feature map vanishes", "input_size")
        rows.append(LayerRow(f"pool{i}", "MaxPooling2D", (size, size, channels), 0, 0))
    flat = size * size * channels
    rows.append(LayerRow("flatten", "Flatten", (flat,), 0, 0))
    if arch.dropout:
        rows.append(LayerRow("dropout", "Dropout", (flat,), 0, 0))
    rows.append(LayerRow("dense", "Dense", (num_classes,), (flat + 1) * num_classes, 0))
    return rows


def param_counts(arch: ArchConfig, input_size: int, channels: int = 3, num_classes: int = 6) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts, worked out without building the model."""
    return param_totals((r.trainable, r.non_trainable) for r in layer_table(arch, input_size, channels, num_classes))


def param_totals(layers: Iterable[tuple[int, int]]) -> dict[str, int]:
    """Total, trainable and non-trainable counts from per-layer (trainable, non-trainable) pairs,
    from this module's layer table or a built model's (bnviz.tf.models.layer_rows)."""
    pairs = list(layers)
    trainable, frozen = sum(t for t, _ in pairs), sum(f for _, f in pairs)
    return {"total": trainable + frozen, "trainable": trainable, "non_trainable": frozen}


def activation_bytes(arch: ArchConfig, input_size: int, batch_size: int, channels: int = 3) -> int:
    """A rough upper bound on training memory: float32 activations (kept for backprop) and
    gradients of every layer for one batch, plus parameters with Adam's two slots."""
    rows = layer_table(arch, input_size, channels)
    activations = sum(_prod(r.output_shape) for r in rows) + input_size * input_size * channels
    params = sum(r.trainable + r.non_trainable for r in rows)
    return 4 * (2 * activations * batch_size + 4 * params)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out
