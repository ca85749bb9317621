"""The TensorFlow side of bnviz: everything that imports TensorFlow or Keras lives in this package.

The dashboard process never imports it (tests/test_structure.py proves that by walking the imports);
worker processes, the CLI, the Ray task body and a user's notebook or script do. The rest of bnviz
(config, records, stats, store, jobs, diagnose, figures, forms, export, ...) stays light: NumPy,
pandas and plotly at most.
"""
