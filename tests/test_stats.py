"""bnviz.stats: EMA theory, the probe schedule, histograms and gap figures, each against a brute-force
or hand-worked reference (these tests also drive the mutation run, `python -m bench.mutation`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnviz import stats as S


def brute_force_steps(momentum: float, weight: float) -> int:
    """Apply the EMA to the initial value's weight one step at a time until it is at most `weight`."""
    carried, steps = 1.0, 0
    while carried > weight:
        carried, steps = carried * momentum, steps + 1
    return steps


@pytest.mark.parametrize("momentum", [0.3, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_ema_theory_matches_stepping_the_average(momentum):
    assert S.steps_to_forget(momentum) == brute_force_steps(momentum, 0.01)
    assert S.steps_to_forget(momentum, weight=0.3) == brute_force_steps(momentum, 0.3)
    assert S.init_weight(momentum, 7) == pytest.approx(momentum**7, rel=1e-12)
    np.testing.assert_allclose(S.init_weight(momentum, np.array([0, 1, 2])), [1, momentum, momentum**2])
    assert S.init_weight(momentum, S.half_life(momentum)) == pytest.approx(0.5)
    assert S.ema_window(momentum) == pytest.approx(sum(momentum**k for k in range(100_000)), rel=1e-6)  # Σ mᵏ = 1/(1 − m)


def test_ema_theory_at_the_ends_of_the_momentum_range():
    assert (S.half_life(0.0), S.steps_to_forget(0.0), S.ema_window(0.0)) == (0.0, 1.0, 1.0)
    assert (S.half_life(-0.1), S.steps_to_forget(-0.1)) == (0.0, 1.0)
    assert S.half_life(1.0) == S.steps_to_forget(1.0) == S.ema_window(1.0) == math.inf
    assert S.steps_to_forget(0.8) == 21 and S.steps_to_forget(0.99) == 459  # README: "forgets within ~21 steps"


@pytest.mark.parametrize("steps", [1, 21, 114, 459, 1000])
def test_suggested_momentum_is_the_largest_slider_step_that_forgets(steps):
    forgets = [k / 1000 for k in range(1001) if (k / 1000) ** steps <= 0.01]
    assert S.suggest_momentum(steps) == max(forgets)
    assert S.suggest_momentum(steps, weight=0.5) == max(k / 1000 for k in range(1001) if (k / 1000) ** steps <= 0.5)


def test_suggested_momentum_without_steps_and_torch_convention():
    assert S.suggest_momentum(0) == S.suggest_momentum(-3) == 0.0
    assert S.torch_momentum(0.99) == 0.01 and S.torch_momentum(0.8) == 0.2 and S.torch_momentum(0.0) == 1.0


def test_log_schedule_is_dense_early_and_geometric_later():
    assert S.log_schedule(114) == [1, 2, 5, 10, 22, 46, 100]  # worked by hand: t ← max(t·10^(1/3), t + 1), rounded
    assert S.log_schedule(114, per_decade=6) == [1, 2, 3, 4, 6, 9, 14, 20, 30, 44, 65, 95]
    assert S.log_schedule(114, per_decade=1) == [1, 10, 100] and S.log_schedule(30, per_decade=24)[:5] == [1, 2, 3, 4, 5]
    assert S.log_schedule(1) == [1] and S.log_schedule(0) == []


def test_probe_steps_add_step_zero_epoch_ends_and_the_last_step():
    assert S.probe_steps(114, 38, 25) == [0, 25, 38, 50, 75, 76, 100, 114]
    assert S.probe_steps(114, 38, 0) == [0, 1, 2, 5, 10, 22, 38, 76, 114]  # geometric through the first epoch, then epoch ends
    assert S.probe_steps(1000, 1000, 0) == sorted({0, 1000, *S.log_schedule(1000)}) and S.probe_steps(8, 4, 0) == [0, 1, 2, 4, 8]
    assert S.probe_steps(10, 4, 3) == [0, 3, 4, 6, 8, 9, 10]
    assert S.probe_steps(0, 1, 5) == [0]
    assert S.probe_steps(5, 1, 10) == S.probe_steps(30, 30, 1)[:6] == [0, 1, 2, 3, 4, 5]  # one step per epoch; every step
    assert S.probe_steps(30, 30, 1) == list(range(31)) and S.probe_steps(7, 7, 3) == [0, 3, 6, 7]


def test_shared_histograms_against_numpy():
    rng = np.random.default_rng(0)
    train, infer = rng.normal(0, 1, (50, 4)), rng.normal(3, 2, (40, 4))
    infer[0, 0] = np.nan
    edges, counts_train, counts_infer = S.shared_histograms(train, infer, 8)
    finite = np.concatenate([train.ravel(), infer.ravel()])
    lo, hi = np.percentile(finite[np.isfinite(finite)], [0.5, 99.5])
    np.testing.assert_allclose(edges, np.linspace(lo, hi, 9), rtol=1e-6)
    np.testing.assert_array_equal(counts_train, np.histogram(np.clip(train, lo, hi), bins=np.linspace(lo, hi, 9))[0])
    assert counts_infer.sum() == infer.size - 1 and counts_train.sum() == train.size  # outliers land in the end bins, NaN nowhere
    assert edges.dtype == np.float32 and counts_train.dtype == counts_infer.dtype == np.int32


def test_shared_histograms_of_an_all_equal_and_an_empty_sample():
    edges, counts, _ = S.shared_histograms(np.full(6, 2.0), np.full(3, 2.0), 4)
    np.testing.assert_allclose(edges, np.linspace(1.5, 2.5, 5))
    assert counts.tolist() == [0, 0, 6, 0]
    edges, counts, other = S.shared_histograms(np.array([np.nan]), np.array([]), 2)
    np.testing.assert_allclose(edges, [-0.5, 0.0, 0.5])
    assert counts.sum() == other.sum() == 0


def test_large_samples_are_thinned_keeping_every_channel():
    values = np.tile(np.arange(6.0), 10_000).reshape(-1, 6)  # channel c holds the value c
    _, counts, _ = S.shared_histograms(values, values[:1], 6, max_values=1_000)
    assert 900 <= counts.sum() <= 1_100 and np.all(counts > 100)  # stride 60 would keep channel 0 alone
    assert S.shared_histograms(values, values[:1], 6, max_values=10**6)[1].sum() == values.size
    assert S.shared_histograms(np.zeros((100_000, 1)), np.zeros(1), 4)[1].sum() == 20_000  # default: about 20,000 values


@pytest.mark.parametrize("n_layers", [1, 3, 4, 20, 53, 200])
def test_a_record_keeps_a_bounded_number_of_histogram_values_however_many_layers(n_layers):
    """The seed's 3 layers keep 20,000 values each; at 53 layers (ResNet50) the record's total stays at
    the budget, each layer thinner, down to the floor a 40-bin histogram needs."""
    per_layer = S.histogram_values(n_layers)
    assert per_layer == S.HISTOGRAM_VALUES if n_layers <= 3 else per_layer < S.HISTOGRAM_VALUES
    assert per_layer >= S.MIN_HISTOGRAM_VALUES
    assert n_layers * per_layer <= max(S.HISTOGRAM_BUDGET, n_layers * S.MIN_HISTOGRAM_VALUES)


def test_gap_and_scale_error_per_channel_with_epsilon():
    moving_mean, pop_mean, pop_var = np.array([0.0, 1.0, 5.0]), np.array([0.5, 1.0, 1.0]), np.array([0.25, 4.0, 0.0])
    np.testing.assert_allclose(S.standardized_gap(moving_mean, pop_mean, pop_var), [1.0, 0.0, 4e6])
    np.testing.assert_allclose(S.standardized_gap(moving_mean, pop_mean, pop_var, 1e-3), [0.5 / np.sqrt(0.251), 0.0, 4 / np.sqrt(1e-3)])
    true_var = np.array([0.25, 4.0, 8.9e-4])  # the last: norm1's variance, about ε
    np.testing.assert_allclose(S.scale_error(np.array([1.0, 2.0, 1.0]), true_var, 1e-3), np.sqrt((np.array([1.0, 2.0, 1.0]) + 1e-3) / (true_var + 1e-3)))


def test_larger_ignores_what_is_not_known():
    assert S.larger(math.nan, 0.3) == S.larger(0.3, math.nan) == 0.3  # max(nan, 0.3) would be nan, max(0.3, nan) 0.3
    assert S.larger(0.2, 0.7, None, math.inf) == 0.7 and math.isnan(S.larger(math.nan, None))


def _ema_of_initial_values(pop_mean, pop_var, momentum, steps):
    """The moving statistics after `steps` updates towards a fixed population, stepped one by one."""
    mean, var = np.zeros_like(pop_mean), np.ones_like(pop_var)
    for _ in range(steps):
        mean, var = momentum * mean + (1 - momentum) * pop_mean, momentum * var + (1 - momentum) * pop_var
    return mean, var


@pytest.mark.parametrize("momentum, steps", [(0.99, 30), (0.99, 150), (0.9, 12), (0.995, 400)])
def test_the_stale_fingerprint_recovers_the_steps_of_an_ema_from_its_initial_values(momentum, steps):
    rng = np.random.default_rng(steps)
    pop_mean, pop_var = rng.normal(3, 2, 24), rng.uniform(0.001, 40, 24)
    moving_mean, moving_var = _ema_of_initial_values(pop_mean, pop_var, momentum, steps)
    w, r2 = S.stale_fingerprint(moving_mean, moving_var, pop_mean, pop_var)
    assert w == pytest.approx(momentum**steps, rel=1e-6) and r2 == pytest.approx(1.0, abs=1e-9)
    assert S.implied_steps(w, momentum) == pytest.approx(steps, rel=1e-4)


def test_statistics_off_for_another_reason_do_not_fit_the_stale_line():
    """Lag: the moving statistics are an earlier population's, not a mix with (0, 1)."""
    rng = np.random.default_rng(5)
    pop_mean, pop_var = rng.normal(3, 2, 32), rng.uniform(0.5, 4, 32)
    earlier_mean, earlier_var = pop_mean + rng.normal(0, 1, 32) * np.sqrt(pop_var), pop_var * rng.uniform(0.5, 2, 32)
    _, r2 = S.stale_fingerprint(earlier_mean, earlier_var, pop_mean, pop_var)
    assert r2 < 0.5
    assert math.isnan(S.stale_fingerprint(np.zeros(4), np.ones(4), np.zeros(4), np.ones(4))[0])  # population at the initial values: cannot tell
    assert math.isnan(S.implied_steps(1.2, 0.99)) and math.isnan(S.implied_steps(0.5, 1.0))
