"""Diagnosis: one verdict naming the cause, then ranked findings, each a sentence with the measured
numbers behind it, a severity and its remedies. Pure functions over stored run data; no TensorFlow.

The verdict rests on evidence from *training* data only: accuracy after PreciseBN (the moving
statistics replaced by training-batch population statistics, evaluation "recalibrated"), else the
moving statistics against the training batches the probe recovered from fit's steps; the weight
mᵗ of the initial values (for a saved model without a step count, the fingerprint they leave,
`stats.stale_fingerprint`), per-layer gaps in inference mode, the spread of training-batch means
against i.i.d. batches, and the shift of each split's inputs. Batch statistics on *test* batches
adapt to the test data (transductive) and are shown, never taken as proof. Where the targets are
not classes every score is the loss, as −ln(loss) (`Metric`).

Causes (`CAUSES`), each with its own finding and remedies: stale initial values (few steps), lag
(statistics drifting faster than the average follows), statistics off for another reason (a saved
model whose statistics do not carry the initial values' fingerprint), batches that are not i.i.d.,
small-batch noise and variance bias, Dropout before BN, moving statistics that never moved, trained
statistics that a fine-tuning fit rewrote (`fine_tuning`), a test-only shift, overfitting (train ≫ validation), healthy; and "insufficient_evidence" when the
measurement that decides is missing (it says what to pass), never a guess. A finding never
contradicts the verdict: a cause the verdict does not name is at most "info". A missing figure
(NaN) never wins or loses a comparison (`stats.larger`). Momentum is given in both conventions:
Keras `momentum=m` is PyTorch `momentum=1−m`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bnviz.records import Evaluation, LayerTrace, RunData
from bnviz.stats import (
    ema_window,
    half_life,
    implied_steps,
    init_weight,
    lag_momentum,
    larger,
    scale_error,
    stale_fingerprint,
    standardized_gap,
    steps_to_forget,
    suggest_momentum,
    torch_momentum,
)

SEVERITIES = ("critical", "warning", "unknown", "info", "ok")  # unknown: not enough evidence to name a cause
CAUSES = (
    "pending",
    "insufficient_evidence",
    "stale_initial_values",
    "lag",
    "statistics_off",
    "non_iid_batches",
    "batch_noise",
    "dropout_before_bn",
    "never_moved",
    "overwritten_in_fine_tuning",
    "test_shift",
    "overfitting",
    "healthy",
)
BN_CAUSES = CAUSES[CAUSES.index("stale_initial_values") : CAUSES.index("test_shift")]  # the causes that are BN's own
GAP_CRITICAL, GAP_WARNING = 0.15, 0.05  # accuracy lost to the moving statistics (recalibrated − inference)
STALE_WEIGHT = 0.05  # mᵗ above which the initial values still weigh enough to be the cause
NON_IID_RATIO = 3.0  # another model's training-batch means this many times further from the population than i.i.d. ones: not i.i.d.
UNSHUFFLED_RATIO = 1.5  # bnviz's unshuffled (class-sorted) batches this far off i.i.d. ones: their order matters
UNDERFIT = 0.9  # training accuracy (fit and evaluate) below this: the model did not learn its own training data
NOISE_SD = 0.2  # the moving mean's own noise (population SDs) above which small batches are the cause
SHIFT_MIN = 0.3  # a split's inputs this far (training SDs, see evidence.channel_shift) from train's: shifted
OVERFIT_GAP = 0.1  # train − held-out accuracy in inference mode
LAYER_GAP = (0.25, 1.0)  # mean gap (population SDs) for a warning / critical layer
LAYER_SCALE = (1.12, math.sqrt(2))  # scale error (√ of the variance ratio, ε included) for a warning / critical layer
FINGERPRINT_FIT = 0.8  # r² of the stale-values line (stats.stale_fingerprint) above which initial values explain a layer's error


@dataclass(frozen=True)
class Metric:
    """What the verdict compares. Accuracy where the targets are classes; for any other target the
    model's loss, as the score −ln(loss), so that higher is better for both and a difference of
    scores is a loss ratio (0.22: the loss 1.25× higher, 0.69: 2×). Thresholds are in score units."""

    name: str = "accuracy"
    warning: float = GAP_WARNING
    critical: float = GAP_CRITICAL
    overfit: float = OVERFIT_GAP
    underfit: float = UNDERFIT

    @property
    def is_loss(self) -> bool:
        return self.name != "accuracy"

    def show(self, score: float) -> str:
        """A score as the user knows it: '0.83' for accuracy, the loss itself ('0.0123') for a loss."""
        if not math.isfinite(score):
            return "not measured"
        return f"{math.exp(-score):.3g}" if self.is_loss else f"{score:.2f}"

    def of(self, evaluation: Evaluation | None) -> dict[str, float] | None:
        """One evaluation's scores by flat key ('test', 'test_batchstats', 'fit'), None when missing."""
        if evaluation is None:
            return None
        if not self.is_loss:
            return evaluation.accuracies()
        return {k: -math.log(max(v, 1e-12)) if math.isfinite(v) else math.nan for k, v in evaluation.losses().items()}


ACCURACY = Metric()


def metric_of(data: RunData) -> Metric:
    """Accuracy, unless the run's targets are not classes (info["task"] "values"): then its loss."""
    if data.run.info.get("task") != "values":
        return ACCURACY
    return Metric(data.run.info.get("loss_name") or "loss", math.log(1.25), math.log(2.0), math.log(1.5), math.nan)


@dataclass(frozen=True)
class Finding:
    key: str  # stable id: tests and the UI refer to findings by it
    severity: str  # critical | warning | info | ok
    title: str
    detail: str  # the sentence with the numbers
    remedies: tuple[str, ...] = ()
    numbers: dict[str, float] = field(default_factory=dict)
    cause: str = ""  # the verdict's cause (one of CAUSES); empty for other findings


def momentum_text(m: float) -> str:
    """'momentum 0.99 (PyTorch: momentum=0.01)': the two frameworks define it in opposite directions."""
    return f"momentum {m:g} (PyTorch: momentum={torch_momentum(m):g})"


# --- what the run holds ---------------------------------------------------------------------------
def _recalibrated(data: RunData) -> Evaluation | None:
    """PreciseBN on training images: the run's own "recalibrated" evaluation, else a "precisebn" one
    the user made (bnviz recalibrate) if it averaged over training images (never a transductive one)."""
    for name in ("recalibrated", "precisebn"):
        evaluation = data.evaluations.get(name)
        if evaluation is not None and (evaluation.calibrated_on or "train") == "train":
            return evaluation
    return None


def _has_bn(data: RunData) -> bool:
    return bool(data.layers) or bool(data.run.info.get("bn_layers")) or data.run.config.arch.has_moving_stats


def _momentum(data: RunData) -> float:
    """The momentum per training step of the first BN layer (bnviz's own models share one; others
    record each layer's): mᵏ for a layer a step updates k times (inside TimeDistributed)."""
    first = ordered_layers(data)[0] if data.layers else ""
    arguments = data.bn_arguments(first)
    return float(arguments["momentum"]) ** int(arguments.get("updates_per_step", 1))


def ordered_layers(data: RunData) -> list[str]:
    """BN layers in network order, not the store's alphabetical order: as the probe found them (inside
    a nested base model too), else, for runs recorded before it listed them, the model's layer table."""
    order = [row["name"] for row in data.run.info.get("bn_layers") or data.run.info.get("layers", [])]
    return sorted(data.layers, key=lambda name: (order.index(name) if name in order else len(order), name))


