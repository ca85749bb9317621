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
from bnviz.stats import steps_to_forget, suggest_momentum, torch_momentum
from bnviz.store import Run

MAX_EPOCHS = 60  # "train longer" never queues more than this


@dataclass(frozen=True)
class Lever:
    key: str
    label: str
    apply: Callable[[Run], RunConfig]
    needs_bn: bool = True  # only offered for models with BatchNormalization


def _steps(run: Run) -> int:
    return run.total_steps or run.config.epochs


def _named(config: RunConfig, run: Run, change: str) -> RunConfig:
    return config.replace(name=f"{run.config.name or run.config.preset or 'custom'} · {change}")


def lower_momentum(run: Run) -> RunConfig:
    """The largest momentum whose initial-value weight is below 1 % after the steps this run trained."""
    m = min(suggest_momentum(_steps(run)), run.config.arch.bn.momentum)
    return _named(run.config.with_momentum(m), run, f"momentum {m:g} (PyTorch {torch_momentum(m):g})")


def double_batch(run: Run) -> RunConfig:
    return _named(run.config.replace(batch_size=run.config.batch_size * 2), run, f"batch {run.config.batch_size * 2}")


def train_longer(run: Run) -> RunConfig:
    """Enough epochs for the initial value's weight to drop below 1 % at this momentum (capped)."""
    per_epoch = max(1, _steps(run) // max(run.config.epochs, 1))
    needed = steps_to_forget(run.config.arch.bn.momentum)
    epochs = MAX_EPOCHS if math.isinf(needed) else min(MAX_EPOCHS, max(run.config.epochs * 2, math.ceil(needed / per_epoch)))
    return _named(run.config.replace(epochs=epochs), run, f"{epochs} epochs")


def _norm(kind: str, label: str) -> Callable[[Run], RunConfig]:
    def apply(run: Run) -> RunConfig:
        return _named(run.config.replace(arch=dataclasses.replace(run.config.arch, norm=kind)), run, label)

    return apply


LEVERS: dict[str, Lever] = {
    lever.key: lever
    for lever in (
        Lever("lower_momentum", "Lower the momentum", lower_momentum),
        Lever("double_batch", "Double the batch size", double_batch, needs_bn=False),
        Lever("train_longer", "Train longer", train_longer),
        Lever("remove_bn", "Remove BatchNormalization", _norm("none", "no BN")),
        Lever("group_norm", "Swap BN for GroupNormalization", _norm("group", "GroupNorm")),
        Lever("layer_norm", "Swap BN for LayerNormalization", _norm("layer", "LayerNorm")),
    )
}


def available(run: Run) -> list[Lever]:
    """The levers that make sense for this run: none for a model bnviz did not build (its config
    only describes it; retraining it takes the user's own script)."""
    if run.config.preset == OWN_PRESET:
        return []
    has_bn = run.config.arch.norm == "batch"
    return [lever for lever in LEVERS.values() if has_bn or not lever.needs_bn]


