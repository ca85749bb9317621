"""BNProbe: a Keras callback that records what every BatchNormalization layer does, without
changing training.

At each scheduled step (see `bnviz.stats.probe_steps`) it records, per BN layer and channel:
- the moving mean/variance (what inference normalises with);
- the BN input's mean/variance on the training batch of that step, recovered from the
  moving-average update: batch = (after − m·before)/(1 − m) (biased variance, as Keras uses).
  Not exact: Keras rounds the update to float32, so the recovered value is off by up to
  `bnviz.stats.recovery_error_bound`, about ulp(moving)/(1 − m) (≈ 1e-5 for a moving variance
  near 1 at m = 0.99, ≈ 1e-4 at m = 0.999). A variance whose bound exceeds 1 % of it is stored
  as NaN (below the resolution of the update, not a missing step); the mean is kept, within its bound;
- the population mean/variance of the BN input over a fixed training sample, with the weights the
  step's batch was normalised with (before the step's update), PreciseBN style
  (upstream BN layers use batch statistics, as in training; per-batch moments reduced in the
  graph, combined in float64);
- the same sample's mean/variance of the BN input with the whole network in inference mode (what
  inference really feeds the layer, upstream errors included), and the spread of the input's mean
  between i.i.d. batches of the training batch size (its sampling noise);
- histograms, on shared edges, of the BN output on a fixed validation probe batch in training
  mode (batch statistics) and inference mode (moving statistics), and the probe batch's
  accuracy/loss in both modes.

The training-mode population and the spread are measured at every `population_every`-th record
and the run's last, the inference-mode population at the last only (the diagnosis reads it there);
the records between carry NaN in those fields (`LayerTrace.measured` selects the others), since the
population sample is three quarters of a record's work.

What it costs: inside the training loop, a snapshot per scheduled step (a copy of the weights,
about a millisecond). Making a record runs 2 × the probe batch forward, plus
2 × the population sample where it measures the population (`ProbeConfig.probe_images`); records are made in the loop, paced
evenly over the steps (see `BNProbe`), the last once training ends. Memory is bounded at any
input size: population moments are reduced inside the graph one batch at a time, and only the
class probabilities and about `histogram_values(layers)` values per BN output (20,000 up to 3 layers, 60,000
over all layers beyond) leave the graph.

Why it does not perturb training: records are made on a private copy of the model holding the
snapshot's weights, through `stateless_call` (in Keras 3 `model(x, training=True)` assigns new
moving statistics; `stateless_call` returns the would-be updates without assigning them), on a
tap model that skips Dropout (so train mode differs from inference mode only in the BN statistics).
A model Keras cannot clone or inline (a subclassed model, BN inside a custom layer) runs as written
on a `ShadowCopy` of its weights, its BN layers reporting their inputs while the probe's own passes
are traced (`InstrumentedTap`); several inputs travel together as one `MultiInput`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from bnviz.config import MIN_SPREAD_BATCHES, ProbeConfig
from bnviz.records import ProbeLayer, ProbeRecord
from bnviz.scoring import CLASSES, Task, scores
from bnviz.stats import histogram_values, measures_population, probe_steps, recover_batch_moments, shared_histograms, thinning_stride
from bnviz.tf.keras_internals import all_layers, has_graph, run_through_graph
from bnviz.tf.models import NOISE_LAYERS, batch_norm_layers, uncompiled_clone, updates_per_step, values_per_image  # NOISE_LAYERS: the tap skips them

CLASS_TASK = Task(CLASSES)
MAX_PENDING_BYTES = 256 * 2**20  # snapshots waiting beyond this are made at once, over budget, to bound memory


@dataclass(frozen=True)
class MultiInput:
    """The inputs of a model with several, sliced together: `len()` counts samples and `[index]`
    takes the same samples of every array, so code written for one input array serves both."""

    arrays: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index) -> MultiInput:
        return MultiInput(tuple(a[index] for a in self.arrays))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    @property
    def first(self) -> np.ndarray:
        return self.arrays[0]


def model_input(x: np.ndarray | MultiInput) -> np.ndarray | list[np.ndarray]:
    """What the model takes: the array, or the list of arrays of a `MultiInput`."""
    return list(x.arrays) if isinstance(x, MultiInput) else x


def first_input(x: np.ndarray | MultiInput) -> np.ndarray:
    """The array of the first input (the one the pixel shift is measured on)."""
    return x.first if isinstance(x, MultiInput) else x


class Unfollowable(ValueError):
    """A model the probe cannot tap (several inputs, no traceable graph); the message says why."""


def tap_model(model: keras.Model) -> tuple[keras.Model, list[layers.BatchNormalization]]:
    """A model sharing `model`'s layers (minus Dropout and noise layers) whose outputs are the class
    probabilities, then every BN layer's input, then every BN layer's output, in the order of
    `batch_norm_layers(model)`. Sequential, Functional and nested models are inlined into one graph;
    each BN input and output has its BN axis moved last, so per-channel moments reduce over every
    axis but the last whatever the layer's `axis`. Raises `Unfollowable` for models it cannot trace."""
    bn_layers = batch_norm_layers(model)
    _check_followable(model)
    taps: dict[int, tuple] = {}
    inputs = [keras.Input(batch_shape=i.shape, dtype=i.dtype) for i in model.inputs]
    output = _inline(model, inputs if len(inputs) > 1 else inputs[0], taps)
    missing = [layer.name for layer in bn_layers if id(layer) not in taps]
    if missing:
        raise Unfollowable(f"BatchNormalization layer(s) {', '.join(missing)} sit inside a custom layer whose graph cannot be traced.")
    bn_in = [_channels_last(taps[id(layer)][0], layer.axis) for layer in bn_layers]
    bn_out = [_channels_last(taps[id(layer)][1], layer.axis) for layer in bn_layers]
    return keras.Model(inputs, [output, *bn_in, *bn_out]), bn_layers