# --- per-layer figures ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFigures:
    """One BN layer at its last record, ε included, medians over channels.

    `own_*` compare the moving statistics with the training-mode population (what the layer would
    see if every layer above were right); `infer_*` with the input inference really feeds it, the
    whole network in inference mode, upstream errors included. A scale error above 1 means inference
    divides by a standard deviation that many times too large (the output is squashed)."""

    name: str
    step: int
    own_mean_gap: float
    own_scale: float
    infer_mean_gap: float
    infer_scale: float
    channels: int

    @property
    def severity(self) -> str:
        return _layer_severity(self.infer_mean_gap, self.infer_scale)

    @property
    def own_severity(self) -> str:
        return _layer_severity(self.own_mean_gap, self.own_scale)

    @property
    def mean_gap(self) -> float:
        """The mean gap against what inference really feeds the layer; against the training-mode
        population where that was not measured (runs recorded before it was)."""
        return self.infer_mean_gap if math.isfinite(self.infer_mean_gap) else self.own_mean_gap

    @property
    def scale(self) -> float:
        """The scale error against what inference really feeds the layer, as `mean_gap`."""
        return self.infer_scale if math.isfinite(self.infer_scale) else self.own_scale

    @property
    def off_parts(self) -> tuple[float, float]:
        """(mean gap, scale error as |ln|), each in units of its warning threshold (LAYER_GAP,
        LAYER_SCALE): above 1 where it warns; NaN where not finite."""
        scale = abs(math.log(self.scale)) / math.log(LAYER_SCALE[0]) if 0 < self.scale < math.inf else math.nan
        return self.mean_gap / LAYER_GAP[0], scale

    @property
    def off(self) -> float:
        """How far off the layer is, the larger of `off_parts`: above 1 exactly where the layer warns;
        what the layers are ranked by. NaN where neither is known (non-finite statistics)."""
        return larger(*self.off_parts)


def _layer_severity(gap: float, scale: float) -> str:
    if not (math.isfinite(gap) and math.isfinite(scale)):
        return "info"
    off = larger(scale, 1 / scale) if scale > 0 else math.inf
    if gap > LAYER_GAP[1] or off > LAYER_SCALE[1]:
        return "critical"
    return "warning" if gap > LAYER_GAP[0] or off > LAYER_SCALE[0] else "ok"


def layer_figures(trace: LayerTrace, epsilon: float, i: int = -1) -> LayerFigures:
    """The figures of `trace` at record `i` (see `LayerFigures`); NaN where the store lacks the
    inference-mode arrays (runs recorded before they existed)."""
    own_gap = standardized_gap(trace.moving_mean[i], trace.pop_mean[i], trace.pop_var[i], epsilon)
    own_scale = scale_error(trace.moving_var[i], trace.pop_var[i], epsilon)
    if trace.infer_var.size:
        infer_gap = float(np.median(standardized_gap(trace.moving_mean[i], trace.infer_mean[i], trace.infer_var[i], epsilon)))
        infer_scale = float(np.median(scale_error(trace.moving_var[i], trace.infer_var[i], epsilon)))
    else:
        infer_gap = infer_scale = math.nan
    return LayerFigures(
        trace.layer, int(trace.steps[i]), float(np.median(own_gap)), float(np.median(own_scale)), infer_gap, infer_scale, int(trace.moving_mean.shape[1])
    )


def all_layer_figures(data: RunData) -> list[LayerFigures]:
    """Every BN layer's figures at the last record that measured the population (the run's last)."""
    return [layer_figures(data.layers[name].measured(), data.epsilon(name)) for name in ordered_layers(data)]


def ranked_layers(figures: list[LayerFigures]) -> list[LayerFigures]:
    """`figures` from the furthest off (`LayerFigures.off`) to the least, unknown last: the layers a
    page shows first and the verdict names."""
    return sorted(figures, key=lambda f: -f.off if math.isfinite(f.off) else math.inf)


def scale_text(scale: float) -> str:
    """What a scale error does to the normalised output, in words."""
    if not math.isfinite(scale) or scale <= 0:
        return "divides by a standard deviation that cannot be compared with its input's (non-finite statistics)"
    if abs(math.log(scale)) < 0.005:
        return "divides by the right standard deviation (within 0.5 %)"
    if scale >= 1:
        return f"divides by a standard deviation {scale:.3g}× too large, squashing the output"
    return f"divides by a standard deviation {1 / scale:.3g}× too small, blowing the output up"


# --- the evidence, computed once --------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """The figures the verdict and the findings share (NaN where the run lacks them)."""

    split: str  # the held-out split the accuracies below are for: test, or val when test is shifted
    inference: float
    recalibrated: float
    batchstats: float  # batch statistics on held-out batches: transductive, shown but no proof
    train: float  # evaluate on the training images (inference mode)
    fit: float  # what fit reported (batch statistics, running mean over the last epoch)
    val: float
    test: float
    test_shift: float  # first BN input (else pixels) of test vs train, in training SDs
    val_shift: float
    init_weight: float
    non_iid_ratio: float
    noise: float  # the moving mean's own noise, population SDs
    stuck: tuple[str, ...]
    not_iid: bool = False  # training batches were not i.i.d. samples (see `batches_not_iid`)

    train_batchstats: float = math.nan  # batch statistics on training batches: training data, so no transduction
    test_batchstats: float = math.nan  # batch statistics on test batches (adapts to the test data)
    val_batchstats: float = math.nan
    counts: dict = field(default_factory=dict)  # images per split the scores were measured on (run info "data")
    variance_bias: float = math.nan  # √(n/(n−1)) for the layer seeing the fewest values n per channel in a batch
    metric: Metric = ACCURACY  # what the figures above are: accuracy, or −ln(loss) for targets that are not classes
    steps_known: bool = True  # False for a saved model whose step count nobody gave (bnviz inspect without --steps)
    batch_fit: str = ""  # the worst layer's moving statistics against the last training batches' own ("" unmeasured)

    @property
    def lost_to_statistics(self) -> float:
        """Held-out score that recalibrating on training data gives back: the moving statistics' share.
        Without a recalibrated evaluation (no training images, older runs), what batch statistics
        give back on the *training* images instead; NaN when neither was measured."""
        if math.isfinite(self.recalibrated):
            return self.recalibrated - self.inference
        return self.train_batchstats - self.train

    @property
    def test_shifted(self) -> bool:
        """Test far below validation, with validation itself fine, because the test inputs differ:
        measured at the input (the shift) or shown by the test set's own batch statistics recovering it."""
        below = self.test < self.val - self.metric.warning and self._beyond_chance(self.val, self.test)
        measured = self.test_shift >= SHIFT_MIN and self.test_shift >= 3 * larger(self.val_shift, 0.0)
        recovered = (
            self.test_batchstats >= self.val - self.metric.warning
            and not self.val_shift >= SHIFT_MIN
            and not self.val_batchstats - self.val >= self.metric.warning
        )  # batch statistics help the test split alone
        generalises = self.trained_score - self.val < self.metric.overfit and self.test < self.val - self.metric.overfit  # only test drops
        return below and (measured or recovered or generalises)

    def _beyond_chance(self, val: float, test: float) -> bool:
        """Is validation's accuracy above test's by more than two standard errors of the difference
        on these sample sizes? (16 test images score ±0.12 by chance alone.) True where unknown."""
        n_val, n_test = self.counts.get("val"), self.counts.get("test")
        if self.metric.is_loss or not (n_val and n_test):
            return True
        p = (val * n_val + test * n_test) / (n_val + n_test)
        return val - test > 2 * math.sqrt(max(p * (1 - p), 1e-6) * (1 / n_val + 1 / n_test))

    @property
    def trained_score(self) -> float:
        """The best known score on the training images (fit's, else evaluate's)."""
        return larger(self.fit, self.train)

    @property
    def underfits(self) -> bool:
        """Did the model fail to learn its own training images (best training score below `underfit`)?"""
        return self.trained_score < self.metric.underfit

    @property
    def overfit_gap(self) -> float:
        """Training against held-out in inference mode: validation where the run has it (a shifted test
        set is no overfitting), else the test split."""
        held_out = self.val if math.isfinite(self.val) else self.inference
        return self.train - held_out if math.isfinite(self.train) else self.fit - held_out


def _shift(data: RunData, split: str) -> float:
    shift = data.run.info.get("input_shift", {})
    value = shift.get("first_bn_input", {}).get(split, shift.get("pixels", {}).get(split))
    return math.nan if value is None else float(value)


def steps_known(data: RunData) -> int | None:
    """Training steps behind the moving statistics, when known: a run's own records, or the count a
    user gave for an inspected model (`info["known_steps"]`); None for a saved model without one."""
    if data.run.info.get("source") == "inspect":
        known = data.run.info.get("known_steps")
        return int(known) if known else None
    return data.steps_trained


