"""Presets build with the seed's exact parameter counts; the Keras-free shape table agrees."""

from __future__ import annotations

import pytest

from bnviz.config import ArchConfig, BNConfig, ConvBlock
from bnviz.presets import PRESETS, preset_config
from bnviz.shapes import layer_table, param_counts

SEED_COUNTS = {"initial": (2_286_246, 0), "more-layers": (279_382, 0), "bn": (279_638, 128), "final": (279_638, 128)}


def _keras_counts(model) -> tuple[int, int]:
    frozen = sum(int(v.numpy().size) for v in model.non_trainable_weights)
    return model.count_params(), frozen


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_match_seed_parameter_counts_at_224(name):
    from bnviz.tf.models import build_model

    model = build_model(PRESETS[name](), 224)
    assert _keras_counts(model) == SEED_COUNTS[name]
    counts = param_counts(PRESETS[name](), 224)
    assert (counts["total"], counts["non_trainable"]) == SEED_COUNTS[name]


CUSTOM = [
    ArchConfig(blocks=(ConvBlock(8, 5, 2), ConvBlock(12, 3, 3, 1)), norm="batch", bn=BNConfig(placement="before", center=False), dropout=0.2),
    ArchConfig(blocks=(ConvBlock(8),), norm="layer", zero_pad=0, dropout=0.0),
    ArchConfig(blocks=(ConvBlock(8), ConvBlock(8)), norm="group", group_count=2),
    ArchConfig(blocks=(ConvBlock(4, 1, 1),), norm="batch", bn=BNConfig(scale=False, center=False)),
]


@pytest.mark.parametrize("arch", CUSTOM)
def test_shape_table_agrees_with_keras(arch):
    from bnviz.tf.models import build_model, layer_rows

    model = build_model(arch, 32)
    predicted = layer_table(arch, 32)
    actual = layer_rows(model)
    assert [(r.kind, list(r.output_shape), r.trainable, r.non_trainable) for r in predicted] == [
        (r["type"], r["output_shape"], r["trainable"], r["non_trainable"]) for r in actual
    ]


def test_bn_layers_carry_every_config_parameter():
    from bnviz.tf.models import batch_norm_layers, build_model

    bn = BNConfig(momentum=0.7, epsilon=1e-5, center=False, moving_variance_initializer="zeros")
    model = build_model(ArchConfig(bn=bn), 32)
    layers = batch_norm_layers(model)
    assert len(layers) == 3
    assert all(layer.momentum == 0.7 and layer.epsilon == 1e-5 and not layer.center for layer in layers)
    assert float(layers[0].moving_variance.numpy().max()) == 0.0


def test_bn_placement_before_puts_norm_between_conv_and_relu():
    from bnviz.tf.models import build_model

    model = build_model(ArchConfig(bn=BNConfig(placement="before")), 32)
    names = [layer.name for layer in model.layers]
    assert names.index("conv1") < names.index("norm1") < names.index("relu1") < names.index("pool1")
    assert model.get_layer("conv1").activation.__name__ == "linear"


def test_feature_map_that_vanishes_is_refused():
    with pytest.raises(ValueError, match="too small"):
        layer_table(preset_config("bn").arch, 8)


def test_bn_layer_info_describes_each_bn_layer_of_a_template_model():
    """What a run records in info["bn_layers"] (the diagnosis reads momentum and epsilon per layer)."""
    from bnviz.tf.models import bn_layer_info, build_model

    arch = ArchConfig(blocks=(ConvBlock(4), ConvBlock(4)), bn=BNConfig(momentum=0.8, epsilon=0.01))
    assert bn_layer_info(build_model(arch, 32)) == [
        {
            "name": f"norm{i}",
            "momentum": 0.8,
            "epsilon": 0.01,
            "axis": -1,
            "trainable": True,
            "synchronized": False,
            "after": "Conv2D",
            "after_noise": False,
            "values_per_image": values,
            "updates_per_step": 1,
        }
        for i, values in ((1, 32 * 32), (2, 14 * 14))
    ]  # H·W of each conv output (zero padding 1 on 32²)
    before = ArchConfig(blocks=(ConvBlock(4),), bn=BNConfig(placement="before"), norm="batch")
    assert [layer["after"] for layer in bn_layer_info(build_model(before, 32))] == ["Conv2D"]
    assert bn_layer_info(build_model(ArchConfig(norm="none"), 32)) == []


def test_every_bn_setting_is_a_keras_batch_normalization_argument():
    """BNConfig is the one list of BN arguments: the layer is built from it, so each must be one Keras accepts."""
    import inspect

    import keras

    from bnviz.config import BN_ARGUMENTS
    from bnviz.tf.models import build_model

    accepted = inspect.signature(keras.layers.BatchNormalization).parameters
    assert set(BN_ARGUMENTS) <= set(accepted) and "placement" not in BN_ARGUMENTS
    layer = build_model(ArchConfig(blocks=(ConvBlock(4),), bn=BNConfig(momentum=0.7, epsilon=0.02, center=False)), 16, 3).get_layer("norm1")
    assert (layer.momentum, layer.epsilon, layer.center) == (0.7, 0.02, False)
