"""bnviz in a Jupyter notebook: runs, findings and comparisons that display themselves, and the live
panel `bnviz.Probe` shows under the cell that trains.

    run = bnviz.load("20261206-…")     # any stored run: bnviz's own, a Probe's, an inspected model
    run                                # the top of the Diagnose page: verdict, figures, the two charts
    run.diagnose()                     # the findings, verdict first
    run.figures["drift"]               # the dashboard's Plotly figures (bnviz.figures)
    fixed = run.recalibrate()          # PreciseBN: the repaired Keras model and its accuracy
    bnviz.compare(run, other)          # the Compare view

plotly.js goes into the notebook once per kernel, inline (no CDN), so figures draw offline and in
`jupyter nbconvert --to html`; on Colab, where each output is its own frame, each output loads it from
the CDN. No Streamlit, TensorFlow or Keras here (PreciseBN loads them when called); IPython is only
imported where a kernel already did.
"""

from __future__ import annotations

import html
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from bnviz import figures
from bnviz.diagnose import Finding, as_text, diagnose, gather
from bnviz.export import PLOT_CONFIG, comparison_figures, html_report, key_layer
from bnviz.records import Evaluation, RunData
from bnviz.store import Store, StoreError
from bnviz.summary import Headline, fix_line, headline_figures, history_figures

LIVE_EVERY_S = 2.0  # the live panel redraws at most this often…
LIVE_COST_SHARE = 0.02  # …and spends at most this share of the training time redrawing
COLAB_PLOTLYJS = f'<script src="https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"></script>'
SEVERITY_COLOURS = {"critical": "#b42318", "warning": "#b54708", "unknown": "#b54708", "info": "#175cd3", "ok": "#067647"}
SEVERITY_LABELS = {"unknown": "not enough evidence"}
_plotlyjs_sent = False


def in_notebook() -> bool:
    """True under a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab); False in a script or the terminal IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _colab() -> bool:
    return "google.colab" in sys.modules


def plotlyjs_once() -> str:
    """plotly.js as a script, the first time a kernel asks (then ""); on Colab every time, from the CDN."""
    global _plotlyjs_sent
    if _colab():
        return COLAB_PLOTLYJS
    if _plotlyjs_sent:
        return ""
    _plotlyjs_sent = True
    return f"<script>{get_plotlyjs()}</script>"


def figure_html(fig: go.Figure) -> str:
    """A figure as a div and the script that draws it with the page's plotly.js (plotlyjs_once)."""
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, config=PLOT_CONFIG)


def _inline_code(text: str) -> str:
    """Escaped text with `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _box(severity: str, title: str, body: str) -> str:
    colour = SEVERITY_COLOURS.get(severity, "#444")
    return (
        f'<div style="border-left:5px solid {colour};padding:6px 12px;margin:6px 0;background:#fafafa">'
        f'<b style="color:{colour}">{html.escape(title)}</b><div>{body}</div></div>'
    )


def finding_html(finding: Finding) -> str:
    """A finding as the Diagnose page words it: severity, title, detail, remedies."""
    label = SEVERITY_LABELS.get(finding.severity, finding.severity)
    remedies = "".join(f"<li>{_inline_code(r)}</li>" for r in finding.remedies)
    body = _inline_code(finding.detail) + (f"<ul style='margin:4px 0'>{remedies}</ul>" if remedies else "")
    return _box(finding.severity, f"[{label}] {finding.title}", body)


class Findings(list):
    """A run's findings, the verdict first; displays as the Diagnose page's text, prints as the CLI's."""

    @property
    def verdict(self) -> Finding:
        return self[0]

    def _repr_html_(self) -> str:
        return "".join(finding_html(f) for f in self)

    def __repr__(self) -> str:
        return as_text(self)


def _headlines_html(cells: Sequence[Headline]) -> str:
    """The big figures in a row of cards, each with its tooltip."""

    def card(c: Headline) -> str:
        note = f'<div style="font-size:12px;color:#555">{html.escape(c.note)}</div>' if c.note else ""
        return (
            f'<div title="{html.escape(c.help)}" style="flex:1;min-width:130px;padding:6px 10px;border:1px solid #ddd;border-radius:6px">'
            f'<div style="font-size:12px;color:#555">{html.escape(c.label)}</div><div style="font-size:24px">{html.escape(c.value)}</div>{note}</div>'
        )

    return f'<div style="display:flex;gap:8px;flex-wrap:wrap;margin:8px 0">{"".join(card(c) for c in cells)}</div>'


