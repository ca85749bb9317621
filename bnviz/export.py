"""Downloads: figures as PNG/SVG/PDF/HTML, run data as CSV, and a self-contained HTML report.

Static images need kaleido ≥ 1, which drives a Chromium-based browser (here Debian's
/usr/bin/chromium). Starting the browser costs ~3 s, so one browser is kept open for the life of
the process on a private event-loop thread and every image is rendered there (~0.2 s each).
kaleido's own `start_sync_server` does the same, but its request queue is shared by all callers
without a lock (two Streamlit sessions exporting at once can swap images) and it waits forever
if the browser fails to start; `_Renderer` below uses the same public `kaleido.Kaleido` with a
lock and timeouts. MathJax is disabled (kaleido would fetch it from a CDN; no network here).
HTML needs no browser: plotly.js is inlined so the file works offline (in the report, once and
gzip-compressed: see REPORT_LOADER_JS).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import gzip
import html
import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from bnviz import figlayout, figures
from bnviz.diagnose import FEW_LAYERS, all_layer_figures, diagnose
from bnviz.labels import unique_labels
from bnviz.records import RunData

STATIC_FORMATS = ("png", "svg", "pdf")
FORMATS = (*STATIC_FORMATS, "html")
MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html", "csv": "text/csv"}
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
EXPORT_WIDTH, PNG_SCALE = 1000, 2  # px; PNG at twice the size so it stays sharp on slides
START_TIMEOUT_S, RENDER_TIMEOUT_S, RETRY_AFTER_S = 60, 90, 60
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class ExportError(RuntimeError):
    """A static image could not be made here (no browser, browser crashed, timed out)."""


# --- static images ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _browser() -> tuple[str | None, str]:
    """(path of a Chromium-based browser, '') or (None, why not): `BROWSER_PATH`, then PATH."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return None, "kaleido is not installed (pip install 'kaleido>=1'), so only HTML export works"
    if env := os.environ.get("BROWSER_PATH"):
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env, ""
        return None, f"BROWSER_PATH={env!r} is not an executable file, so only HTML export works"
    for name in BROWSER_NAMES:
        if path := shutil.which(name):
            return path, ""
    return None, "No Chromium or Chrome found (apt-get install chromium), so only HTML export works"


_failure: tuple[float, str] | None = None  # (when, why) a browser was found but failed to start


def _recent_failure() -> str:
    """Why the browser failed to start, if it did less than RETRY_AFTER_S ago (else '')."""
    return _failure[1] if _failure and time.monotonic() - _failure[0] < RETRY_AFTER_S else ""


def static_export_available() -> tuple[bool, str]:
    """Whether PNG/SVG/PDF export works here, and a one-line reason when it does not (cached;
    a browser that failed to start counts as unavailable for RETRY_AFTER_S, then is tried again)."""
    path, reason = _browser()
    if failure := _recent_failure():
        return False, failure
    return path is not None, reason


class _Renderer:
    """One headless browser kept open on its own event-loop thread; safe to call from any thread."""

    def __init__(self, browser: str):
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bnviz-kaleido", daemon=True)
        self._thread.start()
        try:
            self._kaleido = self._call(self._open(browser), START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise

    async def _open(self, browser: str):
        """Create and open the browser on the loop thread (choreographer requires one thread)."""
        import kaleido

        k = kaleido.Kaleido(path=browser, mathjax=False, timeout=RENDER_TIMEOUT_S)
        await k.open()
        return k

    def _call(self, coroutine, timeout: float):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout)

    def render(self, fig: go.Figure, opts: dict) -> bytes:
        """The image bytes of `fig`; one render at a time."""
        with self._lock:
            return self._call(self._kaleido.calc_fig(fig, opts=opts), RENDER_TIMEOUT_S)

    def close(self) -> None:
        """Close the browser and stop the loop thread (best effort, bounded in time)."""
        with contextlib.suppress(Exception):  # closing a dead browser may fail in many ways
            self._call(self._kaleido.close(), 15)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


_renderer: _Renderer | None = None
_renderer_lock = threading.Lock()


def _get_renderer() -> _Renderer:
    """The process-wide renderer, started on first use (~3 s)."""
    global _renderer, _failure
    with _renderer_lock:
        if _renderer is None:
            available, reason = static_export_available()
            if not available:
                raise ExportError(reason)
            path = _browser()[0]
            try:
                _renderer = _Renderer(path)
            except Exception as exc:
                why = exc.args[0] if exc.args else exc
                _failure = (
                    time.monotonic(),
                    f"The browser at {path} could not be started ({type(exc).__name__}: {why}), so only HTML export works",
                )
                raise ExportError(_failure[1]) from exc
            atexit.register(_renderer.close)
        return _renderer


