"""The TensorFlow side of bnviz: everything that imports TensorFlow or Keras lives in this package.

The dashboard process never imports it (tests/test_structure.py proves that by walking the imports);
worker processes, the CLI, the Ray task body and a user's notebook or script do. The rest of bnviz
(config, records, stats, store, jobs, diagnose, figures, forms, export, ...) stays light: NumPy,
pandas and plotly at most.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside: silences what native code writes there."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _start_tensorflow_quietly() -> None:
    """Import TensorFlow and run one op with stderr muted, unless the process did it already (a user's
    script or notebook that imported it first is left as it is). On CPUs where oneDNN is on, TF 2.21's
    first op writes absl lines ("All log messages before absl::InitializeLog() ...", "oneDNN custom
    operations are on") that TF_CPP_MIN_LOG_LEVEL does not silence, and a CLI error is to be one line."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_muted():
        import tensorflow as tf

        tf.constant(0.0) + 1.0


_start_tensorflow_quietly()
