"""Build Keras models from an ArchConfig (functional API, so the probe can tap every layer)."""

from __future__ import annotations

import math

import keras
from keras import layers

from bnviz.config import ArchConfig, Norm, RunConfig
from bnviz.tf.keras_internals import all_layers, first_parent


def _norm_layer(arch: ArchConfig, index: int) -> layers.Layer:
    name = f"norm{index}"
    if arch.norm == Norm.LAYER:
        return layers.LayerNormalization(name=name)
    if arch.norm == Norm.GROUP:
        return layers.GroupNormalization(groups=arch.group_count, name=name)
    return layers.BatchNormalization(**arch.bn.keras_arguments(), name=name)


def _block(x, arch: ArchConfig, index: int):
    block = arch.blocks[index - 1]
    norm_first = Norm(arch.norm).normalizes and arch.bn.placement == "before"
    x = layers.Conv2D(block.filters, block.kernel, activation=None if norm_first else "relu", name=f"conv{index}")(x)
    if norm_first:
        x = layers.Activation("relu", name=f"relu{index}")(_norm_layer(arch, index)(x))
    elif Norm(arch.norm).normalizes:
        x = _norm_layer(arch, index)(x)
    return layers.MaxPooling2D(block.pool, strides=block.pool_stride or block.pool, name=f"pool{index}")(x)


def build_model(arch: ArchConfig, input_size: int, channels: int = 3, num_classes: int = 6) -> keras.Model:
    """The seed's CNN family: [Rescaling] [ZeroPad] (Conv-ReLU[-Norm]-Pool)×n Flatten [Dropout] Dense-softmax."""
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = layers.Rescaling(arch.rescale, name="rescaling")(inputs) if arch.rescale != 1 else inputs
    x = layers.ZeroPadding2D(arch.zero_pad, name="zero_padding2d")(x) if arch.zero_pad else x
    for index in range(1, len(arch.blocks) + 1):
        x = _block(x, arch, index)
    x = layers.Flatten(name="flatten")(x)
    if arch.dropout:
        x = layers.Dropout(arch.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="dense")(x)
    return keras.Model(inputs, outputs, name="bnviz")


def make_optimizer(config: RunConfig) -> keras.optimizers.Optimizer:
    choices = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return choices[config.optimizer](learning_rate=config.learning_rate)


def compile_model(config: RunConfig, channels: int, num_classes: int) -> keras.Model:
    """Build and compile the model a run trains."""
    model = build_model(config.arch, config.input_size, channels, num_classes)
    model.compile(optimizer=make_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def uncompiled_clone(model: keras.Model) -> keras.Model:
    """`model`'s graph on new variables, without the compile `clone_model` copies: that recompiles from
    the compile config, which fails on a user's unregistered custom loss or optimizer, and builds an
    optimizer a copy never uses (a quarter of the clone's time)."""
    compiled = model.compiled
    model.compiled = False  # read by clone_model alone; restored before anything else can see it
    try:
        return keras.models.clone_model(model)
    finally:
        model.compiled = compiled


def batch_norm_layers(model: keras.Model) -> list[layers.BatchNormalization]:
    """Every BN layer of `model`, nested models and layers included, in a fixed order."""
    return [layer for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)]


def bn_layer_info(model: keras.Model) -> list[dict]:
    """The run info's `bn_layers`: each BN layer's settings and the type of the layer feeding it,
    which the diagnosis reads per layer (runs not built from bnviz's template differ per layer)."""
    feeders, noisy, updates = _feeding_layers(model), _after_noise(model), updates_per_step(model)
    return [
        {
            "name": layer.name,
            "momentum": float(layer.momentum),
            "epsilon": float(layer.epsilon),
            "axis": int(layer.axis),
            "trainable": bool(layer.trainable),
            "synchronized": bool(getattr(layer, "synchronized", False)),
            "after": feeders.get(id(layer), ""),
            "after_noise": id(layer) in noisy,
            "values_per_image": values_per_image(layer),
            "updates_per_step": updates.get(id(layer), 1),
        }
        for layer in batch_norm_layers(model)
    ]


def updates_per_step(model: keras.Model) -> dict[int, int]:
    """BN layers (by identity) whose moving statistics a training step updates more than once: one
    inside TimeDistributed over T steps is called once per time step, so it updates T times and its
    momentum per training step is mᵀ. Layers not listed update once."""
    updates = {}
    for wrapper in all_layers(model):
        if isinstance(wrapper, layers.TimeDistributed):
            steps = _time_steps(wrapper)
            updates.update({id(bn): steps for bn in batch_norm_layers(wrapper)} if steps else {})
    return updates


def _input_shape(layer: layers.Layer) -> tuple | None:
    """The layer's symbolic input shape; None for a layer called several times or never (a subclassed model's)."""
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return None


def _time_steps(wrapper: layers.TimeDistributed) -> int | None:
    shape = _input_shape(wrapper)
    return shape[1] if shape else None


def values_per_image(layer: layers.BatchNormalization) -> int | None:
    """How many values of each channel one image gives the layer (1 after Dense, H·W after a conv);
    None where its input shape is not fixed. A batch of b images gives b times as many."""
    shape = _input_shape(layer)
    if shape is None:
        return None
    dims = [d for i, d in enumerate(shape[1:], start=1) if i != layer.axis % len(shape)]
    return None if None in dims else math.prod(dims)


NOISE_LAYERS = (
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianDropout,
    layers.GaussianNoise,
    layers.AlphaDropout,
)  # active in training mode only


def _after_noise(model: keras.Model) -> set[int]:
    """BN layers that come after a Dropout or noise layer in the model's layer order (its construction
    order, which follows the graph): in training they see the noisy input's variance, at inference not."""
    seen_noise, after = False, set()
    for layer in all_layers(model):
        seen_noise = seen_noise or isinstance(layer, NOISE_LAYERS)
        if seen_noise and isinstance(layer, layers.BatchNormalization):
            after.add(id(layer))
    return after


def _feeding_layers(model: keras.Model) -> dict[int, str]:
    """Class name of the layer whose output each layer consumes first (Input when fed by the model input)."""
    feeders: dict[int, str] = {}
    for layer in all_layers(model):
        parent = first_parent(layer)
        if parent is not None:
            feeders[id(layer)] = type(parent).__name__
    return feeders


def layer_rows(model: keras.Model) -> list[dict]:
    """The model's layer table: name, type, output shape and parameter counts."""
    rows = []
    for layer in (layer for layer in model.layers if not isinstance(layer, layers.InputLayer)):  # a Sequential lists none
        trainable = sum(int(v.numpy().size) for v in layer.trainable_weights)
        frozen = sum(int(v.numpy().size) for v in layer.non_trainable_weights)
        rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": _output_shape(layer), "trainable": trainable, "non_trainable": frozen})
    return rows


def _output_shape(layer: layers.Layer) -> list:
    """The layer's output shape without the batch axis; [] for a layer of a subclassed model (no symbolic output)."""
    try:
        return list(layer.output.shape[1:])
    except (AttributeError, ValueError):
        return []


def load_model_safely(path: str) -> keras.Model:
    """Load a `.keras` file with safe mode on: no lambda or pickled code is ever executed."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)