def summary_html(data: RunData, findings: Sequence[Finding]) -> str:
    """The top of the Diagnose page as one HTML block: the verdict, the figures row, the fix, the charts."""
    top = findings[0]
    fix = fix_line(top, f'bnviz.load("{data.run.id}").recalibrate()')
    parts = [
        plotlyjs_once(),
        f"<h3 style='margin:4px 0'>bnviz · {html.escape(data.run.label)}</h3>",
        finding_html(top),
        _headlines_html(headline_figures(data, gather(data))),
    ]
    parts += [f"<p><b>Fix:</b> {_inline_code(fix)}</p>"] if fix else []
    parts += [figure_html(f) for f in history_figures(data).values()]
    more = len(findings) - 1
    parts.append(
        f'<p style="color:#555;font-size:12px">run {html.escape(data.run.id)} · {data.run.status} · {more} more finding'
        f"{'s' * (more != 1)}: <code>.diagnose()</code> · figures: <code>.figures</code> · PreciseBN: <code>.recalibrate()</code></p>"
    )
    return "<div>" + "".join(parts) + "</div>"


@dataclass
class Recalibrated:
    """What PreciseBN gave: the repaired Keras model (saved at `path`) and its evaluations before and after."""

    model: object
    before: Evaluation | None
    after: Evaluation
    path: Path

    @property
    def accuracy(self) -> dict[str, float]:
        """Accuracy per split after PreciseBN, in inference mode (NaN where the targets are not classes)."""
        return dict(self.after.accuracy)

    def _rows(self) -> list[tuple[str, str, str]]:
        """(split and score, before, after): accuracy, else the loss where the targets are not classes."""
        classes = any(math.isfinite(v) for v in self.after.accuracy.values())
        label, score = ("accuracy", lambda e: e.accuracy) if classes else ("loss", lambda e: e.loss)
        before = score(self.before) if self.before else {}
        return [(f"{s} {label}", f"{before.get(s, math.nan):.3g}", f"{v:.3g}") for s, v in score(self.after).items()]

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in self._rows())
        return (
            f"<p>PreciseBN on {html.escape(self.after.calibrated_on or 'train')} images, {self.after.batches} batches; "
            f"the model is <code>.model</code>, saved at <code>{html.escape(str(self.path))}</code>.</p>"
            f"<table><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>"
        )

    def __repr__(self) -> str:
        return "Recalibrated(" + ", ".join(f"{a}: {b} → {c}" for a, b, c in self._rows()) + f", path={str(self.path)!r})"


class RunView:
    """A stored run in a notebook: displays as the top of its Diagnose page (see the module docstring)."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.id = store, run_id

    @property
    def data(self) -> RunData:
        """Everything stored about the run, read now (a running run keeps growing)."""
        return self.store.load_run(self.id)

    def diagnose(self) -> Findings:
        return Findings(diagnose(self.data))

    @property
    def figures(self) -> dict[str, go.Figure]:
        """The dashboard's figures of this run, by name; per-layer ones for the layer where the error starts."""
        data = self.data
        names = {"curves": "training_curves", "theory": "initial_values"}
        shown = {names[key]: fig for key, fig in history_figures(data).items()}
        if (layer := key_layer(data)) is not None:
            shown |= {
                "activations": figures.activation_histograms(data, layer),
                "drift": figures.drift_figure(data, layer),
                "channel_gap": figures.channel_gap_figure(data, layer),
            }
        return shown

    def recalibrate(self, batches: int | None = None, calibrate_on: str = "train", save: str | Path | None = None) -> Recalibrated:
        """PreciseBN now, in this process: new BN statistics over `batches` batches of `calibrate_on`'s
        images, weights untouched; returns the repaired model and its accuracy."""
        from bnviz.tf.models import load_model_safely
        from bnviz.tf.recalibrate import DEFAULT_BATCHES, recalibrate

        result = recalibrate(self.store, self.id, batches or DEFAULT_BATCHES, save=save, calibrate_on=calibrate_on)
        path = self.store.models_dir / f"{self.id}-precisebn.keras"
        return Recalibrated(load_model_safely(path), result["before"], result["after"], path)

    def report(self, path: str | Path | None = None) -> Path:
        """The one-file HTML report of this run (plotly.js inlined), written to `path` (default bnviz-report-<id>.html)."""
        return write_report([self.data], f"bnviz report: {self.data.run.label}", path or f"bnviz-report-{self.id}.html")

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, str]:
        data = self.data
        findings = diagnose(data)
        return {"text/html": summary_html(data, findings), "text/plain": f"{self!r}\n{as_text(findings[:1])}"}

    def __repr__(self) -> str:
        run = self.store.get_run(self.id)
        return f"<bnviz run {run.id}: {run.label}, {run.status}>"


