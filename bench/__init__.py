"""bnviz benchmarks: `python -m bench` measures, side by side in one run, what bnviz costs.

Sections (each runs in its own fresh Python process, so imports and thread settings never leak
from one into another):

- `overhead`: wall time per training step of the `bn` preset: plain `model.fit` (the limit), bnviz
  probed training as a real run pays it (BNProbe + the store Recorder writing to a temporary
  SQLite store), timed to the end of training and to the last stored record, and
  `keras.callbacks.TensorBoard(histogram_freq=1)`; how the overhead grows with
  the probe interval, the number of BN layers and the probe batch; what one probe record costs,
  piece by piece; and how far a smaller population sample sits from a large one.
- `command`: the whole `bnviz train --preset bn` command with the probe against `--no-probe`.
- `long`: a 1,026-step run, plain `fit` against the default probe (measured, not projected).
- `scale`: the seed presets with BN at 224×224: ms/step, time to the last record and peak memory,
  plain and probed, each fit in its own process; the Diagnose page on the probed run.
- `threads` (only when named): plain ms/step under TensorFlow thread settings.
- `story`: `python -m bnviz story` (the four seed presets) end to end, and where its time goes.
- `ui`: first render of every dashboard page (AppTest), page reruns while a worker trains, and
  the memory of a real `streamlit run app.py` server (which must not load TensorFlow).
- `store`: bytes stored per probe record and per run, and the Diagnose page's load time for a
  synthetic run of 10,000 steps.

Timings are medians of repetitions that alternate the variants (A B C, B C A, ...), so machine
noise falls on every variant alike; the load average before and after each section is recorded.
Results: a table on stdout and `bench/results/latest.json` (git-ignored). `--quick` is a smoke
mode with tiny sizes (tests/test_bench.py runs it); its numbers are not measurements.

`python -m bench.scenarios` stands apart: it trains the scenario bank (tests/scenarios.py) and
prints the "What bnviz diagnoses" table of docs/diagnoses.md. So does `python -m bench.ray`: a sweep on one
local worker against a 2-node Ray cluster on this machine (docs/scaling-out.md). With `--docs`, each
script that measures a table in docs/ writes it between that file's markers (bench/docs.py);
`python -m bench.screenshot` regenerates docs/diagnose.png.
"""