def gather(data: RunData) -> Evidence | None:
    """The shared evidence; None before the run's final evaluation exists."""
    metric = metric_of(data)
    acc = metric.of(data.evaluations.get("final"))
    if acc is None:
        return None
    recal = metric.of(_recalibrated(data)) or {}
    nan = math.nan
    test_shift, val_shift = _shift(data, "test"), _shift(data, "val")
    fit = acc.get("fit", _fit_score(data, metric))
    partial = Evidence(
        "test",
        acc.get("test", nan),
        nan,
        nan,
        acc.get("train", nan),
        fit,
        acc.get("val", nan),
        acc.get("test", nan),
        test_shift,
        val_shift,
        nan,
        nan,
        nan,
        (),
        test_batchstats=acc.get("test_batchstats", nan),
        val_batchstats=acc.get("val_batchstats", nan),
        metric=metric,
        counts=data.run.info.get("data", {}),
    )
    split = "val" if partial.test_shifted or not math.isfinite(partial.test) else "test"
    m, t, ratio = _momentum(data), steps_known(data), non_iid_ratio(data)
    return dataclasses.replace(
        partial,
        split=split,
        inference=acc.get(split, nan),
        recalibrated=recal.get(split, nan),
        batchstats=acc.get(f"{split}_batchstats", nan),
        init_weight=float(init_weight(m, t)) if _has_bn(data) and t is not None else nan,
        non_iid_ratio=ratio,
        noise=moving_noise(data, m),
        stuck=stuck_layers(data),
        not_iid=batches_not_iid(data, ratio),
        train_batchstats=acc.get("train_batchstats", nan),
        steps_known=t is not None,
        batch_fit=training_batch_fit(data),
        variance_bias=variance_bias(data),
    )


def batches_not_iid(data: RunData, ratio: float) -> bool:
    """Whether training batches were not i.i.d.: known for bnviz's own runs (it shuffled them, or fed
    the images class by class, which matters once the batch means differ measurably), measured by
    the `non_iid_ratio` for models trained elsewhere, whose batch order bnviz cannot see."""
    if not _iid_measured_only(data):
        return not data.run.config.shuffle and not ratio < UNSHUFFLED_RATIO  # NaN (no measure) trusts the setting
    return ratio >= NON_IID_RATIO


def _fit_score(data: RunData, metric: Metric) -> float:
    """What fit reported at the last step: its accuracy, or −ln of its loss."""
    if not len(data.steps):
        return math.nan
    last = data.steps.iloc[-1]
    value = last["loss"] if metric.is_loss else last["accuracy"]
    value = math.nan if value is None else float(value)  # a model compiled without an accuracy metric stores none
    if not metric.is_loss:
        return value
    return -math.log(value) if math.isfinite(value) and value > 0 else math.nan


def _followable(data: RunData) -> set[str]:
    """BN layers whose recovered batch statistics describe their input in training: not frozen, not
    fed through Dropout or noise (whose variance shift the tap's population does not include), and
    their moving statistics moved (a layer called with training=False in fit never updates them)."""
    rows, stuck = {row["name"]: row for row in data.run.info.get("bn_layers", [])}, stuck_layers(data)  # once: 52 layers made it 52 calls
    return {
        name for name in data.layers if rows.get(name, {}).get("trainable", True) and not rows.get(name, {}).get("after_noise", False) and name not in stuck
    }


def training_batch_fit(data: RunData) -> str:
    """The worst layer's severity of its moving statistics against the training batches' own, at
    the records of the second half of training (batch statistics recovered from the real training
    steps: training data, whatever the user passed). "" when no record holds them."""
    worst = ""
    for name in _followable(data):
        trace, eps = data.layers[name], data.epsilon(name)
        late = _late(trace) & np.isfinite(trace.batch_var).all(axis=1)
        if not late.any():
            continue
        gap = float(np.median(standardized_gap(trace.moving_mean[late], trace.batch_mean[late], trace.batch_var[late], eps)))
        scale = float(np.median(scale_error(trace.moving_var[late], trace.batch_var[late], eps)))
        severity = _layer_severity(gap, scale)
        worst = severity if not worst or SEVERITIES.index(severity) < SEVERITIES.index(worst) else worst
    return worst


def fingerprint(data: RunData) -> tuple[float, float, float]:
    """The stale-values line fitted per layer at the last population record (`stats.stale_fingerprint`):
    the median w over layers, the r² of the layer whose statistics are furthest off, and the spread
    (max − min) of w over layers; NaN where no layer can tell."""
    fits = []
    for name in ordered_layers(data):
        trace = data.layers[name].measured()
        if not len(trace.steps):
            continue
        w, r2 = stale_fingerprint(trace.moving_mean[-1], trace.moving_var[-1], trace.pop_mean[-1], trace.pop_var[-1])
        if math.isfinite(w):
            off = float(np.median(standardized_gap(trace.moving_mean[-1], trace.pop_mean[-1], trace.pop_var[-1], data.epsilon(name))))
            fits.append((off, w, r2))
    if not fits:
        return math.nan, math.nan, math.nan
    weights = [w for _, w, _ in fits]
    return float(np.median(weights)), max(fits)[2], float(max(weights) - min(weights))


def _late(trace: LayerTrace) -> np.ndarray:
    """Records in the second half of training (where the weights move slowly), step 0 excluded."""
    return (trace.steps > 0) & (trace.steps >= trace.steps.max() / 2)


HALF_NORMAL_MEDIAN = 0.6745  # median of |z| for a standard normal z


PINNED_SPREAD = 1e-3  # i.i.d. batch means this close (in population SDs) are pinned, e.g. by BN upstream on 1×1 maps: no scale to measure by
MIN_IID_VALUES = 16  # z values (late records × channels) below which a model bnviz did not build gets no i.i.d. measure


def non_iid_ratio(data: RunData) -> float:
    """How far training batches' means sit from the population mean, in units of the spread an
    i.i.d. batch of that size shows (median |z| over late records and channels, scaled so that
    i.i.d. batches give 1; the layer that separates classes most): far above 1 when each batch
    holds one or two classes. A model bnviz did not build needs `MIN_IID_VALUES` values per layer:
    a median of 8 channels at one record reads 3 on shuffled data by chance."""
    ratios, fewest = [], MIN_IID_VALUES if _iid_measured_only(data) else 1
    for name in sorted(_followable(data)):
        trace = data.layers[name]
        late = _late(trace)
        if not trace.iid_mean_sd.size or not late.any():
            continue
        spread, sd = trace.iid_mean_sd[late], np.sqrt(np.maximum(trace.pop_var[late], 0.0) + data.epsilon(name))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(spread > PINNED_SPREAD * sd, np.abs(trace.batch_mean[late] - trace.pop_mean[late]) / spread, np.nan)
        if np.isfinite(z).sum() >= fewest:
            ratios.append(float(np.median(z[np.isfinite(z)])) / HALF_NORMAL_MEDIAN)
    return max(ratios) if ratios else math.nan


def moving_noise(data: RunData, momentum: float) -> float:
    """The moving mean's own noise in population SDs (worst layer, median channel): an i.i.d. batch
    mean's standard error times √((1−m)/(1+m)), the SD of an EMA of independent draws."""
    worst = math.nan
    for trace in (t.measured() for t in data.layers.values()):
        if not trace.iid_mean_sd.size or not np.isfinite(trace.iid_mean_sd[-1]).any():
            continue
        batch_sd = float(np.nanmedian(trace.iid_mean_sd[-1] / np.sqrt(np.maximum(trace.pop_var[-1], 1e-12))))
        noise = batch_sd * math.sqrt(max(1 - momentum, 0.0) / (1 + momentum))
        worst = noise if math.isnan(worst) else max(worst, noise)
    return worst


def variance_bias(data: RunData) -> float:
    """How many times too small the moving standard deviation is from the batch variance's bias alone:
    BN divides by the biased variance of the n values a batch gives a channel, (n − 1)/n of the
    population's on average, and the moving variance averages those (worst layer; NaN unknown)."""
    batch = data.run.config.batch_size
    values = [row.get("values_per_image") for row in data.run.info.get("bn_layers", [])]
    n = min((batch * v for v in values if v), default=0)
    return math.sqrt(n / (n - 1)) if n > 1 else math.nan


def started_fresh(data: RunData) -> bool:
    """Did the moving statistics start this run at their initial values (mean 0, variance 1)? Not
    when bnviz.Probe joined a later fit of a trained model: mᵗ then weighs the values it began with."""
    for trace in data.layers.values():
        if len(trace.steps) and trace.steps[0] == 0 and not (np.all(trace.moving_mean[0] == 0) and np.all(trace.moving_var[0] == 1)):
            return False
    return True


