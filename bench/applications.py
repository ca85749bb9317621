"""`python -m bench.applications`: every `keras.applications` family with BatchNormalization, nested in
the user's Functional model as when fine-tuning (`weights=None`: offline), trained a few steps with
`bnviz.Probe`, then saved and read back by `bnviz inspect`. It checks what a sweep over the
architectures users bring can break: every BN layer followed, the first in network order, the
verdict's cause, and the time each takes. Prints the Markdown table of docs/real-models.md (`--docs`
writes it there).

Six steps at batch 8 on tiny synthetic images teach these networks nothing: both BN modes sit near
chance, so the verdicts say what a six-step run is (its statistics still initial, or no model yet),
never which cause a trained model would have; tests/test_zoo.py checks trained verdicts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.docs import write_generated
from bench.util import quiet_tensorflow

STEPS, BATCH, CLASSES = 6, 8, 6


@dataclass(frozen=True)
class Family:
    """One `keras.applications` constructor at the smallest input it takes."""

    name: str
    size: int = 32

    def build(self):
        import keras

        constructor: Callable = getattr(keras.applications, self.name)
        return constructor(weights=None, include_top=False, input_shape=(self.size, self.size, 3))


FAMILIES = (
    Family("ResNet50"),
    Family("ResNet50V2"),
    Family("MobileNetV2"),
    Family("MobileNetV3Small"),
    Family("EfficientNetB0"),
    Family("EfficientNetV2B0"),
    Family("DenseNet121"),
    Family("InceptionV3", 75),
    Family("InceptionResNetV2", 75),
    Family("Xception", 71),
    Family("NASNetMobile"),
    Family("ConvNeXtTiny"),  # LayerNormalization only: the probe must say there is no BN to follow
)


def fine_tuned(family: Family):
    """The user's model around the base: Input → base → pooling → Dense, compiled."""
    import keras

    inputs = keras.Input((family.size, family.size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(family.build()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(pooled))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def sweep(family: Family, home: Path) -> dict:
    """Train `family` with the probe, then inspect its saved model: what each path recorded and said."""
    import keras
    import numpy as np

    import bnviz
    from bnviz.data import synthetic
    from bnviz.diagnose import diagnose, ordered_layers
    from bnviz.store import Store
    from bnviz.tf.inspect import inspect_model
    from bnviz.tf.models import batch_norm_layers
    from tests.test_own_models import save_images

    data = synthetic(family.size, seed=0, train_per_class=STEPS * BATCH // CLASSES, val_per_class=4, test_per_class=4)
    keras.utils.set_random_seed(0)
    model = fine_tuned(family)
    splits = {"train_data": (data.x_train, data.y_train), "validation_data": (data.x_val, data.y_val), "test_data": (data.x_test, data.y_test)}
    start = time.perf_counter()
    probe = bnviz.Probe(name=family.name, home=home / "fit", batch_size=BATCH, display=False, **splits)
    model.fit(data.x_train, data.y_train, batch_size=BATCH, epochs=1, verbose=0, callbacks=[probe])
    fitted = Store(home / "fit").load_run(probe.run_id)
    fit_s = time.perf_counter() - start
    model.save(home / "model.keras")
    start = time.perf_counter()
    images = save_images(home / "images", np.clip(data.x_train, 0, 255), data.y_train)
    inspected_id = inspect_model(Store(home / "inspect"), home / "model.keras", images, batch_size=BATCH)
    inspected = Store(home / "inspect").load_run(inspected_id)
    order = ordered_layers(fitted)
    return {
        "model": family.name,
        "input": family.size,
        "bn_layers": len(batch_norm_layers(model)),
        "followed": len(fitted.layers),
        "inspected": len(inspected.layers),
        "first": order[0] if order else "–",
        "fit_verdict": diagnose(fitted)[0].title.removeprefix("Verdict: "),
        "fit_s": fit_s,
        "inspect_verdict": diagnose(inspected)[0].title.removeprefix("Verdict: "),
        "inspect_s": time.perf_counter() - start,
    }


HEADER = (
    "| base model | input | BN layers | followed: fit / inspect | first BN layer | verdict after 6 steps (fit, probed) | fit s | "
    "verdict of `bnviz inspect` | inspect s |\n|---|---|---|---|---|---|---|---|---|"
)


def table_row(r: dict) -> str:
    return (
        f"| {r['model']} | {r['input']}² | {r['bn_layers']} | {r['followed']} / {r['inspected']} | `{r['first']}` | {r['fit_verdict']} | "
        f"{r['fit_s']:.0f} | {r['inspect_verdict']} | {r['inspect_s']:.0f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [f.name for f in FAMILIES]
    parser.add_argument("models", nargs="*", help=f"default: all of {', '.join(names)}")
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/real-models.md (between its markers)")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.models) - set(names)):
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    quiet_tensorflow()
    rows = []
    for family in (f for f in FAMILIES if f.name in (args.models or names)):
        with tempfile.TemporaryDirectory(prefix="bnviz-apps-") as home:
            rows.append(table_row(sweep(family, Path(home))))
        print(rows[-1], flush=True)
    table = "\n".join([HEADER, *rows])
    print(table)
    if args.docs:
        print(f"wrote {write_generated('real-models.md', 'bench.applications', table)}")


if __name__ == "__main__":
    main()
