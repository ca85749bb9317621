"""bnviz: see why a BatchNormalization model trains to 0.99 and tests at 0.46.

The package is a plain library that never imports streamlit. Everything that imports TensorFlow or
Keras lives in `bnviz.tf`; the modules beside it stay light, so the dashboard process can import
them (tests/test_structure.py walks the imports to prove it). `bnviz.Probe`, the callback for your
own `fit`, loads `bnviz.tf` on first use; `bnviz.load` and `bnviz.compare` give stored runs as
objects that display themselves in a notebook (bnviz.notebook).
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`bnviz.Probe`, `bnviz.load` and `bnviz.compare` without importing TensorFlow or plotly when the package is imported."""
    if name == "Probe":
        from bnviz.tf.callback import Probe

        return Probe
    if name in ("load", "compare"):
        from bnviz import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'bnviz' has no attribute {name!r}")
