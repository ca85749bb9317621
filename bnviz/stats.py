"""Pure numpy maths shared by the probe, the diagnosis and the figures (no TensorFlow).

EMA facts (Keras convention): moving_t = m·moving_{t-1} + (1−m)·batch_t, so after t steps
moving_t = mᵗ·init + (1−m)·Σ_k m^(t−k)·batch_k. PyTorch's `momentum` is 1 − m.
"""

from __future__ import annotations

import math

import numpy as np


def init_weight(momentum: float, steps: int | np.ndarray) -> float | np.ndarray:
    """Weight the initial moving value (mean 0, variance 1) still carries after `steps` updates: mᵗ."""
    return np.power(float(momentum), steps)


def ema_window(momentum: float) -> float:
    """Effective number of batches the moving average spans: 1/(1−m) (infinite at m = 1)."""
    return math.inf if momentum >= 1 else 1.0 / (1.0 - momentum)


def half_life(momentum: float) -> float:
    """Steps until the initial value's weight halves: ln ½ / ln m."""
    if momentum <= 0:
        return 0.0
    return math.inf if momentum >= 1 else math.log(0.5) / math.log(momentum)


def steps_to_forget(momentum: float, weight: float = 0.01) -> float:
    """Steps until the initial value's weight drops below `weight` (1 % by default)."""
    if momentum <= 0:
        return 1.0
    return math.inf if momentum >= 1 else math.ceil(math.log(weight) / math.log(momentum))


def suggest_momentum(steps: int, weight: float = 0.01) -> float:
    """The largest momentum (rounded down to a slider step) whose initial-value weight after
    `steps` updates is below `weight`: m = weight^(1/steps)."""
    if steps <= 0:
        return 0.0
    return math.floor(weight ** (1.0 / steps) * 1000) / 1000


def torch_momentum(keras_momentum: float) -> float:
    """The same EMA in PyTorch's convention (weight on the new batch)."""
    return round(1.0 - keras_momentum, 10)


RECOVERY_TOLERANCE = 0.01  # a recovered batch variance whose rounding bound exceeds 1 % of it is withheld (NaN)


def batch_stats_from_update(before: np.ndarray, after: np.ndarray, momentum: float) -> np.ndarray:
    """Recover the batch statistic one moving-average update used: (after − m·before)/(1 − m).

    Keras computes the update in float32 with float32(m) and float32(1 − m); the inversion uses the
    same two factors, in float64, so its only error is the update's own rounding, bounded by
    `recovery_error_bound` (about ulp(after)/(1 − m)). NaN when m = 1 (no information reaches the average).
    """
    if momentum >= 1:
        return np.full_like(after, np.nan, dtype=np.float32)
    m, c = np.float32(momentum), np.float32(1.0 - momentum)
    return ((after.astype(np.float64) - np.float64(m) * before) / np.float64(c)).astype(np.float32)


def recovery_error_bound(before: np.ndarray, after: np.ndarray, recovered: np.ndarray, momentum: float) -> np.ndarray:
    """Largest |recovered − true| per channel that float32 rounding of the update
    after = fl(fl(m·before) + fl((1 − m)·batch)) allows: half an ulp of each of the three rounded
    terms, divided by (1 − m), plus half an ulp of the float32 result; infinite at m = 1. At
    m = 0.99 and a moving variance near 1 it is about 6e-6, far above the 1e-7 variances of a layer
    fed with 0–1 pixels."""
    if momentum >= 1:
        return np.full_like(after, np.inf, dtype=np.float32)
    m, c = np.float32(momentum), np.float32(1.0 - momentum)
    rounded = [(m * before).astype(np.float32), after.astype(np.float32), (c * recovered).astype(np.float32)]
    update = sum(_ulp(t) for t in rounded) / (2.0 * np.float64(c))
    return (update + _ulp(recovered.astype(np.float32)) / 2.0).astype(np.float32)  # + the float32 the result is kept in


def _ulp(values: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(values)).astype(np.float64)


