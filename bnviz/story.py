"""Story mode: the seed notebook's four models in order, each with a short explanation, for a
teacher to replay in class. The runs are tagged with a "story-..." sweep id so that the dashboard
and `python -m bnviz story` find the same set."""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass

import pandas as pd

from bnviz.config import ConfigError, RunConfig, validate, with_settings
from bnviz.diagnose import GAP_WARNING, VERDICTS, all_layer_figures, diagnose, drift_speed
from bnviz.presets import PRESETS, preset_config
from bnviz.records import Run, RunData
from bnviz.stats import ema_window, init_weight, steps_to_forget
from bnviz.store import Store

STORY_PREFIX = "story-"


@dataclass(frozen=True)
class Chapter:
    preset: str
    title: str
    text: str
    chart: str  # which figure tells this chapter: "curves", "histograms" or "compare"


CHAPTERS = (
    Chapter(
        "initial",
        "1 · A first CNN learns",
        "Two conv blocks, Flatten, Dropout and a Dense layer. Almost all of its 2.3 M parameters sit in "
        "the Dense layer behind a stride-1 pooling. It learns and generalises: the seed notebook had 0.83 / 0.88 / 0.83.",
        "curves",
    ),
    Chapter(
        "more-layers",
        "2 · One more block: fewer parameters, better accuracy",
        "A third Conv16 + MaxPool block shrinks the feature map eight-fold, so the Dense layer and the model shrink to "
        "279,382 parameters, and accuracy rises (seed: 0.97 / 0.97 / 0.98).",
        "curves",
    ),
    Chapter(
        "bn",
        "3 · Add BatchNormalization: train 0.99, test collapses",
        "BatchNormalization after each ReLU conv, Keras's default momentum 0.99. Training accuracy climbs, yet evaluate "
        "on validation and test data collapses (seed: 0.99 / 0.44 / 0.46). It is not overfitting: recalibrating the BN "
        "statistics on training batches (PreciseBN, no retraining, no test data) gives the test accuracy back. "
        "Inference normalises with the moving mean and variance, "
        "which start at 0 and 1 and after t steps still carry 0.99ᵗ of those values — about a third after 100 steps. "
        "The first BN layer's inputs vary far less than 1, so the lingering initial variance makes inference divide by a "
        "standard deviation many times too large and squash the activations. Compare the two histograms: same layer, "
        "same images, two different normalisations. This is the short-run mechanism, and Diagnose names it so: "
        f"“{VERDICTS['stale_initial_values']}”. Chapter 6 shows the long-run one.",
        "histograms",
    ),
    Chapter(
        "final",
        "4 · Momentum 0.8: the fix",
        "With momentum 0.8 (PyTorch's momentum=0.2) the moving average spans about 5 batches and forgets its initial "
        "values within about 21 steps, so inference uses the statistics of the data (seed: 1 / 0.99 / 0.99; Dropout "
        "was removed too). Another fix needs no retraining: recalibrate the statistics after training (PreciseBN).",
        "compare",
    ),
)


# The seed notebook fed raw 0–255 pixels; bnviz's presets scale them first (docs/story.md, "One deliberate difference"). This
# chapter trains the two models that change most without that layer, beside their scaled twins. Its numbers come from
# 3 seeds on the embedded data (docs/story.md: "The notebook's exact models: attempts").
RAW_PRESETS = ("more-layers", "bn")
RAW_SUFFIX = " raw"  # latest_story's key for a preset trained on raw pixels
RAW_CHAPTER = Chapter(
    "raw",
    "5 · The notebook's raw pixels",
    "The seed notebook fed its models raw 0–255 pixels; bnviz's presets put a parameter-free Rescaling(1/255) first. Raw "
    "pixels change both halves of the story. Without BN every activation is 255 times larger, so the first predictions are "
    "wildly over-confident and Adam's first steps can switch a whole layer off: on the embedded data `more-layers` ended with "
    "every ReLU channel of conv3 silent for every image and tested at chance (0.17) in 2 of 3 seeds. With BN, the first BN "
    "layer's input varies far more than the initial moving variance 1, so what the moving statistics still remember of it "
    "hardly matters: `bn` tested at 0.86–0.92 instead of collapsing. The seed collapsed on photographs after far more steps "
    "(about 439 per epoch), where the initial values are long forgotten and lag is the likelier cause (chapter 6). Train "
    "the raw pair to see it beside the scaled models.",
    "raw",
)


