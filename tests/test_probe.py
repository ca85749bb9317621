"""The probe records the right numbers and never changes training."""

from __future__ import annotations

import numpy as np
import pytest

from bnviz.config import ProbeConfig
from bnviz.presets import preset_config
from tests.conftest import TINY


def _fit(
    data, probe: bool, epochs: int = 2, momentum: float = 0.9, budget: float = 0.03, keep_going=lambda: True, population_every: int = 4, extra_callbacks=()
):
    import keras
    import tensorflow as tf

    from bnviz.tf.models import compile_model
    from bnviz.tf.probe import BNProbe

    tf.config.experimental.enable_op_determinism()
    probe_config = ProbeConfig(every=2, probe_batch=16, population_samples=32, budget=budget, population_every=population_every)
    config = preset_config("bn", input_size=TINY, batch_size=16, probe=probe_config).with_momentum(momentum)
    keras.utils.set_random_seed(7)
    model = compile_model(config, data.channels, data.num_classes)
    records = []
    callbacks = [BNProbe(config.probe, (data.x_val[:16], data.y_val[:16]), data.x_train[:32], 16, records.append, keep_going)] if probe else []
    model.fit(data.x_train, data.y_train, batch_size=16, epochs=epochs, verbose=0, shuffle=True, callbacks=[*callbacks, *extra_callbacks])
    model.probe = callbacks[0] if probe else None
    return model, records


@pytest.fixture(scope="module")
def probed(tiny_data):
    return _fit(tiny_data, probe=True, budget=0.0)


@pytest.fixture(scope="module")
def probed_live(tiny_data):
    return _fit(tiny_data, probe=True, budget=100.0)


@pytest.fixture(scope="module")
def plain(tiny_data):
    return _fit(tiny_data, probe=False)[0]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["probed", "probed_live"])
