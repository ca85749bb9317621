"""`python -m bench.raw_pixels`: the attempts at the notebook's exact models (raw 0–255 input, no
Rescaling layer) that docs/story.md reports (`--docs` writes the printed lines there). The four presets train on raw pixels, on the embedded data
and on photo-like variants of it (a large positive mean per channel, scene-level exposure and
contrast), for several seeds; one JSON line per (data, seed). `--dead` adds, for `more-layers`, the
share of each conv layer's ReLU channels that are zero for every test image after training.

Targets (issue 15): initial and more-layers test ≥ 0.8, bn fit ≥ 0.95 with test ≤ 0.6, final ≥ 0.95.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from bench.docs import fenced, write_generated
from bnviz import data as D
from bnviz.config import with_settings
from bnviz.presets import PRESETS, preset_config

Renderer = Callable[[np.random.Generator, np.ndarray, int], np.ndarray]


def photo(exposure: tuple[float, float], contrast: tuple[float, float], cast: tuple[float, float], noise: float = 8.0) -> Renderer:
    """Images like photographs: per image a colour cast (each channel's mean), an exposure and a contrast
    applied to the class's mask, so the per-channel mean is large and varies from scene to scene."""

    def render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        y, x = coords[None, :, None], coords[None, None, :]
        mask = np.empty((len(labels), size, size), np.float32)
        for label, draw in enumerate(D.MASKS):
            rows = np.flatnonzero(labels == label)
            mask[rows] = draw(rng, len(rows), y, x)
        n = len(labels)
        mean = rng.uniform(*cast, (n, 1, 1, 3)).astype(np.float32)
        images = rng.uniform(*exposure, (n, 1, 1, 1)) * mean * (1 + rng.uniform(*contrast, (n, 1, 1, 1)) * (1 - 2 * mask[..., None]))
        images += rng.normal(0, noise, images.shape)
        return np.clip(images, 0, 255).astype(np.float32)

    return render


VARIANTS: dict[str, Renderer | None] = {
    "embedded": None,  # bnviz.data.synthetic as it is
    "photo": photo(exposure=(0.6, 1.4), contrast=(0.25, 0.6), cast=(90, 170)),
    "photo-narrow": photo(exposure=(0.85, 1.15), contrast=(0.3, 0.6), cast=(110, 170)),
    "photo-wide": photo(exposure=(0.4, 1.6), contrast=(0.2, 0.8), cast=(60, 190)),
}


def dataset(variant: str, seed: int, size: int = 64) -> D.Dataset:
    """The embedded data set's splits (6 classes, 200/50/50 per class), drawn by `variant`'s renderer."""
    render = VARIANTS[variant]
    if render is None:
        return D.synthetic(size, seed)
    rng, splits = np.random.default_rng(seed), []
    for per_class in (200, 50, 50):
        labels = rng.permutation(np.repeat(np.arange(len(D.MASKS), dtype=np.int32), per_class))
        splits += [render(rng, labels, size), labels]
    return D.Dataset(variant, D.SYNTHETIC_CLASSES, *splits)


def dead_channels(model, x: np.ndarray) -> list[float]:
    """Per conv layer, the share of ReLU channels that are zero for every image of `x`."""
    import keras

    taps = keras.Model(model.input, [layer.output for layer in model.layers if layer.name.startswith("conv")])
    return [round(float((out.numpy().max(axis=(0, 1, 2)) <= 0).mean()), 3) for out in taps(x)]


def attempt(variant: str, seed: int, epochs: int, learning_rate: float, dead: bool) -> dict:
    """The four presets on raw pixels: test accuracy in inference mode, bn's last fit accuracy, seconds."""
    import keras

    from bnviz.tf.models import compile_model

    data, started = dataset(variant, seed), time.monotonic()
    out: dict = {
        "data": variant,
        "seed": seed,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "pixel_mean": round(float(data.x_train.mean()), 1),
        "pixel_std": round(float(data.x_train.std()), 1),
    }
    for preset in PRESETS:
        keras.utils.set_random_seed(seed)
        model = compile_model(with_settings(preset_config(preset, seed=seed, epochs=epochs, learning_rate=learning_rate), rescale=1.0), 3, 6)
        history = model.fit(data.x_train, data.y_train, batch_size=32, epochs=epochs, verbose=0)
        out[preset] = round(float(model.evaluate(data.x_test, data.y_test, verbose=0)[1]), 2)
        out |= {"bn_fit": round(float(history.history["accuracy"][-1]), 2)} if preset == "bn" else {}
        out |= {"more_layers_dead": dead_channels(model, data.x_test[:200])} if dead and preset == "more-layers" else {}
    return out | {"seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="embedded,photo,photo-narrow,photo-wide", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--dead", action="store_true", help="also measure more-layers' dead ReLU channels")
    parser.add_argument("--docs", action="store_true", help="also write the JSON lines into docs/story.md (between its markers)")
    args = parser.parse_args(argv)
    lines = []
    for variant in args.data.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            lines.append(json.dumps(attempt(variant, seed, args.epochs, args.learning_rate, args.dead)))
            print(lines[-1], flush=True)
    if args.docs:
        text = "\n".join(lines)
        print(f"wrote {write_generated('story.md', 'bench.raw_pixels', fenced(text))}")


if __name__ == "__main__":
    main()