# The notebook's own collapse most likely came after thousands of steps: lag, not initial values. This chapter trains
# the +BN model on raw pixels long enough that mᵗ < 1 % (570 steps), its last 2 epochs (76 steps, under one window of
# 100) at a learning rate 50× higher, a restart as cyclic schedules make, so that the weights, and so the batch
# statistics, move fast to the end; once at m = 0.99 and once at 0.8. What differs from the notebook: 16-pixel images of
# the embedded data (half a minute, not hours), and the restart: the notebook's constant rate drifts chaotically on
# this data, so lag would come and go with the seed (`python -m bench.lag_chapter` measures the recipe over seeds).
LAG_MOMENTA = (0.99, 0.8)
LAG_RECIPE = {"input_size": 16, "epochs": 15, "late_epochs": 2, "late_learning_rate": 0.05}
LAG_CHAPTER = Chapter(
    "lag",
    "6 · Lag: the notebook's likelier story",
    "Chapter 3's mechanism needs few steps. The seed notebook trained its photographs for several epochs of about 439 "
    "steps: after 1,000 steps 0.99ᵗ is below 0.005 % and the initial values are gone, yet inference can still collapse. "
    "The moving average is a window of about 1/(1 − m) = 100 steps, so it describes the weights of about m/(1 − m) = 99 "
    "steps ago. While the weights, and so every layer's batch statistics, keep moving, inference normalises with "
    "statistics of a network that no longer exists. This is the long-run mechanism; Diagnose names it "
    f"“{VERDICTS['lag']}”. Here the +BN model trains on raw pixels for many steps, the last epochs at a high learning "
    "rate (a restart, as cyclic schedules make) so that the statistics drift fast, once at m = 0.99 and once at 0.8 — "
    "the same weights, since momentum changes only the moving statistics.",
    "lag",
)


def lag_configs(**overrides: object) -> list[RunConfig]:
    """The lag chapter's pair (LAG_RECIPE on raw pixels) at each of LAG_MOMENTA; only `seed` and `dataset` of
    `overrides` apply: the recipe's length and image size are what make the lag."""
    kept = {k: v for k, v in overrides.items() if k in ("seed", "dataset")}
    base = with_settings(preset_config("bn", **LAG_RECIPE, **kept), rescale=1.0)
    return [validate(base.with_momentum(m).replace(name="lag (raw pixels)")) for m in LAG_MOMENTA]


def raw_configs(**overrides: object) -> list[RunConfig]:
    """RAW_PRESETS as the seed notebook fed them: raw 0–255 pixels, no Rescaling layer."""
    return [validate(with_settings(preset_config(p, name=f"{p} (raw pixels)", **overrides), rescale=1.0)) for p in RAW_PRESETS]


ALL_CHAPTERS = (*CHAPTERS, RAW_CHAPTER, LAG_CHAPTER)


def chapter_configs(names: list[str], **overrides: object) -> list[RunConfig]:
    """The runs the named chapters need (chapter keys: a preset, "raw" or "lag"), each once, in story order."""
    unknown = sorted(set(names) - {c.preset for c in ALL_CHAPTERS})
    if unknown:
        raise ConfigError(f"Unknown chapter {unknown[0]!r}. Choose from: {', '.join(c.preset for c in ALL_CHAPTERS)}")
    presets = [c.preset for c in CHAPTERS if c.preset in names or "raw" in names and c.preset in RAW_PRESETS]  # raw compares with the scaled twins
    configs = [validate(preset_config(p, **overrides)) for p in presets]
    configs += raw_configs(**overrides) if "raw" in names else []
    return configs + (lag_configs(**overrides) if "lag" in names else [])


def story_configs(**overrides: object) -> list[RunConfig]:
    """The four chapters' run configs, with shared overrides (epochs, input_size, seed, dataset)."""
    return [validate(preset_config(chapter.preset, **overrides)) for chapter in CHAPTERS]


def new_story_id() -> str:
    return STORY_PREFIX + time.strftime("%Y%m%d-%H%M%S")


def story_key(run: Run) -> str:
    """A story run's key: its preset, with RAW_SUFFIX when it was fed raw pixels; "lag <m>" for the lag pair."""
    if run.config.late_epochs:
        return lag_key(run.momentum)
    return run.preset + (RAW_SUFFIX if run.config.arch.rescale == 1 else "")


def lag_key(momentum: float) -> str:
    return f"lag {momentum:g}"


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
    return (
        f"BatchNormalization keeps running averages of each layer's mean and variance during training and uses them, instead of "
        f"the batch's own statistics, at test time. They start at 0 and 1, and at momentum m = {momentum:g} the starting values "
        f"still make up {momentum:g}^{steps} ≈ {left:.0%} of them after {steps} steps: a model can fit its "
        "training data well and still test near chance."
    )


# --- the two mechanisms, measured on the story's runs ------------------------------------------------
def _test(data: RunData, evaluation: str = "final", mode: str = "") -> float:
    found = data.evaluations.get(evaluation)
    return found.accuracy_of(f"test{mode}") if found else math.nan