def _reset_renderer(renderer: _Renderer) -> None:
    """Drop a renderer whose browser failed, so the next export starts a fresh one."""
    global _renderer
    with _renderer_lock:
        if _renderer is renderer:
            _renderer = None
    renderer.close()


def _static_bytes(fig: go.Figure, fmt: str, png_scale: float = PNG_SCALE) -> bytes:
    """PNG/SVG/PDF bytes through the long-lived browser (a PNG at `png_scale` times the figure's size)."""
    opts = {
        "format": fmt,
        "width": fig.layout.width or EXPORT_WIDTH,
        "height": fig.layout.height or 500,
        "scale": png_scale if fmt == "png" else 1,
    }
    renderer = _get_renderer()
    try:
        return renderer.render(fig, opts)
    except TimeoutError as exc:
        _reset_renderer(renderer)
        raise ExportError(f"Rendering the {fmt.upper()} took longer than {RENDER_TIMEOUT_S} s") from exc
    except Exception as exc:
        _reset_renderer(renderer)
        raise ExportError(f"Rendering the {fmt.upper()} failed: {type(exc).__name__}: {exc}") from exc


def png_bytes(fig: go.Figure, pixel_ratio: float) -> bytes:
    """`fig` as a PNG of `pixel_ratio` times its layout's width and height (bnviz.slides' decks)."""
    return _static_bytes(fig, "png", pixel_ratio)


def figure_html(fig: go.Figure) -> str:
    """A standalone HTML page of one figure with plotly.js inlined (works offline)."""
    return fig.to_html(full_html=True, include_plotlyjs=True, config=PLOT_CONFIG)


@dataclass(frozen=True)
class SizePreset:
    """An export size: width × height in CSS pixels and a base font size (titles scale with it)."""

    width: int | None  # None: the figure's own size
    height: int | None
    font: int | None


SIZE_PRESETS = {
    "screen": SizePreset(None, None, None),  # as the dashboard shows it
    "presentation": SizePreset(1280, 720, 26),  # the projector's size, text as in the dashboard's presentation layout (2×)
    "slide": SizePreset(1600, 900, 24),  # 16:9, read from the back of a room
    "paper": SizePreset(700, 440, 10),  # one column at 300 dpi (PNG scale 2 gives 1400 px)
}


MIN_EXPORT_FONT = 10  # px: the smallest base font a size preset shrinks a crowded chart's text to


def sized(fig: go.Figure, preset: str = "screen") -> go.Figure:
    """A copy of `fig` at a size preset (SIZE_PRESETS): width and height, and every text (titles,
    legend, subplot titles, annotations) scaled as bnviz.figures.scale_text does for the
    presentation layout, so that the base font becomes the preset's, and the text laid out again for
    the preset's width (bnviz.figlayout.fit) at exactly its height; where the text would not fit that
    height with panels of `figlayout.MIN_PANEL` px, the base font shrinks a pixel at a time (not below
    `MIN_EXPORT_FONT`) until it does."""
    size = SIZE_PRESETS[preset]
    if not size.width:
        return go.Figure(fig)
    return fit_exactly(fig, size.width, size.height, size.font)


def fit_exactly(fig: go.Figure, width: int, height: int, font: float, min_panel: float = figlayout.MIN_PANEL) -> go.Figure:
    """A copy of screen figure `fig` laid out at exactly `width` × `height` with base font `font` px, or
    smaller (a pixel at a time, not below MIN_EXPORT_FONT) where its text would leave the panels less
    than `min_panel` px (at scale 1): smaller text, never text over text."""
    while font > MIN_EXPORT_FONT and figlayout.needed_height(_scaled(fig, font), width, min_panel) > height:
        font -= 1
    return figlayout.fit(_scaled(fig, font), width, height, min_panel, grow=False).update_layout(width=width)


def _scaled(fig: go.Figure, font: float) -> go.Figure:
    """A copy of `fig` with its base font `font` px and every other text in proportion."""
    return figures.scale_text(go.Figure(fig), font / figures.BASE_FONT)


def figure_bytes(fig: go.Figure, fmt: str, preset: str = "screen") -> bytes:
    """`fig` as png, svg, pdf (via kaleido and Chromium) or standalone html at a size preset; raises
    ExportError when no browser is available for the static formats (check static_export_available first)."""
    fig = sized(fig, preset)
    fmt = fmt.lower().lstrip(".")
    if fmt == "html":
        return figure_html(fig).encode("utf-8")
    if fmt not in STATIC_FORMATS:
        raise ValueError(f"Unsupported export format. Received: fmt={fmt!r}; choose one of {', '.join(FORMATS)}")
    return _static_bytes(fig, fmt)