def recover_batch_moments(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray], momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """The batch mean and variance one BN update used, from the moving (mean, variance) before and
    after it. The mean is as exact as `recovery_error_bound` says; a variance whose bound exceeds
    `RECOVERY_TOLERANCE` (1 %) of it is NaN, so a figure never shows a number that is mostly rounding."""
    mean = batch_stats_from_update(before[0], after[0], momentum)
    var = batch_stats_from_update(before[1], after[1], momentum)
    bound = recovery_error_bound(before[1], after[1], var, momentum)
    return mean, np.where(bound <= RECOVERY_TOLERANCE * np.abs(var), var, np.float32(np.nan))


HISTOGRAM_VALUES = 20_000  # values per histogram sample: 40 bins hold 500 on average; a distribution plot needs no more
HISTOGRAM_BUDGET = 60_000  # values per record over all BN layers: a record's histogram work stays flat from 3 layers to 50+
MIN_HISTOGRAM_VALUES = 2_000  # 50 per bin of a 40-bin histogram on average


def histogram_values(n_layers: int) -> int:
    """Values kept per BN output for its histograms: `HISTOGRAM_VALUES` up to 3 layers, fewer where
    more layers share a record's `HISTOGRAM_BUDGET` (thinner per layer, never fewer layers shown)."""
    return max(MIN_HISTOGRAM_VALUES, min(HISTOGRAM_VALUES, HISTOGRAM_BUDGET // max(n_layers, 1)))


def shared_histograms(train: np.ndarray, infer: np.ndarray, bins: int, max_values: int = HISTOGRAM_VALUES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histograms of two samples on shared edges spanning both samples' 0.5–99.5 percentiles.

    Values beyond the edges are counted in the end bins; an all-equal sample gets edges v ± 0.5.
    Large samples are strided down to about `max_values` first (a distribution plot needs no more),
    with a stride coprime to the channel count (last axis), so every channel stays in the sample.
    """
    a, b = _thin(train, max_values), _thin(infer, max_values)
    both = np.concatenate([a, b])
    both = both[np.isfinite(both)]
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 0.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return edges.astype(np.float32), _counts(a, edges), _counts(b, edges)


def _thin(values: np.ndarray, max_values: int) -> np.ndarray:
    """Every step-th value of the flattened array. In channels-last order, value i belongs to channel
    i mod C, so a stride sharing a factor with C would keep only some channels."""
    return values.ravel()[:: thinning_stride(values.size, values.shape[-1], max_values)]


def thinning_stride(size: int, channels: int, max_values: int) -> int:
    """The stride `_thin` keeps every value of: about size / max_values, coprime to the channel count."""
    step = max(1, size // max_values)
    while math.gcd(step, channels) != 1:
        step += 1
    return step


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    clipped = np.clip(values[np.isfinite(values)], edges[0], edges[-1])
    return np.histogram(clipped, bins=edges)[0].astype(np.int32)


def standardized_gap(moving_mean: np.ndarray, pop_mean: np.ndarray, pop_var: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
    """|moving − population| mean per channel in the units BN divides by, √(population variance + ε)."""
    return np.abs(moving_mean - pop_mean) / np.sqrt(np.maximum(pop_var + epsilon, 1e-12))


def scale_error(moving_var: np.ndarray, true_var: np.ndarray, epsilon: float) -> np.ndarray:
    """√((moving + ε)/(true + ε)) per channel: how many times too large the standard deviation is that
    inference divides by (BN divides by √(var + ε), so ε caps the error for tiny variances)."""
    with np.errstate(invalid="ignore"):  # a diverged run's inf/inf is NaN, said as such by the diagnosis
        return np.sqrt((moving_var + epsilon) / np.maximum(true_var + epsilon, 1e-12))


def lag_momentum(drift_per_step: float, tolerance: float = 0.1) -> float:
    """The largest momentum (rounded down to a slider step) whose lag behind statistics drifting
    `drift_per_step` SDs per step stays within `tolerance` SDs: lag ≈ drift·m/(1−m)."""
    if drift_per_step <= 0:
        return 0.99
    window = tolerance / drift_per_step  # m/(1−m)
    return math.floor(window / (1 + window) * 1000) / 1000


# steps 1, 2, 5, 10, 22, 46, 100…: at momentum 0.8 their mᵗ (0.8, 0.64, 0.33, 0.11, 0.007) trace the whole forgetting; 6 per
# decade added steps 3, 4, 6, 9… whose mᵗ at 0.99 differ by 1–3 %, each record ~0.8 % of the story run's fit (12 was the first choice)
PROBES_PER_DECADE = 3


def log_schedule(total_steps: int, per_decade: int = PROBES_PER_DECADE) -> list[int]:
    """Probe steps spaced geometrically (≈ `per_decade` per factor of ten), since the initial-value
    weight mᵗ decays geometrically: dense early, where the moving statistics change fastest."""
    steps, t = set(), 1.0
    ratio = 10 ** (1 / per_decade)
    while t <= total_steps:
        steps.add(int(round(t)))
        t = max(t * ratio, t + 1)
    return sorted(steps)


def probe_steps(total_steps: int, steps_per_epoch: int, every: int) -> list[int]:
    """Steps at which the probe records: step 0 (before training), every epoch end, the last
    step, and either every `every` steps or, with `every == 0`, a geometric schedule through the
    first epoch: beyond it the epoch ends are already closer together than geometric steps would be
    (on the story run those added 46 beside 38 and 100 beside 114)."""
    chosen = set(range(steps_per_epoch, total_steps + 1, steps_per_epoch)) | {0, total_steps}
    chosen |= set(range(every, total_steps + 1, every)) if every > 0 else set(log_schedule(min(total_steps, steps_per_epoch)))
    return sorted(chosen)


def measures_population(index: int, last: bool, every: int) -> bool:
    """Does the record at `index` (0-based, in step order) measure the population? Every `every`-th
    and the run's last: the diagnosis reads the last, the drift chart the others."""
    return last or index % every == 0


def larger(*values: float) -> float:
    """The largest of the values that are known (finite): NaN only when none is. A missing figure
    never silently wins or loses a comparison (Python's max(nan, x) is nan, max(x, nan) is x)."""
    known = [float(v) for v in values if v is not None and math.isfinite(v)]
    return max(known) if known else math.nan


def stale_fingerprint(moving_mean: np.ndarray, moving_var: np.ndarray, pop_mean: np.ndarray, pop_var: np.ndarray) -> tuple[float, float]:
    """How well one layer's moving statistics fit "still carrying the initial values": moving ≈
    w·initial + (1 − w)·population, initial = (mean 0, variance 1), with one w for the mean and the
    variance of every channel. Returns (w, r²): w by least squares over both statistics of every
    channel, in the units BN divides by (mean offsets in population SDs, variances relative to the
    population's), and the share of the moving statistics' error that the line explains (1: all of
    it; near 0 or below: the error is something else, e.g. lag or batch effects). (NaN, NaN) when the
    population sits too close to the initial values to tell."""
    sd = np.sqrt(np.maximum(pop_var, 1e-12))
    error = np.concatenate([(moving_mean - pop_mean) / sd, (moving_var - pop_var) / np.maximum(pop_var, 1e-12)]).astype(np.float64)
    toward_initial = np.concatenate([-pop_mean / sd, (1 - pop_var) / np.maximum(pop_var, 1e-12)]).astype(np.float64)
    keep = np.isfinite(error) & np.isfinite(toward_initial)
    error, toward_initial = error[keep], toward_initial[keep]
    if not keep.any() or float(np.sum(toward_initial**2)) < 0.05 * len(error) or float(np.sum(error**2)) == 0:
        return math.nan, math.nan
    w = float(np.sum(error * toward_initial) / np.sum(toward_initial**2))
    return w, 1 - float(np.sum((error - w * toward_initial) ** 2) / np.sum(error**2))


def implied_steps(weight: float, momentum: float) -> float:
    """The steps t with mᵗ = `weight`: ln w / ln m (NaN where that has no meaning)."""
    if not (math.isfinite(weight) and 0 < weight < 1 and 0 < momentum < 1):
        return math.nan
    return math.log(weight) / math.log(momentum)