POPULATION_VALUES = 800  # values per channel for a population variance within 5 % (relative standard error √(2/n))
MAX_POPULATION_SAMPLES = 2048


def population_size(model: keras.Model, configured: int) -> int:
    """Images for the population statistics: `configured`, or more where a BN layer sees few values per
    image and channel (BN after Dense: one, so 128 images leave its variance ~12 % off), up to
    `MAX_POPULATION_SAMPLES`. Conv layers see H·W values per image and need no more."""
    per_image = [v for v in map(values_per_image, batch_norm_layers(model)) if v]
    needed = math.ceil(POPULATION_VALUES / min(per_image)) if per_image else configured
    return max(configured, min(MAX_POPULATION_SAMPLES, needed))


def _check_followable(model: keras.Model, where: str = "") -> None:
    """Raise `Unfollowable` unless `model` is a built Sequential or Functional model (nested ones with one input)."""
    if not (isinstance(model, keras.Sequential) or has_graph(model)):
        raise Unfollowable(f"{where}{type(model).__name__} is a subclassed model without a traceable graph (build it with the Functional or Sequential API).")
    count = len(getattr(model, "inputs", None) or [])
    if count == 0 or (where and count != 1):
        raise Unfollowable(f"{where}the model has {count} inputs; nested models are followed with one input.")


def _inline(model: keras.Model, x, taps: dict[int, tuple]):
    """Call `model`'s layers on `x` one by one (nested models recursively), skipping noise layers
    and noting each BN layer's first input and output in `taps` (by layer identity)."""

    def call(layer, *args, **kwargs):
        if isinstance(layer, NOISE_LAYERS):
            return args[0]
        if isinstance(layer, keras.Model):
            _check_followable(layer, f"nested model {layer.name}: ")
            return _inline(layer, args[0], taps)
        if isinstance(layer, layers.TimeDistributed) and batch_norm_layers(layer):
            return _time_distributed(layer, args[0], call)
        out = layer(*args, **kwargs)
        if isinstance(layer, layers.BatchNormalization):
            taps.setdefault(id(layer), (args[0], out))
        return out

    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = call(layer, x)
        return x
    return run_through_graph(model, x, call)