# --- CSV -------------------------------------------------------------------------------------
def run_frame(data: RunData) -> pd.DataFrame:
    """Per step: fit's loss and accuracy joined with the probe's two-mode accuracy and loss."""
    probes = data.probes.rename(columns={c: f"probe_{c}" for c in data.probes.columns if c not in ("step", "epoch")})
    merged = data.steps.merge(probes, on="step", how="outer", suffixes=("", "_probe")).sort_values("step")
    if "epoch_probe" in merged:
        merged["epoch"] = merged["epoch"].fillna(merged.pop("epoch_probe"))
    return merged.reset_index(drop=True)


def run_csv(data: RunData) -> bytes:
    """run_frame as CSV bytes (UTF-8)."""
    return run_frame(data).to_csv(index=False).encode("utf-8")


PROBE_COLUMNS = ("moving_mean", "moving_var", "batch_mean", "batch_var", "pop_mean", "pop_var")


def probes_frame(data: RunData) -> pd.DataFrame:
    """Long format, one row per layer, probe step and channel: moving/batch/population mean and variance."""
    parts = []
    for name, trace in data.layers.items():
        probes, channels = trace.moving_mean.shape
        part = {"layer": name, "step": np.repeat(trace.steps, channels), "channel": np.tile(np.arange(channels), probes)}
        part.update({c: np.asarray(getattr(trace, c), dtype=float).ravel() for c in PROBE_COLUMNS})
        parts.append(pd.DataFrame(part))
    if not parts:
        return pd.DataFrame(columns=["layer", "step", "channel", *PROBE_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def probes_csv(data: RunData) -> bytes:
    """probes_frame as CSV bytes (UTF-8); batch statistics are empty at step 0, population statistics
    where the record did not measure them (see `ProbeConfig.population_every`)."""
    return probes_frame(data).to_csv(index=False).encode("utf-8")


# --- HTML report -----------------------------------------------------------------------------
REPORT_CSS = """
body { font-family: Inter, 'Segoe UI', Helvetica, Arial, sans-serif; color: #222; max-width: 1100px; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.7rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.5rem; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; } th { background: #f5f5f5; }
td:first-child, th:first-child { text-align: left; }
.figure { margin: 1rem 0 2rem; } .meta { color: #666; }
"""


# The report carries plotly.js gzip-compressed (≈ 1.4 MB of base64 instead of 4.7 MB) and unpacks it
# in the browser with DecompressionStream (every current browser), so the one file still works offline.
# Each figure is a div with its JSON beside it; the loader draws them all once plotly.js is defined.
REPORT_LOADER_JS = """
(async () => {
  const packed = Uint8Array.from(atob(document.getElementById("plotlyjs-gzip").textContent.trim()), c => c.charCodeAt(0));
  const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"));
  (0, eval)(await new Response(stream).text());
  for (const spec of document.querySelectorAll("script.figure-spec")) {
    const fig = JSON.parse(spec.textContent);
    Plotly.newPlot(spec.dataset.target, fig.data, fig.layout, CONFIG);
  }
})();
"""


@lru_cache(maxsize=1)
def _packed_plotlyjs() -> str:
    """plotly.js, gzip-compressed and base64-encoded (computed once per process)."""
    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9)).decode("ascii")


def _figure_div(fig: go.Figure, index: int) -> str:
    """One figure: an empty div and its JSON, drawn by the report's loader ('</' escaped in the JSON)."""
    spec = fig.to_json().replace("</", "<\\/")
    return (
        f'<div class="figure"><div id="figure-{index}"></div>'
        f'<script type="application/json" class="figure-spec" data-target="figure-{index}">{spec}</script></div>'
    )


def _table_html(frame: pd.DataFrame) -> str:
    """An accuracy table with percentages; labels are escaped by pandas."""
    shown = frame.map(lambda v: "–" if pd.isna(v) else f"{v:.1%}")
    return shown.reset_index().to_html(index=False, escape=True, border=0)


def _text_section(heading: str, text: str, anchor: str) -> str:
    """A heading and plain text (escaped; blank lines separate paragraphs)."""
    paragraphs = [p.strip() for p in str(text).split("\n\n") if p.strip()]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f'<section><h2 id="{anchor}">{html.escape(str(heading))}</h2>{body}</section>'


def key_layer(data: RunData) -> str | None:
    """The BN layer a run's report shows: the first whose own figures are off (where the error
    starts), else the first."""
    layers = all_layer_figures(data) if data.layers else []
    first = next((f for f in layers if f.own_severity in ("critical", "warning")), layers[0] if layers else None)
    return first.name if first else None


