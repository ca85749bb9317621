"""bnviz in a notebook: runs that display themselves, the live panel of `bnviz.Probe`, and notebooks
executed in a real IPython kernel (nbclient + ipykernel), the example notebook included, then saved
as HTML with nbconvert and drawn offline in Chromium."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import plotly.graph_objects as go
import pytest

import bnviz
from bench.notebook import execute_notebook
from bnviz import notebook
from bnviz.diagnose import as_text, diagnose
from bnviz.store import StoreError
from bnviz.summary import history_figures
from tests.browser import CHROMIUM, chromium
from tests.conftest import needs_tool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "seed_notebook.ipynb"


def small_model(momentum: float) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.BatchNormalization(momentum=momentum),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def raw_pixels(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, 8, 8, 1)).astype("float32") * 50 + 100
    return x, (x.mean(axis=(1, 2, 3)) > 100).astype("int64")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two Probe runs of the same small model, momentum 0.99 and 0.8, in one home folder."""
    home = tmp_path_factory.mktemp("home")
    x, y = raw_pixels()
    probes = {}
    for m in (0.99, 0.8):
        keras.utils.set_random_seed(0)
        probes[m] = bnviz.Probe(f"m{m}", test_data=(x[:64], y[:64]), train_data=(x, y), home=home)
        small_model(m).fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[probes[m]])
    return home, probes


# --- outside a kernel -----------------------------------------------------------------------------
@pytest.mark.slow
def test_outside_a_notebook_the_probe_shows_nothing(stored):
    _, probes = stored
    assert not notebook.in_notebook()
    assert all(p.panel is None and not p.display for p in probes.values())


def test_a_run_displays_as_the_top_of_its_diagnose_page(stored, monkeypatch):
    home, probes = stored
    run = bnviz.load(probes[0.99].run_id, home)
    monkeypatch.setattr(notebook, "_plotlyjs_sent", False)
    first, second = run._repr_mimebundle_()["text/html"], run._repr_mimebundle_()["text/html"]
    top = diagnose(run.data)[0]
    assert top.title in first and "initial values left, mᵗ" in first and "train (evaluate)" in first
    assert first.count("Plotly.newPlot") == len(history_figures(run.data)) == 2
    assert first.count("<script src=") == 0 and first.count("window.Plotly = Plotly") == 1  # plotly.js inline, once per kernel
    assert second.count("window.Plotly = Plotly") == 0 and second.count("Plotly.newPlot") == 2
    assert top.title in run._repr_mimebundle_()["text/plain"]


def test_findings_figures_and_comparison_are_the_dashboards(stored):
    home, probes = stored
    run = probes[0.99].run
    findings = run.diagnose()
    assert findings.verdict.key == "verdict" and repr(findings) == as_text(diagnose(run.data))
    assert all(f.title in findings._repr_html_() for f in findings)
    figures = run.figures
    assert {"training_curves", "initial_values"} <= set(figures) and all(isinstance(f, go.Figure) for f in figures.values())
    comparison = bnviz.compare(run, probes[0.8].run_id, home=home)
    html = comparison._repr_mimebundle_()["text/html"]
    assert "m0.99" in html and "m0.8" in html and html.count("Plotly.newPlot") == len(comparison.figures)


def test_load_takes_an_id_prefix_and_names_what_is_there(stored):
    home, probes = stored
    run_id = probes[0.8].run_id
    assert bnviz.load(run_id[:-2], home).id == run_id and bnviz.load(home=home).id == run_id  # the newest
    with pytest.raises(StoreError, match="No run matches 'nope'.*newest: " + run_id):
        bnviz.load("nope", home)
    with pytest.raises(ValueError, match="two runs or more"):
        bnviz.compare(run_id, home=home)
    with pytest.raises(RuntimeError, match="fit"):
        bnviz.Probe(test_data=raw_pixels(8)).run  # noqa: B018


def test_recalibrate_returns_the_repaired_model_and_its_accuracy(stored):
    _, probes = stored
    fixed = probes[0.99].recalibrate(batches=4)
    x, y = raw_pixels()
    predicted = fixed.model.predict(x[:64], verbose=0).argmax(axis=1)
    assert math.isclose(fixed.accuracy["test"], float((predicted == y[:64]).mean()), abs_tol=1e-6)
    assert fixed.after.batches == 4 and fixed.path.exists() and "before" in fixed._repr_html_()


class FakeHandle:
    """A display handle that records updates, or fails like a closed front end."""

    def __init__(self, fail: bool = False):
        self.fail, self.bundles = fail, []

    def update(self, bundle: dict, raw: bool) -> None:
        if self.fail:
            raise OSError("front end gone")
        self.bundles.append(bundle)


def test_the_live_panel_redraws_at_most_every_few_seconds_and_never_raises(stored, capsys):
    home, probes = stored
    panel = notebook.LivePanel(notebook.Store(home), probes[0.99].run_id, 8, flush=lambda: None)
    panel.handle = FakeHandle()
    # each step reads the clock once, each redraw twice more (start, end)
    clock = iter([100.0, 100.0, 100.01, 101.0, 102.5, 102.5, 102.51, 105.0, 105.0, 105.1, 108.0])
    panel.clock = lambda: next(clock)
    panel.step()  # 100.0: redraw, next at 102.0
    panel.step()  # 101.0: too soon
    panel.step()  # 102.5: redraw, next at 104.5
    panel.step()  # 105.0: a redraw that takes 0.1 s: the next waits 0.1 / LIVE_COST_SHARE = 5 s
    panel.step()  # 108.0: too soon
    assert len(panel.handle.bundles) == panel.updates == 3 and panel.next_at == pytest.approx(110.0)
    assert panel.handle.bundles[0]["text/plain"].startswith("bnviz: step 8/8,") and "Plotly.newPlot" in panel.handle.bundles[0]["text/html"]
    panel.handle, panel.next_at = FakeHandle(fail=True), 0.0
    panel.clock = lambda: 200.0
    panel.step()
    panel.step()
    assert panel.handle is None and panel.updates == 3
    assert capsys.readouterr().err.count("the live panel stopped (OSError: front end gone)") == 1


