"""Write a stored run's probe data as TensorBoard event files, for people who live in TensorBoard.

Histograms are written exactly from the stored buckets (TensorBoard's histogram plugin stores a
[k, 3] tensor of left edge, right edge, count), so TensorBoard shows the same bins as bnviz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from bnviz.records import RunData
from bnviz.stats import init_weight, scale_error, standardized_gap


def _histogram(tag: str, edges: np.ndarray, counts: np.ndarray, step: int, description: str) -> None:
    buckets = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
    meta = histogram_metadata.create_summary_metadata(display_name=tag, description=description)
    tf.summary.write(tag, tf.constant(buckets, dtype=tf.float64), step=step, metadata=meta)


def write_events(data: RunData, logdir: Path | str) -> Path:
    """Write scalars (probe accuracy in both modes, per-layer drift, initial-value weight) and
    train/inference-mode histograms per BN layer; returns the run's log folder."""
    folder = Path(logdir) / data.run.id
    writer = tf.summary.create_file_writer(str(folder))
    momentum = data.run.config.arch.bn.momentum
    with writer.as_default():
        for row in data.probes.itertuples():
            tf.summary.scalar("probe/accuracy_train_mode", row.acc_train_mode, step=row.step)
            tf.summary.scalar("probe/accuracy_inference", row.acc_inference, step=row.step)
            tf.summary.scalar("ema/initial_value_weight", float(init_weight(momentum, row.step)), step=row.step)
        for row in data.steps.itertuples():
            tf.summary.scalar("train/loss", row.loss, step=row.step)
            tf.summary.scalar("train/accuracy", row.accuracy, step=row.step)
        for name, trace in data.layers.items():
            measured, eps = trace.measured(), data.epsilon(name)
            for i, step in enumerate(measured.steps.tolist()):  # the records between carry no population
                gap = standardized_gap(measured.moving_mean[i], measured.pop_mean[i], measured.pop_var[i], eps)
                tf.summary.scalar(f"{name}/moving_mean_gap_sd", float(np.median(gap)), step=step)
                tf.summary.scalar(f"{name}/scale_error", float(np.median(scale_error(measured.moving_var[i], measured.pop_var[i], eps))), step=step)
            for i, step in enumerate(trace.steps.tolist()):
                _histogram(f"{name}/output_train_mode", trace.hist_edges[i], trace.hist_train[i], step, "BN output, batch statistics")
                _histogram(f"{name}/output_inference", trace.hist_edges[i], trace.hist_infer[i], step, "BN output, moving statistics")
    writer.close()
    return folder
