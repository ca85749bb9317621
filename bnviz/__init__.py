"""bnviz: see why a BatchNormalization model trains to 0.99 and tests at 0.46.

The package is a plain library: it never imports streamlit, and only `models`, `probe`,
`train`, `recalibrate` and `worker` import TensorFlow/Keras (the dashboard process stays light).
"""

__version__ = "0.1.0"