# --- in a real kernel ---------------------------------------------------------------------------------
def outputs(cell) -> list[dict]:
    return [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]


def html_of(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs(cell))


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """The kernel inherits the environment: this checkout on its path, runs in a temporary home."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    return tmp_path


SMALL_NOTEBOOK = [
    """import numpy as np, keras, bnviz, bnviz.notebook
bnviz.notebook.LIVE_EVERY_S = 0.2  # redraw often: this run is short
x = np.random.default_rng(0).normal(size=(1024, 8, 8, 1)).astype("float32") * 50 + 100
y = (x.mean(axis=(1, 2, 3)) > 100).astype("int64")
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.BatchNormalization(),
                          keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])""",
    """probe = bnviz.Probe("live", test_data=(x[:128], y[:128]), train_data=(x, y))
model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[probe])
print("UPDATES", probe.panel.updates)""",
    """quiet = bnviz.Probe("quiet", test_data=(x[:128], y[:128]), train_data=(x, y), display=False)
_ = model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[quiet])""",
    "bnviz.load(probe.run_id)",
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_in_a_kernel_the_probe_follows_fit_live_and_answers_under_the_cell(kernel_env):
    nb, updates = execute_notebook(SMALL_NOTEBOOK, kernel_env)
    live, quiet, loaded = nb.cells[1], nb.cells[2], nb.cells[3]
    printed = "".join(o.get("text", "") for o in live.outputs if o.output_type == "stream")
    assert updates.get(1, 0) >= 2 and f"UPDATES {updates[1]}" in printed  # redrawn in place during fit, and once at its end
    panel, answer = outputs(live)[-2:]
    assert panel["data"]["text/plain"].startswith("bnviz: step 64/64,")  # the last redraw saw every step
    assert "Verdict" in answer["data"]["text/html"] and "initial values left" in answer["data"]["text/html"]
    assert sum("window.Plotly = Plotly" in html_of(c) for c in nb.cells) == 1  # plotly.js once, inline
    assert not any("<script src=" in html_of(c) for c in nb.cells)
    assert outputs(quiet) == [] and 2 not in updates  # display=False: nothing under the cell
    assert "Verdict" in html_of(loaded) and html_of(loaded).count("Plotly.newPlot") == 2


def verdict_of(cell) -> str:
    return next(o["data"]["text/plain"] for o in outputs(cell) if "Verdict" in o["data"].get("text/plain", ""))


def drawn_offline(page_path: Path) -> tuple[int, int]:
    """(figures drawn, figure divs) of an HTML file in Chromium with every network request refused."""
    with chromium() as browser:
        page = browser.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
        page.goto(page_path.as_uri(), wait_until="load")
        page.wait_for_timeout(3000)
        return page.locator(".js-plotly-plot").count(), page.locator(".plotly-graph-div").count()


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_tool(Path(CHROMIUM).exists(), "Debian's chromium is not installed (.ci/run installs it)")
def test_the_example_notebook_names_the_cause_and_survives_nbconvert(kernel_env):
    import nbformat

    source = nbformat.read(EXAMPLE, as_version=4)
    code = [c.source for c in source.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in source.cells if c.cell_type == "code")  # committed clean
    nb, updates = execute_notebook(code, EXAMPLE.parent)
    cells = {c.source.strip(): c for c in nb.cells}
    bn, final = (next(c for s, c in cells.items() if s.startswith(start)) for start in ("with_bn = train", "final = train"))
    assert "still carry their initial values" in verdict_of(bn)
    assert "Healthy" in verdict_of(final)
    fit_cells = [i for i, c in enumerate(nb.cells) if "= train(" in c.source]
    assert len(fit_cells) == 4 and all(updates.get(i, 0) >= 1 for i in fit_cells)  # every panel redrawn at least at the end
    fixed = next(c for s, c in cells.items() if s.startswith("fixed = with_bn.recalibrate()"))
    before, after = map(float, re.search(r"test accuracy: ([\d.]+) → ([\d.]+)", outputs(fixed)[0]["data"]["text/plain"]).groups())
    assert after > before  # PreciseBN repairs the 0.99 model's test accuracy

    saved = kernel_env / "executed.ipynb"
    nbformat.write(nb, saved)
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", str(saved)], check=True, capture_output=True, timeout=120)
    page = saved.with_suffix(".html")
    expected = sum(html_of(c).count("Plotly.newPlot") for c in nb.cells)
    drawn, divs = drawn_offline(page)
    assert divs == expected and drawn >= expected  # every figure drawn with no network: plotly.js is in the file


@pytest.mark.slow
def test_a_regression_run_displays_with_its_loss(tmp_path):
    """Probe records of a model without accuracy store NULLs; the run still displays (it raised before)."""
    x = np.random.default_rng(0).normal(size=(128, 6)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    probe = bnviz.Probe("regression", test_data=(x[:32], x[:32].sum(1)), train_data=(x, x.sum(1)), home=tmp_path)
    model.fit(x, x.sum(1), epochs=1, batch_size=32, verbose=0, callbacks=[probe])
    html = probe.run._repr_mimebundle_()["text/html"]
    assert "Test mse" in html and html.count("Plotly.newPlot") == 2
    live = notebook.figures.live_figure(probe.run.data, 4)
    assert live.layout.title.text.endswith("step 4/4") and "loss" in live.layout.annotations[0].text