def _time_distributed(wrapper: layers.TimeDistributed, x, call):
    """TimeDistributed as it computes: its layer on the batch and time axes folded into one, so a
    BN layer inside it is tapped like any other (its statistics span both axes, as in training)."""
    if x.shape[1] is None or None in x.shape[2:]:
        raise Unfollowable(f"{wrapper.name}: a TimeDistributed layer over a sequence of unknown length cannot be traced.")
    out = call(wrapper.layer, keras.ops.reshape(x, (-1, *x.shape[2:])))
    return keras.ops.reshape(out, (-1, x.shape[1], *out.shape[1:]))


def _channels_last(x, axis: int):
    """`x` with the BN axis moved last (a no-op for the usual channels-last layers)."""
    axis = axis % len(x.shape)
    return x if axis == len(x.shape) - 1 else keras.ops.moveaxis(x, axis, -1)


def _compiled(fn: Callable, signature: list[tf.TensorSpec] | None = None) -> Callable:
    """`fn` as a TensorFlow graph function without AutoGraph: the passes have no tensor-dependent
    control flow, and converting Keras' call stack made the first trace ~5× slower (0.37 s vs 0.07 s)."""
    return tf.function(fn, input_signature=signature, reduce_retracing=signature is None, autograph=False)


def _coprime_offsets(channels: int) -> list[int]:
    """For each residue r mod `channels`, what `thinning_stride` adds to a base b ≡ r to reach a
    stride coprime to `channels` (gcd(b, C) depends on b mod C only, so C + r stands for every b)."""
    return [thinning_stride(channels + r, channels, 1) - channels - r for r in range(channels)]


