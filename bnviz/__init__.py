"""bnviz: see why a BatchNormalization model trains to 0.99 and tests at 0.46.

The package is a plain library: it never imports streamlit, and only `models`, `probe`,
`evidence`, `train`, `recalibrate`, `own`, `callback`, `inspect`, `tbexport` and `worker` import
TensorFlow/Keras (the dashboard process stays light; `scoring` is NumPy only). `bnviz.Probe`, the
callback for your own `fit`, loads them on first use; `bnviz.load` and `bnviz.compare` give stored
runs as objects that display themselves in a notebook (bnviz.notebook).
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`bnviz.Probe`, `bnviz.load` and `bnviz.compare` without importing TensorFlow or plotly when the package is imported."""
    if name == "Probe":
        from bnviz.callback import Probe

        return Probe
    if name in ("load", "compare"):
        from bnviz import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'bnviz' has no attribute {name!r}")