def frozen_layers(data: RunData) -> tuple[str, ...]:
    """BN layers frozen on purpose (trainable=False): their statistics are meant to stay."""
    return tuple(row["name"] for row in data.run.info.get("bn_layers", []) if not row.get("trainable", True))


def stuck_layers(data: RunData) -> tuple[str, ...]:
    """Trainable BN layers whose moving statistics have not changed since step 0, after training steps
    (a frozen layer's are meant not to: `frozen_layers`)."""
    if data.steps_trained == 0:
        return ()
    stuck, frozen = [], set(frozen_layers(data))
    for name, trace in data.layers.items():
        if (
            name not in frozen
            and len(trace.steps) >= 2
            and trace.steps[0] == 0
            and np.array_equal(trace.moving_mean[-1], trace.moving_mean[0])
            and np.array_equal(trace.moving_var[-1], trace.moving_var[0])
        ):
            stuck.append(name)
    return tuple(stuck)


# --- findings: each a measurement with its numbers; severity set by the verdict's cause ---------
def accuracy_evidence(data: RunData, ev: Evidence) -> Finding:
    """The scores the verdict rests on, each labelled for what it is; only what was measured."""
    name, show = ev.metric.name, ev.metric.show
    parts = [f"{ev.split.capitalize()} {name} {show(ev.inference)} in inference mode (moving statistics, as evaluate and predict run)"]
    if math.isfinite(ev.recalibrated):
        parts.append(f"{show(ev.recalibrated)} after recalibrating the statistics on training batches (PreciseBN, no retraining)")
    if math.isfinite(ev.batchstats):
        parts.append(
            f"{show(ev.batchstats)} when BN normalises each {ev.split} batch with its own statistics (this adapts to the "
            f"{ev.split} data itself, so it is no proof that the weights are fine)"
        )
    training = [f"{show(ev.train)} with evaluate"] if math.isfinite(ev.train) else []
    training += [f"{show(ev.fit)} as fit reported it (batch statistics)"] if math.isfinite(ev.fit) else []
    detail = "; ".join(parts) + (f". Training images: {', '.join(training)}." if training else ". No training images were evaluated.")
    numbers = {
        "inference": ev.inference,
        "recalibrated": ev.recalibrated,
        "batchstats": ev.batchstats,
        "train": ev.train,
        "fit": ev.fit,
        "lost_to_statistics": ev.lost_to_statistics,
    }
    return Finding("accuracy", "info", f"{name.capitalize()} in both BN modes", detail, (), numbers)


def stale_initial_values(data: RunData, ev: Evidence) -> Finding | None:
    """How much of the initial moving values (mean 0, variance 1) survives: mᵗ; for a saved model
    with no step count, what the statistics' own fingerprint says (see `stale_fingerprint`)."""
    m, t = _momentum(data), steps_known(data)
    if not _has_bn(data) or t == 0:
        return None
    if t is None:
        return _fingerprint_finding(data, m)
    weight, window = float(init_weight(m, t)), ema_window(m)
    suggested = suggest_momentum(t)
    numbers = {
        "momentum": m,
        "steps": t,
        "init_weight": weight,
        "window": window,
        "half_life": half_life(m),
        "steps_to_1pct": steps_to_forget(m),
        "suggested_momentum": suggested,
    }
    start = (
        "initial values (mean 0, variance 1)"
        if started_fresh(data)
        else "values they held when this fit began (it continued training a model whose statistics were already set)"
    )
    text = (
        f"After {t} steps with {momentum_text(m)}, the moving mean and variance still carry {weight:.0%} of the "
        f"{start}: weight mᵗ = {m:g}^{t}. The average spans about {window:.0f} batches "
        f"(half-life {half_life(m):.0f} steps); the initial weight drops below 1 % only after {steps_to_forget(m):.0f} steps."
    )
    remedies = ["Recalibrate the BN statistics (PreciseBN) now: no retraining."]
    if suggested < m:
        remedies.append(
            f"Lower the momentum to {suggested:g} (PyTorch: {torch_momentum(suggested):g}) or less: its initial weight after {t} steps is below 1 %."
        )
    remedies.append(f"Train for at least {steps_to_forget(m):.0f} steps at {momentum_text(m)}.")
    return Finding(
        "stale_initial_values", "warning" if weight >= STALE_WEIGHT else "ok", "What the moving averages still remember", text, tuple(remedies), numbers
    )


def _fingerprint_finding(data: RunData, m: float) -> Finding | None:
    """Stale or not, for a saved model: the initial-values line fitted to its statistics, and the steps it implies."""
    w, r2, spread = fingerprint(data)
    if not math.isfinite(w):
        return None
    steps = implied_steps(w, m)
    fits = r2 >= FINGERPRINT_FIT and STALE_WEIGHT <= w <= 1 and spread <= max(0.1, 0.3 * w)  # one w, shared by every layer
    implied = f"about {steps:.0f} steps at {momentum_text(m)} (t = ln w / ln m)" if math.isfinite(steps) else "no step count (w is outside (0, 1))"
    text = (
        f"Fitting moving ≈ w·initial + (1 − w)·population to every channel's mean and variance gives w = {w:.2f} (median over layers, "
        f"spread {spread:.2f}), which implies {implied}; the line explains {max(r2, 0.0):.0%} of the error of the layer furthest off. "
    )
    text += (
        "The moving statistics still carry their initial values."
        if fits
        else "That is not the fingerprint of initial values: the statistics are off for another reason (lag behind drifting weights, or batches "
        "unlike the data). Give the step count with --steps N if you know it."
    )
    remedies = (
        ("Recalibrate the BN statistics (PreciseBN) now: no retraining.",) + ((f"Lower the momentum to {suggest_momentum(round(steps)):g} or train longer."),)
        if fits and math.isfinite(steps)
        else ()
    )
    return Finding(
        "stale_initial_values",
        "warning" if fits else "ok",
        "Whether the statistics carry their initial values",
        text,
        remedies,
        {"momentum": m, "fingerprint_weight": w, "fingerprint_r2": r2, "fingerprint_spread": spread, "implied_steps": steps},
    )


def layer_statistics(data: RunData, ev: Evidence | None = None) -> list[Finding]:
    """Per BN layer: moving statistics against the input inference really feeds it (the whole
    network in inference mode) and against the training-mode population; which layer goes wrong first."""
    figures = all_layer_figures(data)
    first = next((f.name for f in figures if f.own_severity in ("critical", "warning")), None)
    when = "In the saved model" if data.run.info.get("source") == "inspect" else None  # one record, no training history
    return [_layer_finding(f, f.name == first, when or f"At step {f.step}") for f in figures]


def _layer_finding(f: LayerFigures, first_wrong: bool, when: str) -> Finding:
    if math.isfinite(f.infer_scale):
        truth = (
            f"In inference mode (every layer above using its moving statistics) its input's mean is {f.infer_mean_gap:.2f} SDs from "
            f"the moving mean, and inference {scale_text(f.infer_scale)}."
        )
    else:
        truth = "This run was recorded before bnviz measured inference-mode inputs."
    own = (
        f"Against the training-mode population (as if every layer above were right) the moving mean is {f.own_mean_gap:.2f} SDs off "
        f"and the layer {scale_text(f.own_scale)}."
        if math.isfinite(f.own_mean_gap)
        else "The training-mode population was not measured."
    )
    lead = f"{f.name} goes wrong first: its own moving statistics are off. " if first_wrong else ""
    severity = f.severity if math.isfinite(f.infer_scale) else f.own_severity
    numbers = {
        "mean_gap_sd": f.infer_mean_gap,
        "scale_error": f.infer_scale,
        "own_mean_gap_sd": f.own_mean_gap,
        "own_scale_error": f.own_scale,
        "step": f.step,
        "first_wrong": float(first_wrong),
    }
    remedies = ("Recalibrate (PreciseBN) to replace the moving values by the population statistics.",) if severity in ("critical", "warning") else ()
    return Finding(
        f"layer_{f.name}",
        severity,
        f"{f.name}: moving statistics at inference",
        f"{lead}{when}: {truth} {own} (ε included; medians over {f.channels} channels.)",
        remedies,
        numbers,
    )