def test_probe_does_not_change_training(plain, fixture, request):
    """Neither snapshots (budget 0) nor records made inside the training loop (budget 100) change
    a single weight of the same seeded fit."""
    model, records = request.getfixturevalue(fixture)
    assert len(records) > 3
    for a, b in zip(plain.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_records_made_after_training_equal_records_made_live(probed, probed_live):
    """Budget 0 defers every record to the end of training, budget 100 makes each at its step:
    the snapshots must hold exactly the state the live records saw."""
    deferred_model, deferred = probed
    live_model, live = probed_live
    assert deferred_model.probe.live_records == 0 and live_model.probe.live_records == len(live) > 3
    assert [r.step for r in deferred] == [r.step for r in live]
    for a, b in zip(deferred, live, strict=True):
        assert (a.epoch, a.acc_inference, a.acc_train_mode) == (b.epoch, b.acc_inference, b.acc_train_mode)
        for la, lb in zip(a.layers, b.layers, strict=True):
            for field in ("moving_mean", "moving_var", "batch_mean", "batch_var", "pop_mean", "pop_var", "hist_edges", "hist_train", "hist_infer"):
                np.testing.assert_allclose(getattr(la, field), getattr(lb, field), rtol=1e-5, atol=1e-6, err_msg=f"step {a.step} {la.layer} {field}")


@pytest.mark.slow
def test_default_budget_paces_records_live_over_the_run(tiny_data, probed):
    """Budget 3 %: after a share f of the steps a share f of the records is made, so all but the last
    step's are made while training runs, and they equal the deferred ones."""
    model, records = _fit(tiny_data, probe=True, budget=0.03)
    assert model.probe.live_records >= len(records) - 1 > 3 and model.probe.made == len(records)
    for a, b in zip(probed[1], records, strict=True):
        assert a.step == b.step and a.acc_inference == b.acc_inference
        np.testing.assert_allclose(a.layers[1].pop_var, b.layers[1].pop_var, rtol=1e-5)
        np.testing.assert_array_equal(a.layers[2].hist_infer, b.layers[2].hist_infer)


def test_histograms_from_outputs_thinned_in_the_graph_equal_those_of_the_whole_outputs(tiny_data, probed):
    """`StatelessForward.probe` strides each BN output inside the graph as `shared_histograms` would:
    the histograms and probabilities are those of the full outputs (cap lowered so thinning happens)."""
    from bnviz.stats import shared_histograms
    from bnviz.tf.probe import StatelessForward, tap_model

    model, _ = probed
    x = tiny_data.x_val[:16]
    forward = StatelessForward(tap_model(model)[0])
    full = forward(x, training=True)
    forward.histogram_values = 500  # read when the pass is traced, at its first call
    probs, thinned = forward.probe(x, training=True)
    np.testing.assert_allclose(probs, full[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(forward.probabilities(x, training=True), full[0], rtol=1e-5, atol=1e-7)
    for i, values in enumerate(thinned):
        whole = full[4 + i]
        assert values.size < 1000 < whole.size
        expected = shared_histograms(whole, whole, 40, max_values=500)
        for a, b in zip(shared_histograms(values, values, 40, max_values=500), expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 16, 30, 97, 210, 2310])
def test_the_stride_found_in_the_graph_is_the_one_numpy_thins_with(channels):
    """One pass serves every batch size, so the stride is computed from the tensor's size inside the
    graph; it must keep exactly the values `shared_histograms` keeps (channel counts with many prime
    factors included: 2310 = 2·3·5·7·11)."""
    import tensorflow as tf

    from bnviz.stats import _thin
    from bnviz.tf.probe import _thin_in_graph

    for rows in (1, 7, 333, 5000):
        values = np.arange(rows * channels, dtype=np.float32).reshape(rows, channels)
        for cap in (10, 1000, 50_000):
            np.testing.assert_array_equal(_thin_in_graph(tf.constant(values), cap).numpy(), _thin(values, cap), err_msg=f"{rows}×{channels}, cap {cap}")


TRAINING_POPULATION = ("pop_mean", "pop_var", "iid_mean_sd")


def _measured(records, field: str = "pop_var") -> list[int]:
    return [i for i, r in enumerate(records) if np.isfinite(getattr(r.layers[0], field)).all()]


@pytest.mark.slow
def test_the_population_is_measured_at_every_fourth_record_and_the_last(tiny_data, probed, probed_live):
    """population_every 4 (the default): records 0, 4, 8 … and the last run the population sample
    forward in training mode, the last one in inference mode too; those between carry NaN there, and
    the very numbers a run measuring it at every record stores everywhere else (moving and batch
    statistics, histograms, accuracies, the last record's inference-mode population)."""
    _, every = _fit(tiny_data, probe=True, budget=0.0, population_every=1)
    assert len(_measured(every)) == len(every) > 6
    for _, records in (probed, probed_live):
        assert _measured(records) == sorted({*range(0, len(records), 4), len(records) - 1})
        assert _measured(records, "infer_var") == _measured(every, "infer_var") == [len(records) - 1]
        for i, (light, full) in enumerate(zip(records, every, strict=True)):
            assert (light.step, light.acc_train_mode, light.acc_inference) == (full.step, full.acc_train_mode, full.acc_inference)
            for a, b in zip(light.layers, full.layers, strict=True):
                for field in (
                    "moving_mean",
                    "moving_var",
                    "batch_mean",
                    "batch_var",
                    "hist_train",
                    "hist_infer",
                    "infer_mean",
                    "infer_var",
                    *TRAINING_POPULATION,
                ):
                    skipped = field in TRAINING_POPULATION and i not in _measured(records)
                    expected = np.full_like(getattr(b, field), np.nan) if skipped else getattr(b, field)
                    np.testing.assert_allclose(getattr(a, field), expected, rtol=1e-5, atol=1e-6, err_msg=f"step {light.step} {a.layer} {field}")


@pytest.mark.slow
def test_a_run_stopped_early_still_ends_on_a_record_that_measured_the_population(tiny_data):
    """Training stopped by another callback after step 5 (between scheduled steps): the newest snapshot
    waited for the end of training, so the run's last record (step 4, a light one by the count) is the
    one that measures the population the diagnosis reads."""
    import keras

    class StopAfterFive(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.stop_training = batch == 4

    model, records = _fit(tiny_data, probe=True, epochs=1, budget=100.0, extra_callbacks=[StopAfterFive()])
    assert [r.step for r in records] == [0, 2, 4] and model.probe.live_records == 2
    assert _measured(records) == [0, 2]


def test_the_runs_end_reuses_the_probes_passes_holding_the_trained_weights(tiny_data, probed):
    from bnviz.tf.probe import StatelessForward, tap_model

    model, _ = probed
    shared, fresh = model.probe.forward_for(model), StatelessForward(tap_model(model)[0])
    x = tiny_data.x_val[:16]
    for training in (True, False):
        np.testing.assert_allclose(shared.probabilities(x, training), fresh.probabilities(x, training), rtol=1e-6, atol=1e-7)
        for (m1, v1, n1), (m2, v2, n2) in zip(shared.input_moments(x, training), fresh.input_moments(x, training), strict=True):
            assert n1 == n2
            np.testing.assert_allclose(m1, m2, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(v1, v2, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_cancelled_run_skips_the_records_left_for_the_end(tiny_data):
    _, records = _fit(tiny_data, probe=True, epochs=1, budget=0.0, keep_going=lambda: False)
    assert records == []


@pytest.mark.slow
def test_snapshots_beyond_the_memory_cap_are_made_at_once(tiny_data, monkeypatch):
    import bnviz.tf.probe

    monkeypatch.setattr(bnviz.tf.probe, "MAX_PENDING_BYTES", 1)  # every snapshot is over it
    model, records = _fit(tiny_data, probe=True, epochs=1, budget=0.0)
    assert model.probe.live_records == len(records) > 2 and model.probe.pending_bytes == 0


def test_probe_records_schedule_and_shapes(tiny_data, probed):
    model, records = probed
    steps_per_epoch = -(-len(tiny_data.x_train) // 16)
    steps = [r.step for r in records]
    assert steps[0] == 0 and steps[-1] == 2 * steps_per_epoch
    assert steps_per_epoch in steps and all(s % 2 == 0 or s == steps_per_epoch for s in steps[1:])
    layer = records[-1].layers[0]
    assert [lay.layer for lay in records[-1].layers] == ["norm1", "norm2", "norm3"]
    assert layer.moving_mean.shape == (16,) and layer.hist_edges.shape == (41,) and layer.hist_train.shape == (40,)
    assert layer.hist_train.sum() == layer.hist_infer.sum() > 0
    assert np.all(np.isnan(records[0].layers[0].batch_mean))  # step 0: no batch seen yet


def test_last_record_matches_model_moving_statistics(probed):
    model, records = probed
    norm1 = model.get_layer("norm1")
    np.testing.assert_allclose(records[-1].layers[0].moving_mean, norm1.moving_mean.numpy())
    np.testing.assert_allclose(records[-1].layers[0].moving_var, norm1.moving_variance.numpy())


def test_a_population_sample_of_a_quarter_sits_well_within_the_diagnosis_threshold(tiny_data, probed):
    """The default population sample shrank from 256 to 128 images (python -m bench measures the
    error at 64 px). Here a quarter of the tiny training set against all of it: every channel's mean
    within 0.25 SD (the smallest gap the diagnosis reports), and the error bars a record carries
    (iid_mean_sd/√batches) of the right size: the median channel's error within 1.5 of its bars
    (0.67 for an exact normal standard error; four batch means make the bars rough)."""
    from bnviz.tf.probe import StatelessForward, batch_mean_spread, batch_moments, pooled_moments, tap_model

    model, _ = probed
    forward = StatelessForward(tap_model(model)[0])
    x = tiny_data.x_train[np.random.default_rng(1).permutation(len(tiny_data.x_train))]
    whole = [pooled_moments(layer) for layer in batch_moments(forward, x, 8, 3)]
    for sample, (mean, var) in zip(batch_moments(forward, x[: len(x) // 4], 8, 3), whole, strict=True):
        error = np.abs(pooled_moments(sample)[0] - mean) / np.sqrt(var)
        bar = batch_mean_spread(sample) / np.sqrt(len(sample)) / np.sqrt(var)
        assert error.max() < 0.25 and np.median(error / bar) < 1.5, (error.max(), np.median(error / bar))


def test_population_statistics_match_numpy(tiny_data, probed):
    """Layer 1's input is conv1's ReLU output: no BN upstream, so numpy can check it exactly."""
    import keras

    from bnviz.tf.probe import StatelessForward, population_moments, tap_model

    model, _ = probed
    x = tiny_data.x_train[:32]
    conv = keras.Model(model.inputs, model.get_layer("conv1").output)
    values = conv.predict(x, verbose=0).reshape(-1, 16).astype(np.float64)
    mean, var = population_moments(StatelessForward(tap_model(model)[0]), x, 16, 3)[0]
    np.testing.assert_allclose(mean, values.mean(axis=0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(var, values.var(axis=0), rtol=1e-3, atol=1e-3)


def test_population_statistics_of_deeper_layers_match_numpy(tiny_data, probed):
    """Deeper layers have smaller feature maps: each layer's moments must use its own count."""
    from bnviz.tf.probe import StatelessForward, population_moments, tap_model

    model, _ = probed
    x = tiny_data.x_train[:16]
    forward = StatelessForward(tap_model(model)[0])
    inputs = forward(x, training=True)[1:4]
    moments = population_moments(forward, x, 16, 3)
    for values, (mean, var) in zip(inputs, moments, strict=False):
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var, flat.var(axis=0), rtol=1e-3, atol=1e-5)


def test_inference_histogram_uses_moving_statistics(tiny_data, probed):
    """Probe accuracies in inference mode equal model.evaluate on the probe batch."""
    from bnviz.tf.probe import BNProbe

    model, _ = probed
    x, y = tiny_data.x_val[:16], tiny_data.y_val[:16]
    records = []
    probe = BNProbe(ProbeConfig(), (x, y), tiny_data.x_train[:16], 16, records.append)
    probe.set_model(model)
    probe.params = {"steps": 1, "epochs": 1}
    probe.on_train_begin()  # snapshots step 0
    probe.on_train_end()  # makes its record
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert records[0].acc_inference == pytest.approx(accuracy)