def _thin_in_graph(values: tf.Tensor, max_values: int) -> tf.Tensor:
    """`bnviz.stats._thin` inside the graph, for any batch size: every step-th value of the flattened
    tensor, the step being the smallest at least size // max_values that is coprime to the channel
    count (`thinning_stride`), looked up in a table built while tracing (4 ops, whatever the count)."""
    flat = tf.reshape(values, [-1])
    channels = int(values.shape[-1])
    base = tf.maximum(tf.size(flat, out_type=tf.int64) // max_values, 1)
    return flat[:: base + tf.gather(tf.constant(_coprime_offsets(channels), tf.int64), base % channels)]


Moments = list[tuple[tf.Tensor, tf.Tensor, tf.Tensor]]  # per BN layer: per-channel mean, variance, element count


class StatelessForward:
    """Compiled forward passes through a tap model that never assign to any variable. One pass per
    BN mode, traced once for any batch size, serves the probe batch, the population sample, the
    evaluation and the evidence: it returns the class probabilities, each BN input's moments and
    each BN output thinned for its histogram; a caller copies out only what it reads."""

    def __init__(self, tap: keras.Model | InstrumentedTap, bn_layers: list[layers.BatchNormalization] | tuple = (), holder: ShadowCopy | None = None):
        self.tap, self.bn_layers, self.holder = tap, list(bn_layers), holder
        self.n_layers = len(self.bn_layers) or (len(tap.outputs) - 1) // 2  # outputs: probabilities, BN inputs, BN outputs
        self.histogram_values = histogram_values(self.n_layers)
        specs = tuple(tf.TensorSpec([None, *i.shape[1:]], i.dtype) for i in tap.inputs)
        self.spec = (specs if len(specs) > 1 else specs[0]) if specs else None  # None: traced per input shape
        self._train = _compiled(lambda x: self._call(x, True))
        self._infer = _compiled(lambda x: self._call(x, False))
        self._pass = {mode: _compiled(lambda x, mode=mode: self._record_pass(x, mode), [self.spec] if self.spec else None) for mode in (True, False)}

    @classmethod
    def of(cls, model: keras.Model) -> StatelessForward:
        """The passes over `model`'s own variables: through its tap model, knowing its BN layers (in the
        tap's output order), or, for a model whose graph cannot be tapped, through its BN layers reporting."""
        try:
            return cls(*tap_model(model))
        except Unfollowable:
            return cls(InstrumentedTap(model, model), batch_norm_layers(model))

    def _variable(self, variable: keras.Variable) -> keras.Variable:
        """Where the passes read `variable` from: the shadow copy's own, else the variable itself."""
        return self.holder.of(variable) if self.holder else variable

    def moving(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """BN layer `i`'s moving mean and variance as the passes use them."""
        layer = self.bn_layers[i]
        return self._variable(layer.moving_mean).numpy(), self._variable(layer.moving_variance).numpy()

    def assign_moving(self, i: int, mean: np.ndarray, variance: np.ndarray) -> None:
        layer = self.bn_layers[i]
        self._variable(layer.moving_mean).assign(mean)
        self._variable(layer.moving_variance).assign(variance)

    def _call(self, x: tf.Tensor, training: bool) -> list[tf.Tensor]:
        trainable = [v.value for v in self.tap.trainable_variables]
        frozen = [v.value for v in self.tap.non_trainable_variables]
        outputs, _ = self.tap.stateless_call(trainable, frozen, x, training=training)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]  # Keras unwraps 1-output models

    def _record_pass(self, x: tf.Tensor, training: bool) -> tuple[tf.Tensor, Moments, list[tf.Tensor]]:
        outputs = self._call(x, training)
        moments = []
        for values in outputs[1 : 1 + self.n_layers]:
            mean, variance = tf.nn.moments(values, axes=list(range(len(values.shape) - 1)))
            moments.append((mean, variance, tf.reduce_prod(tf.shape(values)[:-1])))
        return outputs[0], moments, [_thin_in_graph(o, self.histogram_values) for o in outputs[1 + self.n_layers :]]

    def warm_up(self, x: np.ndarray) -> None:
        """Trace and instantiate both passes on `x` (one image will do: they take any batch size)."""
        for training in (True, False):
            self._run(x, training)

    def _run(self, x: np.ndarray | MultiInput, training: bool) -> tuple[tf.Tensor, Moments, list[tf.Tensor]]:
        return self._pass[training](self._tensors(x))

    def _tensors(self, x: np.ndarray | MultiInput):
        """`x` as the passes take it: a tensor (a tuple of them for several inputs) in the inputs' dtypes."""
        if isinstance(x, MultiInput):
            return tuple(tf.cast(tf.convert_to_tensor(a), s.dtype) for a, s in zip(x.arrays, self.spec, strict=True))
        x = tf.convert_to_tensor(x)
        return tf.cast(x, self.spec.dtype) if self.spec else x

    def __call__(self, x: np.ndarray, training: bool) -> list[np.ndarray]:
        """Every output of the tap model in full (tests and references; the record reads `probe`)."""
        return [o.numpy() for o in (self._train if training else self._infer)(self._tensors(x))]

    def probabilities(self, x: np.ndarray, training: bool) -> np.ndarray:
        """The class probabilities alone: no activation map leaves the graph (bounded memory at 224²)."""
        return self._run(x, training)[0].numpy()

    def probe(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """The class probabilities and, per BN layer, its output thinned inside the graph to the values
        `shared_histograms` keeps (the same stride, so the same histograms); a probe batch at 224² would
        otherwise copy every BN input and output map out, ~0.2 GB each."""
        probs, _, thinned = self._run(x, training)
        return probs.numpy(), [t.numpy() for t in thinned]

    def input_moments(self, x: np.ndarray, training: bool = True) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per BN layer, the per-channel mean, biased variance and element count of its input on the
        batch `x`, the network's BN layers in training mode (batch statistics) or inference mode
        (moving statistics). Reduced inside the graph in float32, two-pass, as BN computes its own
        batch statistics, so no activation map is copied out."""
        return [(m.numpy(), v.numpy(), int(n)) for m, v, n in self._run(x, training)[1]]


class ShadowCopy:
    """A private copy of a model `clone_model` cannot copy (a subclassed model, a custom layer it
    cannot rebuild): new variables holding the values, which `InstrumentedTap` feeds through the
    model's own layers by `stateless_call`, so the model's variables are never read or written."""

    def __init__(self, model: keras.Model):
        self.model = model
        self._shadow = {id(v): keras.Variable(v.numpy(), dtype=v.dtype, trainable=False, name=f"shadow_{i}") for i, v in enumerate(model.variables)}

    def of(self, variable: keras.Variable) -> keras.Variable:
        return self._shadow[id(variable)]

    @property
    def trainable_variables(self) -> list[keras.Variable]:
        return [self.of(v) for v in self.model.trainable_variables]

    @property
    def non_trainable_variables(self) -> list[keras.Variable]:
        return [self.of(v) for v in self.model.non_trainable_variables]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        for variable, value in zip(self.model.weights, weights, strict=True):
            self.of(variable).assign(value)

    def get_weights(self) -> list[np.ndarray]:
        return [self.of(v).numpy() for v in self.model.weights]


class InstrumentedTap:
    """The tap for a model whose graph cannot be inlined (BN inside a custom layer, a subclassed
    model): the model runs as written, while, for the trace of the probe's own passes only, each BN
    layer reports its input and output and Dropout and noise layers pass their input through. The
    user's training function was traced before and never sees the change."""

    def __init__(self, model: keras.Model, holder: ShadowCopy | keras.Model):
        self.model, self.holder = model, holder
        self.bn_layers = batch_norm_layers(model)
        self.noise = [layer for layer in all_layers(model) if isinstance(layer, NOISE_LAYERS)]
        self.inputs = model_inputs(model)

    @property
    def trainable_variables(self) -> list[keras.Variable]:
        return self.holder.trainable_variables

    @property
    def non_trainable_variables(self) -> list[keras.Variable]:
        return self.holder.non_trainable_variables

    def stateless_call(self, trainable: list, frozen: list, x, training: bool = False) -> tuple[list, None]:
        seen: dict[int, tuple] = {}
        with _reporting(self.bn_layers, seen), _passing_through(self.noise):
            output, _ = self.model.stateless_call(trainable, frozen, x, training=training)
        missing = [layer.name for layer in self.bn_layers if id(layer) not in seen]
        if missing:
            raise Unfollowable(f"BatchNormalization layer(s) {', '.join(missing)} did not run in the model's forward pass.")
        taps = [seen[id(layer)] for layer in self.bn_layers]
        return [
            output,
            *(_channels_last(i, layer.axis) for (i, _), layer in zip(taps, self.bn_layers, strict=True)),
            *(_channels_last(o, layer.axis) for (_, o), layer in zip(taps, self.bn_layers, strict=True)),
        ], None


@contextlib.contextmanager
def _patched_calls(patches: dict) -> Iterator[None]:
    """Give each layer in `patches` (layer -> call) that call for the duration, then its own back."""
    own = {layer: layer.__dict__.get("call") for layer in patches}
    for layer, call in patches.items():
        object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        for layer, call in own.items():
            if call is None:
                layer.__dict__.pop("call", None)
            else:
                object.__setattr__(layer, "call", call)


def _reporting(bn_layers: list[layers.BatchNormalization], seen: dict[int, tuple]):
    """BN layers that note their first input and output in `seen` (by layer identity)."""

    def reporter(layer, call):
        def report(inputs, *args, **kwargs):
            output = call(inputs, *args, **kwargs)
            seen.setdefault(id(layer), (inputs, output))
            return output

        return report

    return _patched_calls({layer: reporter(layer, layer.call) for layer in bn_layers})


def _passing_through(noise: list[layers.Layer]):
    """Dropout and noise layers that return their input (as the graph tap skips them)."""
    return _patched_calls({layer: lambda inputs, *args, **kwargs: inputs for layer in noise})


def model_inputs(model: keras.Model) -> list:
    """The model's symbolic inputs; none for a subclassed model."""
    try:
        return list(model.inputs or [])
    except AttributeError:  # a subclassed model has no symbolic inputs
        return []


def private_copy(model: keras.Model) -> tuple[keras.Model | ShadowCopy, StatelessForward]:
    """A private copy of `model` and the passes over it: a clone and its graph tap where Keras can
    clone and tap the model, else a `ShadowCopy` run through an `InstrumentedTap`."""
    try:
        copy = uncompiled_clone(model)
        return copy, StatelessForward(*tap_model(copy))
    except Exception:  # noqa: BLE001 - any failure to clone or tap: a custom layer, a subclassed model
        shadow = ShadowCopy(model)
        return shadow, StatelessForward(InstrumentedTap(model, shadow), batch_norm_layers(model), shadow)


BatchMoments = list[tuple[np.ndarray, np.ndarray, int]]  # one BN layer's (mean, variance, count) per batch


def batch_moments(forward: StatelessForward, x: np.ndarray, batch_size: int, n_layers: int, training: bool = True) -> list[BatchMoments]:
    """Per BN layer, the moments of its input on each batch of `batch_size` images of `x`."""
    if n_layers == 0:
        return []  # no BN layer: nothing to measure, so no forward pass
    batches = [forward.input_moments(x[start : start + batch_size], training)[:n_layers] for start in range(0, len(x), batch_size)]
    return [list(layer) for layer in zip(*batches, strict=True)]


def pooled_moments(layer: BatchMoments) -> tuple[np.ndarray, np.ndarray]:
    """One layer's per-channel mean and population variance over all its batches, each batch
    weighed by its element count, combined exactly in float64 (law of total variance):
    mean = Σ nᵦ·meanᵦ / N, variance = Σ nᵦ·(varᵦ + (meanᵦ − mean)²) / N."""
    means = np.array([m for m, _, _ in layer], np.float64)
    variances = np.array([v for _, v, _ in layer], np.float64)
    counts = np.array([n for _, _, n in layer], np.float64)[:, None]
    mean = (counts * means).sum(axis=0) / counts.sum()
    variance = (counts * (variances + (means - mean) ** 2)).sum(axis=0) / counts.sum()
    return mean.astype(np.float32), variance.astype(np.float32)


def batch_mean_spread(layer: BatchMoments) -> np.ndarray:
    """Per channel, the standard deviation (ddof 1) of the batch means over the full-size batches:
    how much an i.i.d. batch's mean varies by sampling alone. NaN with fewer than `MIN_SPREAD_BATCHES`
    such batches (a spread from two or three means is too rough to compare against)."""
    full = max(n for _, _, n in layer)
    means = np.array([m for m, _, n in layer if n == full], np.float64)
    if len(means) < MIN_SPREAD_BATCHES:
        return np.full(layer[0][0].shape, np.nan, np.float32)
    return means.std(axis=0, ddof=1).astype(np.float32)


def population_moments(forward: StatelessForward, x: np.ndarray, batch_size: int, n_layers: int, training: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per BN layer, the per-channel mean and (population) variance of its input over `x`, the
    network's BN layers in training mode on batches of `batch_size` (PreciseBN's population) or in
    inference mode (what inference actually feeds each layer); see `pooled_moments`."""
    return [pooled_moments(layer) for layer in batch_moments(forward, x, batch_size, n_layers, training)]


@dataclass(frozen=True)
class Snapshot:
    """What the training loop keeps at a probe step: a copy of every weight (moving statistics
    included) and the batch statistics recovered from the update. Taking one costs about a
    millisecond; the record is made from it later, by `RecordMaker`."""

    step: int
    epoch: int
    weights: list[np.ndarray]
    batch_stats: list[tuple[np.ndarray, np.ndarray]] | None  # None at step 0: no batch seen yet
    weights_before: list[np.ndarray] | None = None  # the weights the step's batch statistics were computed with

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights + (self.weights_before or []))


class RecordMaker:
    """Turns snapshots into `ProbeRecord`s on a private copy of the model, so a record can be made
    after training has moved on (or finished) without touching the trained model."""

    def __init__(
        self,
        model: keras.Model,
        config: ProbeConfig,
        probe_data: tuple[np.ndarray, np.ndarray],
        population: np.ndarray,
        batch_size: int,
        task: Task = CLASS_TASK,
    ):
        self.copy, self.forward = private_copy(model)
        self.bn_layers = self.forward.bn_layers
        self.config, self.batch_size, self.task = config, batch_size, task
        self.x_probe, self.y_probe = probe_data
        self.population = population

    def make(self, snapshot: Snapshot, population: bool = True, inference: bool = True) -> ProbeRecord:
        """The record of `snapshot`. Without `population` its population fields (both modes and the
        i.i.d. spread) are NaN and only the probe batch runs forward, a quarter of the work; without
        `inference` only the inference-mode population is NaN (the diagnosis reads it at the last record)."""
        population = self._population(snapshot, inference) if population else None  # leaves the copy holding snapshot.weights
        if population is None:
            self.copy.set_weights(snapshot.weights)
        probs_train, train_out = self.forward.probe(self.x_probe, training=True)
        probs_infer, infer_out = self.forward.probe(self.x_probe, training=False) if self.bn_layers else (probs_train, train_out)  # without BN both modes agree
        acc_train, loss_train = scores(probs_train, self.y_probe, self.task)
        acc_infer, loss_infer = scores(probs_infer, self.y_probe, self.task)
        records = []
        for i, layer in enumerate(self.bn_layers):
            moving_mean, moving_var = self.forward.moving(i)
            nan = np.full_like(moving_mean, np.nan)
            batch_mean, batch_var = snapshot.batch_stats[i] if snapshot.batch_stats else (nan, nan)
            edges, hist_train, hist_infer = shared_histograms(train_out[i], infer_out[i], self.config.bins, self.forward.histogram_values)
            pop_mean, pop_var, infer_mean, infer_var, spread = population[i] if population else (nan,) * 5
            records.append(
                ProbeLayer(
                    layer.name, moving_mean, moving_var, batch_mean, batch_var, pop_mean, pop_var, edges, hist_train, hist_infer, infer_mean, infer_var, spread
                )
            )
        return ProbeRecord(snapshot.step, snapshot.epoch, acc_train, acc_infer, loss_train, loss_infer, tuple(records))

    def _population(self, snapshot: Snapshot, inference: bool) -> list[tuple[np.ndarray, ...]]:
        """Per BN layer: the population mean and variance in training mode, with the weights the
        step's batch was normalised with (so batch and population statistics differ by the batch's
        composition only, not by the step's update: the i.i.d. measure compares the two); the same in
        inference mode with the snapshot's weights (NaN without `inference`), which the diagnosis reads;
        and the spread of i.i.d. batch means. Leaves the copy holding `snapshot.weights`."""
        n = len(self.bn_layers)
        self.copy.set_weights(snapshot.weights_before or snapshot.weights)
        training_batches = batch_moments(self.forward, self.population, self.batch_size, n)
        self.copy.set_weights(snapshot.weights)
        infer = population_moments(self.forward, self.population, self.batch_size, n, training=False) if inference else None
        rows = []
        for i, batches in enumerate(training_batches):
            mean, var = pooled_moments(batches)
            infer_mean, infer_var = infer[i] if infer else (np.full_like(mean, np.nan),) * 2
            rows.append((mean, var, infer_mean, infer_var, batch_mean_spread(batches)))
        return rows


class BNProbe(keras.callbacks.Callback):
    """Snapshots the model at each scheduled step and hands each finished `ProbeRecord` to `emit`,
    in step order.

    Records are made inside the training loop from snapshots, at the pace that spreads them evenly
    over the run's steps (after a share f of the steps, a share f of the scheduled records is made),
    or sooner while the time spent on them stays within `config.budget` of the training time so far;
    so a watcher sees records while the model trains, and the work done by the last step is the same
    as if every record had waited for the end. Budget 0 makes every record once training ends, budget
    100 each at its step. The newest snapshot waits for the next one unless it is the last scheduled
    step, so the run's last record, which always measures the population, is known to be the last.
    Those left at the end are made after training; `keep_going` is asked before each of them: a
    cancelled run skips them.
    """

    def __init__(
        self,
        config: ProbeConfig,
        probe_data: tuple[np.ndarray, np.ndarray],
        population: np.ndarray,
        batch_size: int,
        emit: Callable[[ProbeRecord], None],
        keep_going: Callable[[], bool] = lambda: True,
        task: Task = CLASS_TASK,
    ):
        super().__init__()
        self.config, self.task = config, task
        self.probe_data, self.population = probe_data, population
        self.batch_size = batch_size
        self.emit, self.keep_going = emit, keep_going
        self.step = 0
        self.epoch = 0
        self.pending: deque[Snapshot] = deque()
        self.pending_bytes = 0
        self.live_records = 0  # made inside the training loop; the rest were made once it ended
        self.made = 0
        self.total_steps: int | None = None  # None when fit does not know it (a generator without steps)
        self._maker: RecordMaker | None = None
        self._before: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._weights_before: list[np.ndarray] | None = None
        self._began = 0.0
        self._spent = 0.0  # seconds of probe work inside the training loop
        self._record_cost: float | None = None  # seconds the last record took

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._began = time.perf_counter()
        self.bn_layers = batch_norm_layers(self.model)
        updates = updates_per_step(self.model)  # a BN layer inside TimeDistributed updates once per time step
        self.momenta = [float(layer.momentum) ** updates.get(id(layer), 1) for layer in self.bn_layers]
        steps_per_epoch = self.params.get("steps") or 1
        self.total_steps = steps_per_epoch * self.params.get("epochs", 1) if self.params.get("steps") else None
        self.schedule = set(probe_steps(steps_per_epoch * self.params.get("epochs", 1), steps_per_epoch, self.config.every))
        self._snapshot(batch_stats=None)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1  # 1-based; step 0 (before training) is epoch 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.step + 1 in self.schedule:
            self._before = self._moving()
            self._weights_before = self.model.get_weights()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        if self.step in self.schedule and self._before is not None:
            after = self._moving()
            batch_stats = [recover_batch_moments(b, a, m) for m, b, a in zip(self.momenta, self._before, after, strict=True)]
            self._before = None
            self._snapshot(batch_stats)
        while self._ready() and (self._affordable() or self.pending_bytes > MAX_PENDING_BYTES):
            self._make_next()

    def on_train_end(self, logs: dict | None = None) -> None:
        while self.pending and self.keep_going():
            self._make_next(live=False)
        self.pending.clear()
        self.pending_bytes = 0

    def forward_for(self, model: keras.Model) -> StatelessForward | None:
        """The records' compiled passes with their copy holding `model`'s current weights, so that the
        evaluation once training ends reuses their traces (None before the first record)."""
        if self._maker is None:
            return None
        self._maker.copy.set_weights(model.get_weights())
        return self._maker.forward

    def _ready(self) -> bool:
        """Is there a snapshot to make inside the loop? The newest waits for the next one (or the end
        of training) unless it is the run's last step: the last record always measures the population,
        and which record is the last is known only once training ends (early stopping, a cancel)."""
        return len(self.pending) > 1 or (bool(self.pending) and self.pending[0].step == self.total_steps)

    def _moving(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in self.bn_layers]

    def _snapshot(self, batch_stats: list[tuple[np.ndarray, np.ndarray]] | None) -> None:
        start = time.perf_counter()
        snapshot = Snapshot(self.step, self.epoch, self.model.get_weights(), batch_stats, self._weights_before if batch_stats else None)
        self.pending.append(snapshot)
        self.pending_bytes += snapshot.nbytes
        self._spent += time.perf_counter() - start

    def _affordable(self) -> bool:
        """Is a record due by the even pace over the run's steps, or would one more keep probe time
        within the budget share of training time?"""
        training = time.perf_counter() - self._began - self._spent
        if self.step == 0 or training <= 0 or self.config.budget <= 0:
            return False
        if self.total_steps and self.made < len(self.schedule) * self.step / self.total_steps:
            return True
        expected = self._record_cost
        if expected is None:  # before the first record: as many training steps as the record forwards batches
            expected = training / self.step * (2 * len(self.probe_data[0]) + len(self.population)) / self.batch_size  # MultiInput has len() too
        return self._spent + expected <= self.config.budget * training

    def _make_next(self, live: bool = True) -> None:
        start = time.perf_counter()
        if self._maker is None:
            self._maker = RecordMaker(self.model, self.config, self.probe_data, self.population, self.batch_size, self.task)
        snapshot = self.pending.popleft()
        self.pending_bytes -= snapshot.nbytes
        last = not self.pending and (not live or snapshot.step == self.total_steps)
        self.emit(self._maker.make(snapshot, population=measures_population(self.made, last, self.config.population_every), inference=last))
        self.made += 1
        self._record_cost = time.perf_counter() - start
        if live:
            self._spent += self._record_cost
            self.live_records += 1