def lag(data: RunData, ev: Evidence) -> Finding | None:
    """The moving average follows statistics that move: it lags about m/(1−m) steps behind."""
    speed = drift_speed(data)
    m = _momentum(data)
    if not math.isfinite(speed) or m >= 1:
        return None
    lag_sd = speed * m / (1 - m)
    target = lag_momentum(speed)
    text = (
        f"The population mean of the BN inputs moves {speed:.3g} SDs per step late in training (median over channels, fastest layer). "
        f"A moving average with {momentum_text(m)} trails about m/(1−m) = {m / (1 - m):.0f} steps behind, so it lags by about "
        f"{lag_sd:.2f} SDs."
    )
    remedies = ["Recalibrate (PreciseBN) after training: it uses the final weights only."]
    if target < m:
        remedies.append(f"Use momentum {target:g} (PyTorch: {torch_momentum(target):g}): its window fits this drift (lag ≤ 0.1 SD).")
    return Finding(
        "lag",
        "warning" if lag_sd >= 0.25 else "ok",
        "How far the moving average trails drifting statistics",
        text,
        tuple(remedies),
        {"drift_sd_per_step": speed, "lag_sd": lag_sd, "suggested_momentum": target},
    )


def drift_speed(data: RunData) -> float:
    """Population-mean drift per step between the last two records that measured it, in population
    SDs (median channel, fastest layer)."""
    speeds = []
    for name, trace in ((name, t.measured()) for name, t in data.layers.items()):
        if len(trace.steps) < 3 or trace.steps[-1] <= trace.steps[-2]:
            continue
        sd = np.sqrt(trace.pop_var[-1] + data.epsilon(name))
        speeds.append(float(np.median(np.abs(trace.pop_mean[-1] - trace.pop_mean[-2]) / sd)) / float(trace.steps[-1] - trace.steps[-2]))
    return max(speeds) if speeds else math.nan


def non_iid_batches(data: RunData, ev: Evidence) -> Finding | None:
    if not math.isfinite(ev.non_iid_ratio) and not ev.not_iid:
        return None
    unshuffled = "The run trained without shuffling (class by class). " if not data.run.config.shuffle else ""
    severity = "warning" if ev.not_iid else "ok"
    measured = (
        f"Training batches' means sit {ev.non_iid_ratio:.1f}× as far from the population mean as i.i.d. batches of "
        f"{data.run.config.batch_size} would (about 1 for shuffled data)."
        if math.isfinite(ev.non_iid_ratio)
        else ""
    )
    text = unshuffled + measured
    if severity == "warning":
        text += " Batch statistics then describe one batch's classes, not the data, and the weights learn to rely on them."
    return Finding(
        "non_iid_batches",
        severity,
        "Whether training batches are i.i.d.",
        text,
        ("Shuffle the training data every epoch (fit(shuffle=True), or Dataset.shuffle before batch).",),
        {"ratio": ev.non_iid_ratio},
    )


def batch_noise(data: RunData, ev: Evidence) -> Finding | None:
    """The third error of the moving average: noise from small batches that a small momentum tracks,
    and the biased variance of a batch that gives a channel few values (BN after Dense at batch 2)."""
    biased = ev.variance_bias >= LAYER_SCALE[0]
    if not (math.isfinite(ev.noise) or biased):
        return None
    b, m = data.run.config.batch_size, _momentum(data)
    text = (
        f"At batch size {b}, with {momentum_text(m)}, the moving mean itself varies by about {ev.noise:.2f} population SDs from "
        "batch to batch (an i.i.d. batch mean's standard error × √((1−m)/(1+m)), worst layer)."
        if math.isfinite(ev.noise)
        else ""
    )
    if biased:
        n = round(1 / (1 - ev.variance_bias**-2))  # inverts √(n/(n−1))
        text += (
            f" A batch of {b} gives one layer only {n} values per channel: its training-mode variance is the biased (n − 1)/n "
            f"estimate, which the moving variance inherits, so inference divides by a standard deviation {ev.variance_bias:.2f}× too small."
        )
    warn = ev.noise >= NOISE_SD or biased
    return Finding(
        "batch_noise",
        "warning" if warn else "ok",
        "Noise and bias of small batches",
        text.strip(),
        ("Use a larger batch.", "Use a larger momentum (0.9–0.99) so the average spans more batches.", "Recalibrate (PreciseBN) over many batches."),
        {"noise_sd": ev.noise, "batch_size": b, "variance_bias": ev.variance_bias},
    )


def never_moved(data: RunData, ev: Evidence) -> Finding | None:
    """Moving statistics stuck at their initial values: momentum 1, or a custom loop without training=True;
    frozen layers (trainable=False) are said to be frozen, not stuck."""
    frozen = frozen_layers(data)
    if not ev.stuck:
        return _frozen_finding(data, ev, frozen) if frozen else None
    m = _momentum(data)
    why = (
        f"With {momentum_text(m)} the moving statistics never change."
        if m >= 1
        else "In Keras this happens when a custom training loop calls the model without training=True, or when the model calls the layer "
        "with training=False (as the fine-tuning guide does with its base model)."
    )
    return Finding(
        "never_moved",
        "warning",
        "The moving statistics never moved",
        f"{', '.join(ev.stuck)} still hold their initial moving values after {data.steps_trained} steps. {why}",
        ("Use momentum 0.9–0.99; call the model with training=True in custom loops; or recalibrate BN (PreciseBN).",),
        {"layers_stuck": len(ev.stuck)},
    )


def _frozen_finding(data: RunData, ev: Evidence, frozen: tuple[str, ...]) -> Finding:
    """Frozen BN keeps the statistics it was given, as intended; whether they fit this data is the question."""
    off = [f.name for f in all_layer_figures(data) if f.name in frozen and f.own_severity in ("critical", "warning")]
    text = (
        f"{len(frozen)} BN layer(s) are frozen (trainable=False): in Keras 3 they normalise with their moving statistics in fit too "
        "and never update them, as intended when fine-tuning. "
    )
    text += (
        f"{len(off)} of them ({', '.join(off[:5])}{'…' if len(off) > 5 else ''}) hold statistics that do not fit this data's population: "
        "the pretrained statistics belong to other data."
        if off
        else "Their statistics fit this data's population."
    )
    return Finding(
        "frozen_layers",
        "warning" if off else "ok",
        "Frozen BN layers",
        text,
        ("Recalibrate the frozen layers' statistics on this data (PreciseBN), or unfreeze BN for a few epochs.",) if off else (),
        {"frozen": len(frozen), "frozen_off": len(off)},
    )


@dataclass(frozen=True)
class Moved:
    """How far one BN layer's moving statistics moved from step 0 to its last record: the mean in
    units of this data's population SD (median channel), the standard deviation as a ratio ≥ 1
    either way (median channel, ε included)."""

    name: str
    mean_sd: float
    scale: float

    @property
    def far(self) -> bool:
        return self.mean_sd >= LAYER_GAP[0] or self.scale >= LAYER_SCALE[0]


def moved_since_start(data: RunData) -> list[Moved]:
    """Each BN layer with a step-0 record: how far its moving statistics moved during this fit."""
    moved = []
    for name in ordered_layers(data):
        trace, eps = data.layers[name], data.epsilon(name)
        if len(trace.steps) < 2 or trace.steps[0] != 0:
            continue
        pop_var = trace.measured().pop_var[-1]
        mean = float(np.median(standardized_gap(trace.moving_mean[-1], trace.moving_mean[0], pop_var, eps)))
        ratio = float(np.median(scale_error(trace.moving_var[-1], trace.moving_var[0], eps)))
        moved.append(Moved(name, mean, larger(ratio, 1 / ratio) if ratio > 0 else math.inf))
    return moved


