"""`python -m bench.notebook`: what the live notebook panel adds to `bnviz.Probe`, measured in a real
IPython kernel (nbclient), where the panel is on.

One notebook trains the same small BN model from the same seed with `Probe(display=False)` and
`Probe(display=True)`, alternating which goes first, and times each `fit` twice: its training loop
(until the first `on_train_end`: every step and every panel redraw; wall and CPU time) and the whole
call (adding the evaluation and, with the panel, the answer displayed under the cell). It prints
the ratios per round and their medians, side by side in one kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.docs import fenced, write_generated
from bench.util import ROOT, median

TIMES = {"loop_s": "training loop (wall)", "loop_cpu_s": "training loop (CPU)", "fit_s": "whole fit, the answer displayed at its end"}
TIMING_CELL = """
import json, time
import numpy as np, keras
import bnviz

rng = np.random.default_rng(0)
x = (rng.normal(size=(2048, 16, 16, 3)) * 40 + 120).astype("float32")
y = (x[..., 0].mean(axis=(1, 2)) > 120).astype("int64")

def timed(display):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.BatchNormalization(),
                              keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    probe = bnviz.Probe("bench", test_data=(x[:256], y[:256]), train_data=(x, y), display=display)
    loop_end = {}
    clock = keras.callbacks.LambdaCallback(on_train_end=lambda logs: loop_end.update(
        wall=time.perf_counter(), cpu=time.process_time(), panel=probe.panel.seconds if probe.panel else 0.0))
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0, callbacks=[clock, probe])  # the clock's on_train_end runs first
    return {"loop_s": loop_end["wall"] - wall, "loop_cpu_s": loop_end["cpu"] - cpu, "fit_s": time.perf_counter() - wall,
            "updates": probe.panel.updates if probe.panel else 0, "panel_s": loop_end["panel"]}

timed(False), timed(True)  # traces, one-time imports and plotly.js sent to the page: untimed
rounds = []
for i in range(ROUNDS):
    order = (False, True) if i % 2 == 0 else (True, False)
    seconds = {d: timed(d) for d in order}
    rounds.append({"without": seconds[False], "with": seconds[True]})
print("BENCH " + json.dumps(rounds))
"""


def execute_notebook(cells: list[str], cwd: Path, timeout: int = 600) -> tuple[object, dict[int, int]]:
    """Run code cells in a fresh IPython kernel; the executed notebook and, per cell index, how many
    display updates (update_display_data) its output received."""
    import nbclient
    import nbformat

    class CountingClient(nbclient.NotebookClient):
        updates: dict[int, int] = {}

        def process_message(self, msg, cell, cell_index):
            if msg["msg_type"] == "update_display_data":
                self.updates[cell_index] = self.updates.get(cell_index, 0) + 1
            return super().process_message(msg, cell, cell_index)

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = CountingClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.updates = {}
    client.execute()
    return nb, client.updates


def run(rounds: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-nb-") as home:
        os.environ.update(BNVIZ_HOME=home, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        started = time.perf_counter()
        nb, _ = execute_notebook([TIMING_CELL.replace("ROUNDS", str(rounds)).replace("EPOCHS", str(epochs))], ROOT)
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    measured = json.loads(next(line for line in text.splitlines() if line.startswith("BENCH "))[6:])
    ratios = {key: [r["with"][key] / r["without"][key] for r in measured] for key in TIMES}
    share = median([r["with"]["panel_s"] / r["with"]["loop_s"] for r in measured])
    return {
        "rounds": measured,
        "ratios": ratios,
        "median": {k: median(v) for k, v in ratios.items()},
        "panel_share": share,
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--docs", action="store_true", help="also write the report into docs/notebook.md (between its markers)")
    args = parser.parse_args(argv)
    result, lines = run(args.rounds, args.epochs), []
    for i, r in enumerate(result["rounds"]):
        cells = ", ".join(f"{TIMES[k]} {r['without'][k]:.2f} → {r['with'][k]:.2f} s ({r['with'][k] / r['without'][k]:.3f}×)" for k in TIMES)
        lines.append(f"round {i + 1}, {r['with']['updates']} redraws, {1000 * r['with']['panel_s']:.0f} ms drawing in the loop: {cells}")
    lines.append(
        "median, probe + live panel over the probe alone: "
        + ", ".join(f"{TIMES[k]} {v:.3f}×" for k, v in result["median"].items())
        + f" ({result['wall_s']:.0f} s in all)"
    )
    lines.append(
        f"the panel's own drawing time inside the training loop: {result['panel_share']:.1%} of the loop (median), "
        f"so {1 + result['panel_share']:.3f}× what the loop would take without it"
    )
    text = "\n".join(lines)
    print(text)
    if args.docs:
        print(f"wrote {write_generated('notebook.md', 'bench.notebook', fenced(text))}")


if __name__ == "__main__":
    main()
