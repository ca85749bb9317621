"""Earlier implementations of bnviz pieces, kept only to measure them side by side with the current
ones in the same run (bench.overhead.record_breakdown)."""

from __future__ import annotations

import numpy as np


def population_moments_numpy(forward, x: np.ndarray, batch_size: int, n_layers: int, training: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """bnviz.tf.probe.population_moments before the benchmark: every output of every batch copied out,
    then E[x²] − E[x]² accumulated in float64 numpy (`training` picks the BN mode, as the current one)."""
    sums, squares, counts = [0.0] * n_layers, [0.0] * n_layers, [0] * n_layers
    for start in range(0, len(x), batch_size):
        outputs = forward(x[start : start + batch_size], training=training)
        for i, values in enumerate(outputs[1 : 1 + n_layers]):
            flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
            sums[i] = sums[i] + flat.sum(axis=0)
            squares[i] = squares[i] + (flat**2).sum(axis=0)
            counts[i] += flat.shape[0]
    moments = []
    for s, q, n in zip(sums, squares, counts, strict=True):
        mean = s / n
        moments.append((mean.astype(np.float32), np.maximum(q / n - mean**2, 0.0).astype(np.float32)))
    return moments