def fine_tuning(data: RunData, ev: Evidence) -> Finding | None:
    """A fit that began from trained moving statistics (a pretrained model, not 0 and 1): did BN,
    in training mode, rewrite them ("overwritten_in_fine_tuning"), or keep them ("frozen_as_intended")?"""
    moved = moved_since_start(data)
    if started_fresh(data) or not moved or data.steps_trained == 0:
        return None
    worst = max(moved, key=lambda m: (m.far, m.mean_sd, m.scale))
    t, b, m = data.steps_trained, data.run.config.batch_size, _momentum(data)
    if not worst.far:
        return _kept_finding(data, moved, worst, t)
    far = [x for x in moved if x.far]
    own = next((f.own_mean_gap for f in all_layer_figures(data) if f.name == worst.name), math.nan)
    population = f", and ends {own:.2f} SDs from this data's population" if math.isfinite(own) else ""
    text = (
        f"This fit began from trained moving statistics (not 0 and 1: a pretrained model, or an earlier fit), and BN ran in training "
        f"mode, so fit rewrote them with this data's batches: after {t} steps at batch size {b}, {worst.name}'s moving mean moved "
        f"{worst.mean_sd:.2f} SDs from its value at step 0 and its standard deviation changed {worst.scale:.2f}× (medians over channels; "
        f"{len(far)} of {len(moved)} BN layers moved this far){population}. With {momentum_text(m)} the statistics still carry "
        f"mᵗ = {init_weight(m, t):.0%} of the values they began with and the rest is the last ~{ema_window(m):.0f} training batches: inference "
        "normalises with a mix that belongs to neither data. In Keras 3 calling the base with training=False does not prevent this: "
        "fit's training=True overrides it (measured on Keras 3.15); trainable=False does."
    )
    remedies = (
        "Keep the pretrained BN layers in inference mode while fine-tuning, as the Keras transfer-learning guide says: base.trainable = False, "
        "or trainable=False on each BatchNormalization layer to fine-tune the rest (Keras 3 then normalises with the pretrained statistics "
        "and never updates them).",
        "Recalibrate the BN statistics on this data (PreciseBN) now: no retraining.",
        f"Or fine-tune with larger batches and for more steps: the pretrained values weigh under 1 % only after {steps_to_forget(m):.0f} steps.",
    )
    numbers = {"moved_sd": worst.mean_sd, "scale_change": worst.scale, "layers_moved": len(far), "steps": t, "batch_size": b}
    return Finding("overwritten_in_fine_tuning", "warning", "What fine-tuning did to the pretrained statistics", text, remedies, numbers)


def _kept_finding(data: RunData, moved: list[Moved], worst: Moved, t: int) -> Finding:
    """Trained statistics that stayed put: frozen BN (trainable=False), as fine-tuning intends."""
    frozen = len(frozen_layers(data))
    how = f"{frozen} of them frozen (trainable=False)" if frozen else "none frozen (trainable=False)"
    text = (
        f"The fit began from trained moving statistics (a pretrained model) and kept them: after {t} steps the moving mean of every "
        f"BN layer moved at most {worst.mean_sd:.3f} SDs and its standard deviation {worst.scale:.3f}× ({len(moved)} layers, {how}), "
        "so fit and inference normalise with the same pretrained statistics, as fine-tuning with a frozen base intends."
    )
    numbers = {"moved_sd": worst.mean_sd, "scale_change": worst.scale, "frozen": frozen, "steps": t}
    return Finding("frozen_as_intended", "ok", "Whether fine-tuning kept the pretrained statistics", text, (), numbers)


def dropout_before_bn(data: RunData, ev: Evidence) -> Finding | None:
    """Dropout feeding a BN layer shifts the variance between training and inference: measured as
    the moving variance (learnt from training batches, Dropout on) against the variance inference
    feeds the layer (Dropout off), for each BN layer after Dropout or noise."""
    noisy = {row["name"] for row in data.run.info.get("bn_layers", []) if row.get("after_noise")}
    if not noisy:
        return _dropout_by_layer_order(data)
    figures = [f for f in all_layer_figures(data) if f.name in noisy and math.isfinite(f.infer_scale)]
    if not figures:
        return None
    worst = max(figures, key=lambda f: abs(math.log(f.infer_scale)) if f.infer_scale > 0 else math.inf)
    shifted = not 1 / LAYER_SCALE[0] < worst.infer_scale < LAYER_SCALE[0]
    text = (
        f"{len(figures)} BN layer(s) come after Dropout or noise, active in training only. The variance shift, measured: "
        f"{worst.name}'s moving variance, learnt with Dropout on, makes inference divide by a standard deviation {worst.infer_scale:.3g}× "
        f"that of the input it receives with Dropout off" + (" (the shift matters)." if shifted else " (within 12 %: the shift is small).")
    )
    return Finding(
        "dropout_before_bn",
        "warning" if shifted else "ok",
        "Dropout before BatchNormalization",
        text,
        ("Move Dropout after the last BN layer, or remove it.", "Recalibrate (PreciseBN) with Dropout off."),
        {"variance_shift_scale": worst.infer_scale, "layers_after_dropout": len(figures)},
    )


def _dropout_by_layer_order(data: RunData) -> Finding | None:
    """Runs recorded before BN layers knew what feeds them: a Dropout layer listed before a BN layer."""
    kinds = [row.get("type") for row in data.run.info.get("layers", [])]
    first_dropout = next((i for i, kind in enumerate(kinds) if kind == "Dropout"), None)
    if first_dropout is None or "BatchNormalization" not in kinds[first_dropout + 1 :]:
        return None
    return Finding(
        "dropout_before_bn",
        "warning",
        "Dropout comes before BatchNormalization",
        "A Dropout layer feeds a BN layer: in training BN sees the variance with dropout, at inference without it "
        "(the variance shift), so the moving variance does not fit inference.",
        ("Move Dropout after the last BN layer, or remove it.",),
        {},
    )


def test_shift(data: RunData, ev: Evidence) -> Finding | None:
    """Test inputs that differ from training inputs: a data problem, not a BN one."""
    if not (math.isfinite(ev.test_shift) or ev.test_shifted):
        return None
    name, show = ev.metric.name, ev.metric.show
    pixels = data.run.info.get("input_shift", {}).get("pixel_mean", {})
    means = f" Mean pixel value: train {pixels['train']:.1f}, test {pixels['test']:.1f}." if {"train", "test"} <= set(pixels) else ""
    text = (
        f"The test inputs sit {ev.test_shift:.2f} SDs from the training inputs (validation: {ev.val_shift:.2f}), measured at the first BN "
        f"layer's input.{means} "
        if math.isfinite(ev.test_shift)
        else ""
    )
    text += f"Validation {name} {show(ev.val)}, test {show(ev.test)}"
    if math.isfinite(ev.test_batchstats):
        text += f"; with the test set's own batch statistics test gets {show(ev.test_batchstats)}"
    text += "."
    severity = "warning" if ev.test_shifted else "ok"
    return Finding(
        "test_shift",
        severity,
        "Whether the test data resemble the training data",
        text,
        (
            "Apply the same preprocessing to test images as to training images (scaling, colour, resizing).",
            "Check where the test images come from (camera, format, source).",
        ),
        {"test_shift": ev.test_shift, "val_shift": ev.val_shift},
    )


def overfitting(data: RunData, ev: Evidence) -> Finding | None:
    gap = ev.overfit_gap
    if not math.isfinite(gap):
        return None
    held = "validation" if math.isfinite(ev.val) else ev.split
    show = ev.metric.show
    train = ev.train if math.isfinite(ev.train) else ev.fit
    text = f"Training {ev.metric.name} {show(train)} against {held} {show(train - gap)} in inference mode" + (
        f"; recalibrating leaves {ev.split} at {show(ev.recalibrated)}." if math.isfinite(ev.recalibrated) else "."
    )
    return Finding(
        "overfitting",
        "warning" if gap >= ev.metric.overfit else "ok",
        "Training vs held-out",
        text,
        ("Add data augmentation, more data or regularisation, or use fewer parameters.",),
        {"gap": gap},
    )


def fit_vs_evaluate(data: RunData, ev: Evidence) -> Finding | None:
    """The report so many Keras users file: fit says 0.99, evaluate on the same data says 0.5."""
    gap = ev.fit - ev.train
    if not math.isfinite(gap) or gap < 2 * ev.metric.warning:
        return None
    name, show = ev.metric.name, ev.metric.show
    return Finding(
        "fit_vs_evaluate",
        "info",
        "fit and evaluate disagree on the same training images",
        f"fit reported {name} {show(ev.fit)} during the last epoch, but evaluate on the same training images gives {show(ev.train)}. "
        "fit normalises each batch with its own statistics; evaluate uses the moving statistics.",
        (),
        {"fit_accuracy": ev.fit, "evaluate_accuracy": ev.train},
    )