def mean_gap(data: RunData) -> tuple[str, float]:
    """The BN layer whose moving mean sits furthest from the population mean at the end, and how far
    (population SDs, median over channels)."""
    layers = [f for f in all_layer_figures(data) if math.isfinite(f.own_mean_gap)] if data.layers else []
    worst = max(layers, key=lambda f: f.own_mean_gap, default=None)
    return (worst.name, worst.own_mean_gap) if worst else ("", math.nan)


def mechanism_row(data: RunData) -> dict[str, object]:
    """One run's figures that tell the two mechanisms apart: how much of the initial values is left
    (mᵗ), how far the average trails drifting statistics (drift per step × m/(1 − m)), how far the
    moving mean ended from the population, and what inference and PreciseBN score (the recap adds the verdict)."""
    m, t = data.run.momentum, data.steps_trained
    speed = drift_speed(data)
    return {
        "steps t": t,
        "momentum m": m,
        "initial values left, mᵗ": float(init_weight(m, t)),
        "trail: drift × m/(1 − m) (SDs)": speed * m / (1 - m) if m < 1 else math.nan,
        "moving mean off (SDs)": mean_gap(data)[1],
        "test (inference)": _test(data),
        "test (PreciseBN)": _test(data, "recalibrated"),
    }


MECHANISMS = {
    "bn": "3 · initial values (short run)",
    "final": "4 · the fix, m = 0.8",
    lag_key(0.99): "6 · lag (long run)",
    lag_key(0.8): "6 · the same, m = 0.8",
}


def verdict_title(data: RunData) -> str:
    """The verdict as its card heads it, without "Verdict: " (a model that has not learnt reads
    differently from its cause's name)."""
    return diagnose(data)[0].title.removeprefix("Verdict: ")


def mechanisms_frame(datas: dict[str, RunData]) -> pd.DataFrame:
    """The recap: chapter 3's and chapter 6's runs and their m = 0.8 twins, side by side (the runs there are)."""
    rows = {label: mechanism_row(datas[key]) | {"verdict": verdict_title(datas[key])} for key, label in MECHANISMS.items() if key in datas}
    return pd.DataFrame.from_dict(rows, orient="index")


def lag_numbers(lagged: RunData, fixed: RunData | None) -> str:
    """The lag chapter's paragraph of numbers, read from its m = 0.99 run and its m = 0.8 twin."""
    row, config = mechanism_row(lagged), lagged.run.config
    layer, gap = mean_gap(lagged)
    text = (
        f"In this run: {row['steps t']:,} steps, so mᵗ = {row['initial values left, mᵗ']:.2%}: the initial values are gone. In its last "
        f"{config.late_epochs} epochs at learning rate {config.late_learning_rate:g} the batch statistics moved "
        f"{drift_speed(lagged):.3g} population SDs per step, and a window of 1/(1 − m) = {ema_window(lagged.run.momentum):.0f} "
        f"steps trails them by about {row['trail: drift × m/(1 − m) (SDs)']:.2f} SDs: at the end {layer}'s moving mean sits "
        f"{gap:.2f} SDs from the population mean. Test accuracy {row['test (inference)']:.0%} in inference mode, "
        f"{_test(lagged, mode='_batchstats'):.0%} with batch statistics and {row['test (PreciseBN)']:.0%} after PreciseBN "
        "(no retraining)."
    )
    if fixed is not None:
        twin = mechanism_row(fixed)
        text += (
            f" At m = 0.8 the same weights score {twin['test (inference)']:.0%} in inference mode; the moving mean ends "
            f"{twin['moving mean off (SDs)']:.2f} SDs off."
        )
        if twin["test (PreciseBN)"] - twin["test (inference)"] >= GAP_WARNING:
            text += (
                " Even so it loses some accuracy here: at this learning rate the last few batches' statistics differ from step to "
                "step, and a 5-step window follows their noise; PreciseBN, over 50 batches with the final weights, does not."
            )
    forget, trail = steps_to_forget(0.8), 0.8 / 0.2
    return text + (
        f" Momentum 0.8 fixes both mechanisms: a {ema_window(0.8):.0f}-step window forgets the initial values in about "
        f"{forget:.0f} steps and trails drift by about {trail:.0f} steps, not {0.99 / 0.01:.0f}."
    )


def story_sections(datas: dict[str, RunData], names: Collection[str] | None = None) -> list[tuple[str, str]]:
    """The chapters' titles and texts (all, or those `names` keys), for the one-file report and `bnviz
    story`; the lag chapter with its runs' numbers once they exist."""
    pair = [datas.get(lag_key(m)) for m in LAG_MOMENTA]
    numbers = f"\n\n{lag_numbers(pair[0], pair[1])}" if pair[0] is not None else ""
    return [(c.title, c.text + (numbers if c is LAG_CHAPTER else "")) for c in ALL_CHAPTERS if names is None or c.preset in names]
