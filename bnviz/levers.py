"""What-if levers: one change to a finished run's config, queued as a new run beside it.

Each lever takes the stored run (its config and how many steps it trained) and returns the
config of the copy; names are what the Diagnose page's buttons show.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from bnviz.config import OWN_PRESET, RunConfig
from bnviz.records import Run
from bnviz.stats import steps_to_forget, suggest_momentum, torch_momentum

MAX_EPOCHS = 60  # "train longer" never queues more than this


@dataclass(frozen=True)
class Lever:
    key: str
    label: str
    apply: Callable[[Run, float | None], RunConfig]  # (run, the diagnosis's suggested momentum or None) → the copy's config
    needs_bn: bool = True  # only offered for models with BatchNormalization


def _steps(run: Run) -> int:
    return run.total_steps or run.config.epochs


def _named(config: RunConfig, run: Run, change: str) -> RunConfig:
    return config.replace(name=f"{run.config.name or run.config.preset or 'custom'} · {change}")


def lower_momentum(run: Run, suggested: float | None = None) -> RunConfig:
    """`suggested` (the diagnosis's momentum for this run's regime, e.g. one whose window fits the
    drift), else the largest momentum whose initial-value weight is below 1 % after the steps this
    run trained; never above the run's own."""
    m = min(suggested if suggested is not None else suggest_momentum(_steps(run)), run.config.arch.bn.momentum)
    return _named(run.config.with_momentum(m), run, f"momentum {m:g} (PyTorch {torch_momentum(m):g})")


def raise_momentum(run: Run, suggested: float | None = None) -> RunConfig:
    """Momentum 0.9 (a 10-batch window) for a run whose small momentum tracks batch noise."""
    m = max(0.9, run.config.arch.bn.momentum)
    return _named(run.config.with_momentum(m), run, f"momentum {m:g} (PyTorch {torch_momentum(m):g})")


def shuffle(run: Run, suggested: float | None = None) -> RunConfig:
    return _named(run.config.replace(shuffle=True), run, "shuffled")


def double_batch(run: Run, suggested: float | None = None) -> RunConfig:
    return _named(run.config.replace(batch_size=run.config.batch_size * 2), run, f"batch {run.config.batch_size * 2}")


def train_longer(run: Run, suggested: float | None = None) -> RunConfig:
    """Enough epochs for the initial value's weight to drop below 1 % at this momentum (capped)."""
    per_epoch = max(1, _steps(run) // max(run.config.epochs, 1))
    needed = steps_to_forget(run.config.arch.bn.momentum)
    epochs = MAX_EPOCHS if math.isinf(needed) else min(MAX_EPOCHS, max(run.config.epochs * 2, math.ceil(needed / per_epoch)))
    return _named(run.config.replace(epochs=epochs), run, f"{epochs} epochs")


def _norm(kind: str, label: str) -> Callable[[Run, float | None], RunConfig]:
    def apply(run: Run, suggested: float | None = None) -> RunConfig:
        return _named(run.config.replace(arch=dataclasses.replace(run.config.arch, norm=kind)), run, label)

    return apply


LEVERS: dict[str, Lever] = {
    lever.key: lever
    for lever in (
        Lever("lower_momentum", "Lower the momentum", lower_momentum),
        Lever("raise_momentum", "Raise the momentum", raise_momentum),
        Lever("shuffle", "Shuffle the training data", shuffle, needs_bn=False),
        Lever("double_batch", "Double the batch size", double_batch, needs_bn=False),
        Lever("train_longer", "Train longer", train_longer),
        Lever("remove_bn", "Remove BatchNormalization", _norm("none", "no BN")),
        Lever("group_norm", "Swap BN for GroupNormalization", _norm("group", "GroupNorm")),
        Lever("layer_norm", "Swap BN for LayerNormalization", _norm("layer", "LayerNorm")),
    )
}
CAUSE_LEVERS: dict[str, tuple[str, ...]] = {  # what each diagnosed cause calls for first
    "stale_initial_values": ("lower_momentum", "train_longer"),
    "lag": ("lower_momentum",),
    "non_iid_batches": ("shuffle",),
    "batch_noise": ("double_batch", "raise_momentum"),
    "never_moved": ("lower_momentum",),
}
GENERIC_LEVERS = ("double_batch", "remove_bn", "group_norm", "layer_norm")  # always worth a comparison


def options(run: Run, cause: str = "", suggested: float | None = None) -> list[tuple[Lever, RunConfig]]:
    """The levers for this run, those its diagnosed cause calls for first, each with the config it
    would queue; a lever that would change nothing (a momentum already at the suggestion, a run
    already shuffled) is not offered. A model bnviz did not build gets none: its config only
    describes it, and retraining it takes the user's own script."""
    if run.config.preset == OWN_PRESET:
        return []
    has_bn = run.config.arch.has_moving_stats
    keys = dict.fromkeys(CAUSE_LEVERS.get(cause, ()) + GENERIC_LEVERS)
    chosen = []
    for key in keys:
        lever = LEVERS[key]
        config = lever.apply(run, suggested)
        if (has_bn or not lever.needs_bn) and config.replace(name=run.config.name) != run.config:
            chosen.append((lever, config))
    return chosen