def data_regime(data: RunData, ev: Evidence) -> Finding | None:
    """How far the first BN layer's population statistics sit from the initial moving values 0 and 1:
    the error of the moving statistics is about mᵗ·(initial − population), so far means fragile."""
    names = ordered_layers(data)
    if not names:
        return None
    trace, eps = data.layers[names[0]].measured(), data.epsilon(names[0])
    offset = float(np.median(np.abs(trace.pop_mean[-1]) / np.sqrt(trace.pop_var[-1] + eps)))
    variance = float(np.median(trace.pop_var[-1]))
    scale = float(np.median(scale_error(np.ones_like(trace.pop_var[-1]), trace.pop_var[-1], eps)))
    far = offset > 0.5 or not 1 / LAYER_SCALE[1] <= scale <= LAYER_SCALE[1]
    detail = (
        f"The first BN layer's input has a population mean {offset:.2f} SDs from 0 and a variance of {variance:.3g} (medians over "
        f"channels), against the initial moving values 0 and 1: normalising with the initial values {scale_text(scale)}. The moving "
        "statistics are off by about mᵗ·(initial − population), so "
    )
    detail += (
        "this run's data sits far from them: while the initial values linger, inference normalises with a mean and a variance that belong to no data."
        if far
        else "this run's data sits close to them: lingering initial values cost little."
    )
    return Finding(
        "data_regime",
        "info",
        "How far the data sits from the initial moving values",
        detail,
        (),
        {"mean_offset_sd": offset, "variance": variance, "initial_scale_error": scale, "far": float(far)},
    )


def model_notes(data: RunData, ev: Evidence) -> Finding | None:
    """What bnviz knows only about a model it did not build (bnviz.Probe, bnviz inspect): frozen BN
    layers, an unknown training history. The notes are written with the run (`info["notes"]`)."""
    notes = data.run.info.get("notes") or []
    if not notes:
        return None
    frozen = sum(1 for layer in data.run.info.get("bn_layers", []) if not layer.get("trainable", True))
    return Finding("model_notes", "info", "About this model", " ".join(notes), (), {"frozen_bn_layers": frozen})


def _sentence(text: str) -> str:
    """`text` with its first letter raised and a full stop (str.capitalize would lower 'BN' and 'PreciseBN')."""
    return text[:1].upper() + text[1:] + "."


def missing_evidence(data: RunData, ev: Evidence) -> Finding | None:
    """What the verdict could not measure, and how the user gives it."""
    gaps = []
    if not math.isfinite(ev.inference):
        gaps.append("no held-out data: pass validation_data= or test_data= to bnviz.Probe (or --test to bnviz inspect)")
    if _has_bn(data) and not math.isfinite(ev.recalibrated):
        gaps.append(
            "no PreciseBN on training images, so how much the moving statistics cost is "
            + ("estimated from the training batches the probe saw" if ev.batch_fit else "not measured")
            + f": pass train_data= to bnviz.Probe, or run bnviz recalibrate {data.run.id} (--calibrate-on val scores transductively)"
        )
    if not math.isfinite(ev.train) and not math.isfinite(ev.fit):
        gaps.append("no training images were evaluated, so overfitting cannot be told from a BN fault")
    if not gaps:
        return None
    return Finding("missing_evidence", "info", "What this run could not measure", _sentence("; ".join(gaps)), (), {"missing": len(gaps)})


CHECKS: tuple[Callable[[RunData, Evidence], Finding | None], ...] = (
    accuracy_evidence,
    missing_evidence,
    stale_initial_values,
    lag,
    non_iid_batches,
    batch_noise,
    never_moved,
    fine_tuning,
    dropout_before_bn,
    test_shift,
    overfitting,
    fit_vs_evaluate,
    data_regime,
    model_notes,
)


# --- the verdict ------------------------------------------------------------------------------------
def _bn_fault(ev: Evidence, problem: bool) -> bool | None:
    """Do the moving statistics cost accuracy? Measured by PreciseBN on training images (or batch
    statistics on them); else by the moving statistics against the training batches the probe saw,
    when something is wrong at all; None when nothing measures it."""
    lost = ev.lost_to_statistics
    if math.isfinite(lost):
        return lost >= ev.metric.warning
    if ev.batch_fit:
        return problem and ev.batch_fit in ("critical", "warning")
    return None


def decide(data: RunData, ev: Evidence, found: dict[str, Finding]) -> str:
    """The one cause the evidence supports (see the module docstring), checked in this order; where
    the evidence a cause needs is missing, "insufficient_evidence" rather than a guess."""
    metric = ev.metric
    if not math.isfinite(ev.inference):
        return "insufficient_evidence"
    if not _has_bn(data):
        return "test_shift" if ev.test_shifted else "overfitting" if ev.overfit_gap >= metric.overfit else "healthy"
    problem = ev.trained_score - ev.inference >= metric.warning or ev.underfits
    if ev.stuck and problem:
        return "never_moved"
    bn_fault = _bn_fault(ev, problem)
    if ev.not_iid and problem and not (_iid_measured_only(data) and bn_fault):
        return "non_iid_batches"
    if bn_fault is None and (problem or not math.isfinite(ev.trained_score)):
        return "insufficient_evidence"
    if bn_fault:
        if not ev.steps_known:
            return "stale_initial_values" if _warns(found, "stale_initial_values") else "statistics_off"
        if _warns(found, "overwritten_in_fine_tuning"):
            return "overwritten_in_fine_tuning"
        if ev.init_weight >= STALE_WEIGHT:
            return "stale_initial_values"
        if _warns(found, "dropout_before_bn"):
            return "dropout_before_bn"
        return "batch_noise" if ev.noise >= NOISE_SD or ev.variance_bias >= LAYER_SCALE[0] else "lag"
    if ev.test_shifted:
        return "test_shift"
    return "overfitting" if ev.overfit_gap >= metric.overfit else "healthy"


def _iid_measured_only(data: RunData) -> bool:
    """Is "not i.i.d." a measurement here (a model trained elsewhere), not a known fact (bnviz fed
    the batches itself)? Measured, it rests on four batches' spread and reads up to 2.9 (of 3) on
    shuffled data, so it never outranks statistics that PreciseBN repairs: recalibration cannot help
    batches that were not i.i.d., so a repair says the statistics, not the batches, were at fault."""
    return data.run.info.get("source", "bnviz") != "bnviz"


def _warns(found: dict[str, Finding], key: str) -> bool:
    """Is finding `key` there and a warning (the verdict sets severities above that later)?"""
    return key in found and found[key].severity == "warning"


VERDICTS: dict[str, str] = {
    "insufficient_evidence": "Not enough evidence to name a cause",
    "stale_initial_values": "The moving statistics still carry their initial values",
    "lag": "The moving statistics lag behind statistics that drifted during training",
    "statistics_off": "The moving statistics do not fit the data, and not because of their initial values",
    "non_iid_batches": "Training batches were not i.i.d. samples of the data",
    "batch_noise": "The moving statistics track the noise of small batches",
    "dropout_before_bn": "Dropout before BatchNormalization shifts the variance at inference",
    "never_moved": "The moving statistics never moved from their initial values",
    "overwritten_in_fine_tuning": "Fine-tuning rewrote the pretrained moving statistics",
    "test_shift": "The test data differ from the training data; BN is not the cause",
    "overfitting": "Overfitting; BN is not the cause",
    "healthy": "Healthy: inference does as well as the model can",
}
WEAK_MODEL = "BN is not the cause: the model has not learnt its own training data"  # the healthy verdict of a model that underfits


FINE_TUNING_DETAIL = {"overwritten_in_fine_tuning": "overwritten_in_fine_tuning", "healthy": "frozen_as_intended"}  # cause → finding told in the verdict


