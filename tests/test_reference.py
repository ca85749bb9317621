"""Reference tests: the probe's and PreciseBN's numbers against independent numpy computations, on
data built so that a plausible one-line bug (equal batch weights, a dropped short batch, a missing
between-batch term, a wrong momentum) moves the result far outside the tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from bnviz.config import ProbeConfig
from bnviz.presets import preset_config
from bnviz.stats import RECOVERY_TOLERANCE, batch_stats_from_update, recover_batch_moments, recovery_error_bound
from tests.conftest import TINY

VARIANCES = 10.0 ** np.arange(-7, -1)  # 1e-7 … 1e-2, the range BN inputs span on the suite's data


def uneven(samples: int = 30, size: int = 4, batch_size: int = 7, seed: int = 0) -> np.ndarray:
    """(samples, size, size, 6) float32: channel c has within-batch variance VARIANCES[c] around a
    mean of 0.5 that moves by several SDs from batch to batch, most in the short last batch."""
    rng = np.random.default_rng(seed)
    sd = np.sqrt(VARIANCES)
    batch = np.arange(samples) // batch_size
    offset = np.where(batch == batch.max(), 8.0, 3.0 * (batch - 1.5))[:, None, None, None] * sd
    return (0.5 + offset + sd * rng.standard_normal((samples, size, size, len(sd)))).astype(np.float32)


def numpy_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), flat.var(axis=0)


class NumpyForward:
    """Stands in for `StatelessForward`: two 'layers', the batch itself and its every other pixel
    (a smaller feature map, so each layer has its own element count), moments in float32."""

    def input_moments(self, x: np.ndarray, training: bool = True) -> list[tuple[np.ndarray, np.ndarray, int]]:
        return [(*(m.astype(np.float32) for m in numpy_moments(v)), v[..., 0].size) for v in (x, x[:, ::2, ::2])]


def test_pooling_weighs_uneven_batches_by_count_and_keeps_the_between_batch_variance():
    from bnviz.tf.probe import population_moments

    x = uneven()  # batches of 7, 7, 7, 7 and a short 2
    for (mean, var), reference in zip(population_moments(NumpyForward(), x, 7, 2), (x, x[:, ::2, ::2]), strict=True):
        ref_mean, ref_var = numpy_moments(reference)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-6)
        np.testing.assert_allclose(var, ref_var, rtol=1e-4)
        assert np.all(ref_var > 2 * VARIANCES)  # the between-batch term is most of it
        assert mean.dtype == var.dtype == np.float32
    assert len(population_moments(NumpyForward(), x, 7, 1)) == 1 and population_moments(NumpyForward(), x, 7, 0) == []


def test_population_moments_of_a_real_model_on_uneven_batches_match_numpy():
    """BN → 2×2 max-pool → BN: the second layer's input is the first layer's training-mode output,
    normalised per batch (ε = 1e-3), so numpy can rebuild it batch by batch, short batch included."""
    import keras

    from bnviz.tf.probe import StatelessForward, population_moments, tap_model

    x = uneven(size=6)
    inputs = keras.Input(x.shape[1:])
    hidden = keras.layers.BatchNormalization(name="norm2")(keras.layers.MaxPooling2D(2)(keras.layers.BatchNormalization(name="norm1")(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(hidden)))
    pooled = []
    for start in range(0, len(x), 7):
        batch = x[start : start + 7].astype(np.float64)
        mean, var = batch.mean(axis=(0, 1, 2)), batch.var(axis=(0, 1, 2))
        normed = (batch - mean) / np.sqrt(var + 1e-3)
        pooled.append(normed.reshape(len(batch), 3, 2, 3, 2, -1).max(axis=(2, 4)))
    forward = StatelessForward(tap_model(model)[0])
    assert [n for _, _, n in forward.input_moments(x[:7])] == [7 * 6 * 6, 7 * 3 * 3]  # one (mean, var, elements) per BN layer
    moments = population_moments(forward, x, 7, 2)
    for (mean, var), reference in zip(moments, (x, np.concatenate(pooled)), strict=True):
        ref_mean, ref_var = numpy_moments(reference)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, ref_var, rtol=5e-4)  # float32 batch means near 0.5 are quantised to 6e-8: 1e-4 of a 1e-6 variance


@pytest.mark.slow
def test_precisebn_assigns_the_numpy_moments_of_the_images_it_drew(tmp_path):
    """`recalibrate` over all 1,200 images at batch 32 ends on a short batch of 16, over 5 batches it
    draws 160 of them by the run's seed; either way norm1's new moving statistics must be the moments
    of conv1's ReLU output over exactly the images drawn."""
    import keras

    from bnviz.data import load_dataset
    from bnviz.store import Store
    from bnviz.tf.models import load_model_safely
    from bnviz.tf.recalibrate import recalibrate
    from bnviz.tf.train import execute_run

    store = Store(tmp_path)
    config = preset_config("bn", input_size=TINY, epochs=1, seed=1, probe=ProbeConfig(enabled=False))
    run_id = store.create_run(config, status="running")
    execute_run(store, run_id)
    data = load_dataset(config.dataset, TINY, config.seed)
    order = np.random.default_rng(config.seed + 2).permutation(len(data.x_train))
    for batches, drawn in ((50, order), (5, order[:160])):
        said = []
        result = recalibrate(store, run_id, batches=batches, progress=said.append)
        stored = store.evaluations(run_id)
        assert result == {"before": stored["final"], "after": stored["precisebn"]} and stored["precisebn"].accuracy["test"] > 0.5
        assert (stored["precisebn"].batches, stored["precisebn"].samples) == (-(-len(drawn) // 32), len(drawn))
        assert said == [f"averaging BN statistics over {-(-len(drawn) // 32)} train batches"] and stored["precisebn"].calibrated_on == "train"
        model = load_model_safely(store.models_dir / f"{run_id}-precisebn.keras")
        ref_mean, ref_var = numpy_moments(keras.Model(model.inputs, model.get_layer("conv1").output).predict(data.x_train[drawn], verbose=0))
        norm1 = model.get_layer("norm1")
        np.testing.assert_allclose(norm1.moving_mean.numpy(), ref_mean, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(norm1.moving_variance.numpy(), ref_var, rtol=1e-4)
    assert len(order) % 32 == 16


def test_precisebn_refuses_what_it_cannot_recalibrate(tmp_path):
    import keras

    from bnviz.config import ConfigError
    from bnviz.store import Store, StoreError
    from bnviz.tf.recalibrate import recalibrate

    store = Store(tmp_path)
    queued, no_model, no_bn = (store.create_run(preset_config("bn")) for _ in range(3))
    with pytest.raises(ConfigError, match=r"^batches must be >= 1\. Received: batches=0$"):
        recalibrate(store, queued, batches=0)
    with pytest.raises(StoreError, match=rf"^Run {queued} has no finished model to recalibrate \(status: queued\)\.$"):
        recalibrate(store, queued, batches=1)  # one batch is enough to be let through
    store.finish(no_model, "done")
    with pytest.raises(StoreError, match=r"\(status: done\)"):
        recalibrate(store, no_model)
    path = tmp_path / "dense.keras"
    keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]).save(path)
    store.finish(no_bn, "done", model_path=str(path))
    with pytest.raises(StoreError, match=rf"^Run {no_bn}'s model has no BatchNormalization layer: nothing to recalibrate\.$"):
        recalibrate(store, no_bn)


def keras_update(before: np.ndarray, batch: np.ndarray, momentum: float) -> np.ndarray:
    """Keras's moving-average update as it runs: float32 operands and float32 rounding of each op."""
    return np.float32(momentum) * before + batch * np.float32(1.0 - momentum)


@pytest.mark.parametrize("momentum", [0.5, 0.9, 0.99, 0.999])
def test_recovered_statistic_is_within_its_bound_and_the_bound_is_tight(momentum):
    rng = np.random.default_rng(1)
    before = (10 ** rng.uniform(-8, 1, 100_000) * rng.choice([-1, 1], 100_000)).astype(np.float32)
    batch = (10 ** rng.uniform(-8, 1, 100_000)).astype(np.float32)
    after = keras_update(before, batch, momentum)
    recovered = batch_stats_from_update(before, after, momentum)
    assert recovered.dtype == recovery_error_bound(before, after, recovered, momentum).dtype == np.float32
    ratio = np.abs(recovered.astype(np.float64) - batch) / recovery_error_bound(before, after, recovered, momentum)
    assert ratio.max() <= 1.0 and ratio.max() > (0.6 if momentum == 0.5 else 0.9)  # ·0.5 is exact: one rounding fewer


def test_recovery_uses_the_float32_momentum_keras_multiplies_by():
    """float32(0.99) ≠ 0.99: inverting with the exact decimal would be off by 1e-6·before/(1 − m)."""
    before, batch = np.full(4, 1.0, np.float32), np.full(4, 1e-3, np.float32)
    recovered = batch_stats_from_update(before, keras_update(before, batch, 0.99), 0.99)
    np.testing.assert_allclose(recovered, batch, rtol=2e-3)


def test_variances_below_the_update_resolution_are_withheld_and_the_rest_kept():
    before = np.ones(6, np.float32)
    variance = VARIANCES.astype(np.float32)
    zeros = np.zeros(6, np.float32)
    mean, var = recover_batch_moments((zeros, before), (zeros, keras_update(before, variance, 0.99)), 0.99)
    bound = recovery_error_bound(before, keras_update(before, variance, 0.99), variance, 0.99)
    withheld = bound > RECOVERY_TOLERANCE * variance
    assert withheld.tolist() == [True, True, True, True, False, False]  # a resolution of ≈ 6e-6 at m = 0.99
    assert np.all(np.isnan(var[withheld])) and np.all(np.abs(var[~withheld] / variance[~withheld] - 1) < RECOVERY_TOLERANCE)
    assert np.array_equal(mean, zeros) and mean.dtype == var.dtype == np.float32


def test_at_momentum_one_nothing_is_recovered():
    """m = 1: the update carries no batch information (1 − m = 0), whatever the arrays hold; float32 out
    whatever comes in."""
    before, after = np.ones((2, 3)), np.full((2, 3), 2.0)
    recovered = batch_stats_from_update(before, after, 1.0)
    bound = recovery_error_bound(before, after, recovered, 1.0)
    assert recovered.shape == bound.shape == (2, 3) and recovered.dtype == bound.dtype == np.float32
    assert np.all(np.isnan(recovered)) and np.all(np.isposinf(bound))
    assert all(np.all(np.isnan(v)) for v in recover_batch_moments((before, before), (after, after), 1.0))


def fit_recording_true_batch_moments(data, momentum: float) -> tuple[list, dict[int, list]]:
    """One epoch in order (shuffle=False, batch 16): step s trains on x[16(s−1):16s]. Before each
    step, the BN inputs' float64 moments on that batch with the weights the step starts from."""
    import keras
    import tensorflow as tf

    from bnviz.tf.models import compile_model
    from bnviz.tf.probe import BNProbe, StatelessForward, tap_model

    class TrueMoments(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.forward = StatelessForward(tap_model(self.model)[0])  # shares the model's variables, assigns none

        def on_train_batch_begin(self, batch, logs=None):
            outputs = self.forward(data.x_train[16 * batch : 16 * (batch + 1)], training=True)
            truth[batch + 1] = [numpy_moments(v) for v in outputs[1 : 1 + self.forward.n_layers]]

    tf.config.experimental.enable_op_determinism()
    config = preset_config("bn", input_size=TINY, batch_size=16).with_momentum(momentum)
    keras.utils.set_random_seed(3)
    model = compile_model(config, data.channels, data.num_classes)
    records, truth = [], {}
    probe_config = ProbeConfig(every=1, probe_batch=16, population_samples=16, budget=0.0)
    probe = BNProbe(probe_config, (data.x_val[:16], data.y_val[:16]), data.x_train[:16], 16, records.append)
    model.fit(data.x_train, data.y_train, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[TrueMoments(), probe])
    return records, truth


@pytest.mark.slow
@pytest.mark.parametrize("momentum", [0.5, 0.9, 0.99, 0.999])
def test_recovered_batch_moments_are_the_trained_batch_moments(tiny_data, momentum):
    """Every recovered mean is within its rounding bound of the true batch mean; every variance kept
    is within 1 % of the true batch variance, and one is withheld only when its bound says so."""
    records, truth = fit_recording_true_batch_moments(tiny_data, momentum)
    pairs = list(zip(records, records[1:], strict=False))
    assert [b.step for _, b in pairs] == sorted(truth) == list(range(1, len(tiny_data.x_train) // 16 + 1))
    kept = 0
    for before, after in pairs:
        for lb, la, (true_mean, true_var) in zip(before.layers, after.layers, truth[after.step], strict=True):
            slack = 1e-4 * (np.abs(true_mean) + np.sqrt(true_var))  # Keras's float32 batch moments vs float64
            mean_bound = recovery_error_bound(lb.moving_mean, la.moving_mean, la.batch_mean, momentum)
            assert np.all(np.abs(la.batch_mean - true_mean) <= mean_bound + slack), (after.step, la.layer)
            var_bound = recovery_error_bound(lb.moving_var, la.moving_var, true_var.astype(np.float32), momentum)
            good = ~np.isnan(la.batch_var)
            np.testing.assert_allclose(la.batch_var[good], true_var[good], rtol=RECOVERY_TOLERANCE * 1.05, err_msg=f"step {after.step} {la.layer}")
            assert np.all(var_bound[~good] > RECOVERY_TOLERANCE * true_var[~good] * 0.9), (after.step, la.layer)
            kept += good.sum()
    assert kept > 0