def write_report(runs: Sequence[RunData], title: str, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(html_report(runs, title), encoding="utf-8")
    return path


class Comparison:
    """Several runs side by side, as the Compare page shows them."""

    def __init__(self, runs: Sequence[RunView]):
        self.runs = list(runs)

    @property
    def figures(self) -> list[go.Figure]:
        return comparison_figures([r.data for r in self.runs])

    def report(self, path: str | Path = "bnviz-comparison.html") -> Path:
        """The one-file HTML report of these runs."""
        return write_report([r.data for r in self.runs], "bnviz comparison", path)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, str]:
        datas = [r.data for r in self.runs]
        table = figures.accuracy_frame(datas).map(lambda v: "–" if v != v else f"{v:.1%}").to_html(border=0)
        verdicts = "".join(finding_html(diagnose(d)[0]) for d in datas)
        body = [plotlyjs_once(), "<h3>bnviz · comparison</h3>", table, verdicts, *(figure_html(f) for f in comparison_figures(datas))]
        return {"text/html": "<div>" + "".join(body) + "</div>", "text/plain": f"<bnviz comparison of {', '.join(r.id for r in self.runs)}>"}


def _resolve(store: Store, run_id: str | None) -> str:
    """A run id from an id, a unique prefix of one, or None (the newest run)."""
    runs = store.list_runs()
    if not runs:
        raise StoreError(f"No run is stored under {store.home}: train one with bnviz.Probe, or pass home=.")
    if run_id is None:
        return runs[0].id
    matches = [r.id for r in runs if r.id == run_id] or [r.id for r in runs if r.id.startswith(str(run_id))]
    if len(matches) != 1:
        near = ", ".join(r.id for r in runs[:5])
        raise StoreError(f"{'No' if not matches else 'More than one'} run matches {run_id!r} under {store.home} (newest: {near}).")
    return matches[0]


def load(run_id: str | None = None, home: str | Path | None = None) -> RunView:
    """A stored run by id (or a unique prefix; the newest without one), from `home` (else $BNVIZ_HOME, else ./bnviz-runs)."""
    store = Store(home)
    return RunView(store, _resolve(store, run_id))


def compare(*runs: RunView | str, home: str | Path | None = None) -> Comparison:
    """The Compare view of two or more runs, given as run objects or ids."""
    if len(runs) < 2:
        raise ValueError("bnviz.compare needs two runs or more, e.g. bnviz.compare(run_a, run_b).")
    return Comparison([r if isinstance(r, RunView) else load(r, home) for r in runs])


class LivePanel:
    """The panel a Probe shows under the notebook cell while `fit` runs: redrawn in place (one display
    id) at most every LIVE_EVERY_S seconds and within LIVE_COST_SHARE of the time, never raising:
    a display that fails turns the panel off, not the probe."""

    def __init__(self, store: Store, run_id: str, total_steps: int | None, flush: Callable[[], None]):
        self.store, self.run_id, self.total_steps, self.flush = store, run_id, total_steps, flush
        self.handle = None
        self.next_at = 0.0
        self.updates = 0
        self.seconds = 0.0  # spent drawing, for the benchmark (bench.notebook)
        self.clock: Callable[[], float] = time.monotonic  # the panel's own, so a test can set it alone

    def start(self) -> None:
        from IPython.display import display

        def show() -> object:
            if script := plotlyjs_once():  # an output of its own: updating the panel replaces the panel's output
                display({"text/html": script, "text/plain": ""}, raw=True)
            waiting = f"bnviz: recording run {self.run_id}; the panel draws after {LIVE_EVERY_S:g} s of training"
            return display({"text/html": f"<p>{html.escape(waiting)}</p>", "text/plain": waiting}, raw=True, display_id=True)

        started = time.perf_counter()
        self.handle = self._safely(show)
        self.seconds += time.perf_counter() - started
        self.next_at = self.clock() + LIVE_EVERY_S  # a fit shorter than that draws once, at its end

    def step(self) -> None:
        """After a training step: redraw if it is time."""
        if self.handle is not None and self.clock() >= self.next_at:
            self.refresh()

    def refresh(self) -> None:
        """Redraw now, then wait LIVE_EVERY_S, longer if redrawing took more than LIVE_COST_SHARE of the time."""
        if self.handle is None:
            return
        started, cpu_started = self.clock(), time.perf_counter()
        if self._safely(lambda: self.handle.update(self._bundle(), raw=True) or True):
            self.updates += 1
        self.seconds += time.perf_counter() - cpu_started
        self.next_at = started + max(LIVE_EVERY_S, (self.clock() - started) / LIVE_COST_SHARE)

    def _bundle(self) -> dict[str, str]:
        self.flush()
        data = self.store.load_run(self.run_id)
        total = f"/{self.total_steps:,}" if self.total_steps else ""
        status = f"bnviz: step {data.steps_trained:,}{total}, {len(data.probes)} probe records"
        return {"text/html": figure_html(figures.live_figure(data, self.total_steps)), "text/plain": status}

    def _safely(self, show: Callable[[], object]) -> object:
        """show(), or None after turning the panel off with one line when the front end fails."""
        try:
            return show()
        except Exception as exc:  # the notebook front end is not the user's training: never stop it
            self.handle = None
            print(f"bnviz: the live panel stopped ({type(exc).__name__}: {exc}); recording goes on.", file=sys.stderr)
            return None