def verdict(data: RunData, ev: Evidence | None, found: dict[str, Finding]) -> Finding:
    """The bottom line: the cause, how sure, and what to do first."""
    if ev is None:
        return _pending(data)
    cause = decide(data, ev, found)
    lost = ev.lost_to_statistics
    drop = lost if cause in BN_CAUSES and math.isfinite(lost) else larger(ev.trained_score, ev.val) - ev.inference
    weak = cause == "healthy" and ev.underfits  # inference matches a model that learnt little: not "healthy"
    if cause == "insufficient_evidence":
        severity = "unknown"
    else:
        severity = "ok" if cause == "healthy" and not weak else "critical" if drop >= ev.metric.critical else "warning"
    detail = _verdict_detail(cause, ev, _has_bn(data), found, data) + (compounding(data) if cause in BN_CAUSES else "")
    told = FINE_TUNING_DETAIL.get(cause, "")
    if told in found:
        detail += " " + found[told].detail  # what fine-tuning did to pretrained statistics, with its numbers
    remedies = found[cause].remedies if cause in found else ()
    if cause == "insufficient_evidence":
        remedies = (found["missing_evidence"].detail,) if "missing_evidence" in found else ()
    elif weak:
        remedies = ("Train longer, or check the learning rate and the labels: the model does not fit even its training images.",)
    elif cause == "statistics_off":
        remedies = (
            "Recalibrate the BN statistics (PreciseBN) now: no retraining.",
            "If it was trained long at a high learning rate, a smaller momentum (0.9) follows drifting statistics faster.",
        )
    numbers = {"accuracy_drop": drop}
    if cause in found and "suggested_momentum" in found[cause].numbers:
        numbers["suggested_momentum"] = found[cause].numbers["suggested_momentum"]
    return Finding("verdict", severity, f"Verdict: {WEAK_MODEL if weak else VERDICTS[cause]}", detail, remedies, numbers, cause)


def _verdict_detail(cause: str, ev: Evidence, has_bn: bool, found: dict[str, Finding], data: RunData | None = None) -> str:
    name, show = ev.metric.name, ev.metric.show
    recal = f" (recalibrating on training batches gives {show(ev.recalibrated)})" if math.isfinite(ev.recalibrated) else ""
    held = f"{ev.split.capitalize()} {name} is {show(ev.inference)} in inference mode{recal}."
    trained = f"{name} {show(ev.trained_score)} on the training images"
    if cause == "insufficient_evidence":
        what = found["missing_evidence"].detail if "missing_evidence" in found else ""
        seen = f" against {trained} (fit, batch statistics)" if math.isfinite(ev.trained_score) else ""
        return (f"{held[:-1]}{seen}. bnviz will not guess a cause without the measurement that decides it. {what}").strip()
    if cause == "non_iid_batches":
        return (
            f"{held} Each training batch held one or two classes, so BN normalised away what told the classes apart and the "
            f"weights learned around it ({trained}): recalibrating cannot undo that; shuffle and retrain."
        )
    if cause == "statistics_off":
        off = found.get("stale_initial_values")
        why = f" {off.detail}" if off else ""
        return f"{held} The weights are fine: the statistics BN normalises with at inference are off.{why}"
    if cause in BN_CAUSES:
        basis = (
            ""
            if math.isfinite(ev.recalibrated) or math.isfinite(ev.train_batchstats)
            else (" (Measured against the training batches the probe saw, which the moving statistics do not fit.)")
        )
        return f"{held} The weights are fine: what inference gets wrong is the statistics BN normalises with. See the finding below.{basis}"
    if cause == "test_shift":
        measured = f", and the test inputs sit {ev.test_shift:.2f} SDs from the training inputs" if math.isfinite(ev.test_shift) else ""
        recovered = f"; the test set's own batch statistics give {show(ev.test_batchstats)}" if math.isfinite(ev.test_batchstats) else ""
        return (
            f"Validation {name} is {show(ev.val)} but test {name} {show(ev.test)}{measured}{recovered}. The test data differ from what the "
            "model trained on; recalibrating BN on training data cannot fix this."
        )
    if cause == "overfitting":
        same = " Recalibrating on training data does not close the gap." if math.isfinite(ev.recalibrated) else ""
        return f"{held} Training {name} {show(ev.train if math.isfinite(ev.train) else ev.fit)}: the model does not generalise.{same}"
    weak = f" The model itself is weak: {trained}." if ev.underfits else ""
    if not has_bn:
        return f"{held} This model has no BatchNormalization layer: training and inference differ only by Dropout.{weak}"
    basis = "Recalibrating BN changes little" if math.isfinite(ev.lost_to_statistics) else "Inference does as well as fit on the training batches"
    off = [f.name for f in all_layer_figures(data) if f.own_severity in ("critical", "warning")] if data is not None else []
    fits = (
        f", although the moving statistics of {', '.join(off[:3])}{'…' if len(off) > 3 else ''} are off (see below): this network's predictions tolerate it"
        if off or ev.variance_bias >= LAYER_SCALE[0]
        else ": the moving statistics fit the data"
    )
    return f"{held} {basis}{fits}.{weak}"


FEW_LAYERS = 3  # up to this many BN layers the verdict follows the error through every one; beyond, it names where it starts and the worst


def compounding(data: RunData) -> str:
    """Where the error starts and how it grows layer by layer at inference, in one sentence."""
    figures = all_layer_figures(data)
    if len(figures) > FEW_LAYERS:
        return named_layers(figures)
    figures = [f for f in figures if math.isfinite(f.infer_scale)]
    first = next((f for f in figures if f.own_severity in ("critical", "warning")), None)
    if first is None:
        return ""
    chain = ", ".join(f"{f.name} {f.infer_scale:.3g}×" for f in figures)
    return (
        f" The error starts at {first.name} and carries through the network: at inference each BN layer divides by a standard "
        f"deviation this many times that of the input it actually receives (1 is right): {chain}."
    )


def named_layers(figures: list[LayerFigures], worst: int = 3) -> str:
    """For a network with many BN layers (ResNet50 has 53), where the error starts and the `worst`
    layers furthest off (`ranked_layers`), in one sentence: the first in network order whose mean gap
    or scale error passes its warning threshold, at inference where measured."""
    first = next((f for f in figures if f.off > 1), None)
    if first is None:
        return ""
    named = "; ".join(f"{f.name} ({f.mean_gap:.2f} SDs, {f.scale:.3g}×)" for f in ranked_layers(figures)[:worst])
    return (
        f" The error starts at {first.name}, the first of the {len(figures)} BN layers whose moving statistics are off (mean gap "
        f"{first.mean_gap:.2f} SDs, scale error {first.scale:.3g}×); the layers furthest off are {named}. The layer overview ranks them all."
    )


def _pending(data: RunData) -> Finding:
    run = data.run
    if run.status in ("queued", "running"):
        step = data.steps_trained
        total = f"/{run.total_steps}" if run.total_steps else ""
        return Finding(
            "verdict",
            "info",
            f"Verdict pending — step {step}{total}",
            "The verdict needs the final evaluation, made when training ends; the records below are live.",
            (),
            {},
            "pending",
        )
    return Finding(
        "verdict",
        "info",
        "No verdict: the run has no final evaluation",
        f"The run ended {run.status} before its evaluation; the records below are what it stored.",
        (),
        {},
        "pending",
    )


def reconcile(findings: list[Finding], top: Finding) -> list[Finding]:
    """Findings never contradict the verdict: the named cause's finding takes its severity; other
    causes and per-layer alarms drop to "info" unless the verdict blames BN's statistics."""
    also = {"test_shift"} if top.cause in BN_CAUSES else set()  # a shifted test set can come on top of a BN problem
    result = []
    for f in findings:
        if f.key == top.cause:
            f = dataclasses.replace(f, severity=top.severity)
        elif f.severity in ("critical", "warning") and (f.key in CAUSES and f.key not in also or f.key.startswith("layer_") and top.cause not in BN_CAUSES):
            f = dataclasses.replace(f, severity="info")
        result.append(f if f.severity in ("critical", "warning") else dataclasses.replace(f, remedies=()))  # no lever for what is not wrong
    return result


def diagnose(data: RunData) -> list[Finding]:
    """The verdict first, then every finding by severity (critical first)."""
    ev = gather(data)
    findings = [f for check in CHECKS if ev is not None and (f := check(data, ev)) is not None] + layer_statistics(data)
    top = verdict(data, ev, {f.key: f for f in findings})
    ranked = sorted(reconcile(findings, top), key=lambda f: SEVERITIES.index(f.severity))
    return [top, *ranked]


def as_text(findings: list[Finding]) -> str:
    """Plain-text rendering for the CLI and reports."""
    lines = []
    for f in findings:
        label = "NOT ENOUGH EVIDENCE" if f.severity == "unknown" else f.severity.upper()
        lines.append(f"[{label}] {f.title}\n  {f.detail}")
        lines += [f"  → {r}" for r in f.remedies]
    return "\n".join(lines)
