"""Story mode: the seed notebook's four models in order, each with a short explanation, for a
teacher to replay in class. The runs are tagged with a "story-..." sweep id so that the dashboard
and `python -m bnviz story` find the same set."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bnviz.config import RunConfig, validate, with_settings
from bnviz.presets import PRESETS, preset_config
from bnviz.stats import init_weight
from bnviz.store import Run, Store

STORY_PREFIX = "story-"


@dataclass(frozen=True)
class Chapter:
    preset: str
    title: str
    text: str
    chart: str  # which figure tells this chapter: "curves", "histograms" or "compare"


CHAPTERS = (
    Chapter("initial", "1 · A first CNN learns",
            "Two conv blocks, Flatten, Dropout and a Dense layer. Almost all of its 2.3 M parameters sit in "
            "the Dense layer behind a stride-1 pooling. It learns and generalises: the seed notebook had 0.83 / 0.88 / 0.83.",
            "curves"),
    Chapter("more-layers", "2 · One more block: fewer parameters, better accuracy",
            "A third Conv16 + MaxPool block shrinks the feature map eight-fold, so the Dense layer and the model shrink to "
            "279,382 parameters, and accuracy rises (seed: 0.97 / 0.97 / 0.98).",
            "curves"),
    Chapter("bn", "3 · Add BatchNormalization: train 0.99, test collapses",
            "BatchNormalization after each ReLU conv, Keras's default momentum 0.99. Training accuracy climbs, yet evaluate "
            "on validation and test data collapses (seed: 0.99 / 0.44 / 0.46). It is not overfitting: recalibrating the BN "
            "statistics on training batches (PreciseBN, no retraining, no test data) gives the test accuracy back. "
            "Inference normalises with the moving mean and variance, "
            "which start at 0 and 1 and after t steps still carry 0.99ᵗ of those values — about a third after 100 steps. "
            "The first BN layer's inputs vary far less than 1, so the lingering initial variance makes inference divide by a "
            "standard deviation many times too large and squash the activations. Compare the two histograms: same layer, "
            "same images, two different normalisations.",
            "histograms"),
    Chapter("final", "4 · Momentum 0.8: the fix",
            "With momentum 0.8 (PyTorch's momentum=0.2) the moving average spans about 5 batches and forgets its initial "
            "values within about 21 steps, so inference uses the statistics of the data (seed: 1 / 0.99 / 0.99; Dropout "
            "was removed too). Another fix needs no retraining: recalibrate the statistics after training (PreciseBN).",
            "compare"),
)


# The seed notebook fed raw 0–255 pixels; bnviz's presets scale them first (README, "One deliberate difference"). This
# chapter trains the two models that change most without that layer, beside their scaled twins. Its numbers come from
# 3 seeds on the embedded data (README: "The notebook's exact models: attempts").
RAW_PRESETS = ("more-layers", "bn")
RAW_SUFFIX = " raw"  # latest_story's key for a preset trained on raw pixels
RAW_CHAPTER = Chapter(
    "raw", "5 · The notebook's raw pixels",
    "The seed notebook fed its models raw 0–255 pixels; bnviz's presets put a parameter-free Rescaling(1/255) first. Raw "
    "pixels change both halves of the story. Without BN every activation is 255 times larger, so the first predictions are "
    "wildly over-confident and Adam's first steps can switch a whole layer off: on the embedded data `more-layers` ended with "
    "every ReLU channel of conv3 silent for every image and tested at chance (0.17) in 2 of 3 seeds. With BN, the first BN "
    "layer's input varies far more than the initial moving variance 1, so what the moving statistics still remember of it "
    "hardly matters: `bn` tested at 0.86–0.92 instead of collapsing. The seed collapsed on photographs after far more steps "
    "(about 439 per epoch), where the initial values are long forgotten and lag is the likelier cause. Train the raw pair "
    "to see it beside the scaled models.",
    "raw")


def raw_configs(**overrides: object) -> list[RunConfig]:
    """RAW_PRESETS as the seed notebook fed them: raw 0–255 pixels, no Rescaling layer."""
    return [validate(with_settings(preset_config(p, name=f"{p} (raw pixels)", **overrides), rescale=1.0)) for p in RAW_PRESETS]


def story_configs(**overrides: object) -> list[RunConfig]:
    """The four chapters' run configs, with shared overrides (epochs, input_size, seed, dataset)."""
    return [validate(preset_config(chapter.preset, **overrides)) for chapter in CHAPTERS]


def new_story_id() -> str:
    return STORY_PREFIX + time.strftime("%Y%m%d-%H%M%S")


def story_key(run: Run) -> str:
    """A story run's key: its preset, with RAW_SUFFIX when it was fed raw pixels."""
    return run.preset + (RAW_SUFFIX if run.config.arch.rescale == 1 else "")


def latest_story(store: Store) -> dict[str, Run]:
    """The newest story's runs by story_key (empty when no story was run)."""
    runs = [r for r in store.list_runs() if (r.sweep or "").startswith(STORY_PREFIX)]
    if not runs:
        return {}
    newest = max(r.sweep for r in runs)
    return {story_key(r): r for r in runs if r.sweep == newest and r.preset in PRESETS}


def primer(momentum: float = 0.99, steps: int = 100) -> str:
    """The landing page's two sentences on the problem; the share left is computed, never typed in."""
    left = float(init_weight(momentum, steps))
    return (f"BatchNormalization keeps running averages of each layer's mean and variance during training and uses them, instead of "
            f"the batch's own statistics, at test time. They start at 0 and 1, and at momentum m = {momentum:g} the starting values "
            f"still make up {momentum:g}^{steps} ≈ {left:.0%} of them after {steps} steps: a model can fit its "
            "training data well and still test near chance.")
