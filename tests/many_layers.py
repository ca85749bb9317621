"""Runs with many BN layers, as practitioners bring them: a real `keras.applications.MobileNetV2`
(52 BatchNormalization layers, built offline with `weights=None`) recorded with `bnviz.Probe` on tiny
synthetic data, and a hand-made 53-layer `RunData` with one layer planted to go wrong first, for
tests that must stay fast."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bnviz.records import LayerTrace, RunData
from bnviz.store import Store
from tests.test_figures import make_data, make_layer

MANY = 53  # BN layers of keras.applications.ResNet50
PLANTED_FIRST, PLANTED_WORST = 7, 30  # network positions (0-based) of the hand-made run's first wrong layer and its worst


def many_layer_run(home: Path, steps: int = 4, batch: int = 16) -> RunData:
    """MobileNetV2 (α 0.35, 32×32, 6 classes, 52 BN layers) trained `steps` steps of `batch` with
    `bnviz.Probe` given train, validation and test data; the run as stored in `home`."""
    import keras

    import bnviz
    from bnviz.data import synthetic

    data = synthetic(32, seed=0, train_per_class=max(1, steps * batch // 6), val_per_class=4, test_per_class=4)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=6)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)  # no XLA: tracing dominates already
    probe = bnviz.Probe(
        name="mobilenetv2",
        home=home,
        batch_size=batch,
        display=False,
        train_data=(data.x_train, data.y_train),
        validation_data=(data.x_val, data.y_val),
        test_data=(data.x_test, data.y_test),
    )
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=batch, verbose=0, callbacks=[probe])
    return Store(home).load_run(probe.run_id)


def layer_name(i: int) -> str:
    return f"block_{i:02d}_bn"


def _layer(name: str, gap: float) -> LayerTrace:
    """`make_layer`'s trace renamed, its moving mean `gap` population SDs off (population SD 2) in
    training and in inference mode alike, its moving variance the population's."""
    base = make_layer(name)
    pop = np.full_like(base.pop_mean, 5.0)
    return dataclasses.replace(
        base, moving_mean=pop - 2 * gap, moving_var=np.full_like(base.pop_var, 4.0), infer_mean=pop, infer_var=np.full_like(base.pop_var, 4.0)
    )


def many_layer_data(layers: int = MANY, gaps: dict[int, float] | None = None) -> RunData:
    """A hand-made run of `layers` BN layers whose network order (the run info's layer table) is the
    reverse of their names' (the store hands them out by name): every gap 0.1 SDs but those of the
    layers at network positions PLANTED_FIRST (0.5, the first above the warning threshold) and
    PLANTED_WORST (3, the largest), and two more behind it (2 and 1.5); or `gaps`, network position → SDs."""
    gaps = {PLANTED_FIRST: 0.5, PLANTED_WORST: 3.0, PLANTED_WORST + 5: 2.0, PLANTED_WORST + 9: 1.5} if gaps is None else gaps
    order = [layer_name(layers - 1 - p) for p in range(layers)]
    traces = {name: _layer(name, gaps.get(p, 0.1)) for p, name in enumerate(order)}
    base = make_data()
    run = dataclasses.replace(base.run, info={**base.run.info, "layers": [{"name": name, "class": "BatchNormalization"} for name in order]})
    return dataclasses.replace(base, run=run, layers=dict(sorted(traces.items())))


def planted(position: int, layers: int = MANY) -> str:
    """The name of the hand-made run's layer at network `position`."""
    return layer_name(layers - 1 - position)