def _run_figures(data: RunData, with_theory: bool) -> list[go.Figure]:
    """One run's figures, none repeated elsewhere: training curves, the mᵗ theory unless the
    comparison shows it for every run, every layer at a glance beyond FEW_LAYERS, and histograms and drift
    of the layer where the error starts."""
    figs = [figures.training_curves(data)]
    if with_theory and data.run.config.arch.has_moving_stats:
        figs.append(figures.ema_theory_figure(data.run.momentum, data.steps_trained))
    if len(data.layers) > FEW_LAYERS:
        figs.append(figures.layer_overview_figure(data))
    if (layer := key_layer(data)) is not None:
        figs += [figures.activation_histograms(data, layer), figures.drift_figure(data, layer)]
    return figs


def _findings_html(data: RunData) -> str:
    """The run's diagnosis: the verdict, then every finding, severity first."""
    items = "".join(
        f"<li><b>[{f.severity}] {html.escape(f.title)}</b><br>{html.escape(f.detail)}" + "".join(f"<br>→ {html.escape(r)}" for r in f.remedies) + "</li>"
        for f in diagnose(data)
    )
    return f'<h3>Findings</h3><ul class="findings">{items}</ul>'


def _run_section(data: RunData, anchor: str, label: str, with_theory: bool, counter: Iterator[int]) -> str:
    """One run: heading, status line, accuracy table, findings and its figures."""
    run = data.run
    meta = f"id {run.id} · preset {run.preset or 'custom'} · status {run.status} · {data.steps_trained} steps"
    parts = [f'<h2 id="{anchor}">{html.escape(label)}</h2>', f'<p class="meta">{html.escape(meta)}</p>']
    if data.evaluations.get("final"):
        parts.append(_table_html(figures.accuracy_frame([data])))
    parts.append(_findings_html(data))
    parts += [_figure_div(f, next(counter)) for f in _run_figures(data, with_theory)]
    return "<section>" + "".join(parts) + "</section>"


def comparison_figures(runs: Sequence[RunData]) -> list[go.Figure]:
    """Figures across runs: final and probe accuracy, the drift of the first BN layer they share,
    and the mᵗ theory once, with every run's momentum."""
    common = [layer for layer in runs[0].layers if all(layer in d.layers for d in runs)] if runs else []
    figs = [figures.final_accuracy_figure(runs), figures.compare_accuracy_figure(runs)]
    figs += [figures.compare_drift_figure(runs, common[0])] if common else []
    bn = [d for d in runs if d.run.config.arch.has_moving_stats]
    if bn:
        figs.append(figures.ema_theory_figure(bn[0].run.momentum, bn[0].steps_trained, [d.run.momentum for d in bn[1:]] + [0.99, 0.9, 0.8]))
    return figs


def _comparison_section(runs: Sequence[RunData], counter: Iterator[int]) -> str:
    """The comparison, when there are several runs."""
    if len(runs) < 2:
        return ""
    return '<section><h2 id="comparison">Comparison</h2>' + "".join(_figure_div(f, next(counter)) for f in comparison_figures(runs)) + "</section>"


def html_report(runs: Sequence[RunData], title: str, sections: Sequence[tuple[str, str]] = ()) -> str:
    """One self-contained HTML page (plotly.js inlined once): title, a contents list, the accuracy
    table, the extra text sections, a comparison for several runs, then each run with its findings
    and the figures no other section shows."""
    summary = _table_html(figures.accuracy_frame(runs)) if runs else "<p>No runs.</p>"
    labels = unique_labels([d.run for d in runs])
    anchors = {d.run.id: f"run-{i + 1}" for i, d in enumerate(runs)}
    toc = [("accuracy", "Accuracy (final evaluation)"), *((f"section-{i + 1}", h) for i, (h, _) in enumerate(sections))]
    toc += [("comparison", "Comparison")] if len(runs) > 1 else []
    toc += [(anchors[d.run.id], labels[d.run.id]) for d in runs]
    contents = "<nav><h2>Contents</h2><ol>" + "".join(f'<li><a href="#{a}">{html.escape(str(t))}</a></li>' for a, t in toc) + "</ol></nav>"
    body = [f"<h1>{html.escape(str(title))}</h1>", contents, '<h2 id="accuracy">Accuracy (final evaluation)</h2>', summary]
    body += [_text_section(heading, text, f"section-{i + 1}") for i, (heading, text) in enumerate(sections)]
    counter = itertools.count(1)
    body += [_comparison_section(runs, counter)] + [_run_section(d, anchors[d.run.id], labels[d.run.id], len(runs) < 2, counter) for d in runs]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(str(title))}</title><style>{REPORT_CSS}</style>"
        f'<script type="application/octet-stream" id="plotlyjs-gzip">{_packed_plotlyjs()}</script></head>'
        f"<body>{''.join(body)}<script>{REPORT_LOADER_JS.replace('CONFIG', json.dumps(PLOT_CONFIG))}</script></body></html>\n"
    )
