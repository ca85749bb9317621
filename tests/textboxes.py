"""Text boxes of rendered Plotly figures, measured in a real Chromium, and the checks on them.

Why the browser and not kaleido's SVG: an SVG `<text>` carries a position and a font size but no width,
so boxes from it rest on a guess of glyph widths, the very guess bnviz.figlayout makes; Chromium's
`getBoundingClientRect()` of each rendered `text` element is the box a reader sees (rotated axis titles
and multi-line text included). One page loads the plotly.js that ships with the plotly package (no
network) once and draws figure after figure into it, about 0.1 s each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly
import plotly.graph_objects as go


@dataclass(frozen=True)
class Box:
    """A box in CSS pixels from the figure's top-left corner: a text (what it says, for messages, and its
    SVG class: "gtitle", "legendtext", "annotation-text", "xtitle" ...) or a panel."""

    text: str
    left: float
    top: float
    right: float
    bottom: float
    kind: str = ""

    @property
    def height(self) -> float:
        return self.bottom - self.top


TOLERANCE = 1.0  # px: boxes that share an edge or overlap by anti-aliasing slack do not count as overlapping


def overlapping(boxes: Sequence[Box], tolerance: float = TOLERANCE) -> list[tuple[Box, Box]]:
    """Every pair of boxes whose intersection is more than `tolerance` px in both directions."""
    return [
        (a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if min(a.right, b.right) - max(a.left, b.left) > tolerance and min(a.bottom, b.bottom) - max(a.top, b.top) > tolerance
    ]


def outside(boxes: Iterable[Box], width: float, height: float, tolerance: float = TOLERANCE) -> list[Box]:
    """The boxes that reach beyond a `width` × `height` canvas by more than `tolerance` px."""
    return [b for b in boxes if b.left < -tolerance or b.top < -tolerance or b.right > width + tolerance or b.bottom > height + tolerance]


PAGE = "<html><head><meta charset='utf-8'><script>{js}</script></head><body style='margin:0'><div id='fig'></div></body></html>"
# The boxes of a drawn Plotly chart under `root` (the plot's div or an element around it), from its top-left corner.
COLLECT = """(root) => {
  const plot = root.classList.contains('js-plotly-plot') ? root : root.querySelector('.js-plotly-plot');
  const origin = plot.getBoundingClientRect();
  const texts = [];
  for (const node of plot.querySelectorAll('svg text')) {
    const text = node.textContent.trim();
    const r = node.getBoundingClientRect();
    if (!text || r.width === 0 || r.height === 0 || getComputedStyle(node).visibility === 'hidden') continue;
    if (node.closest('[display="none"]') || node.closest('.hoverlayer')) continue;
    const kind = node.getAttribute('class') || node.parentNode.getAttribute('class') || '';
    texts.push([text, r.left - origin.left, r.top - origin.top, r.right - origin.left, r.bottom - origin.top, kind]);
  }
  const panels = Object.entries(plot._fullLayout._plots).map(([name, p]) =>
    [name, p.xaxis._offset, p.yaxis._offset, p.xaxis._offset + p.xaxis._length, p.yaxis._offset + p.yaxis._length, 'panel']);
  return {texts: texts, panels: panels, width: plot._fullLayout.width, height: plot._fullLayout.height};
}"""
MEASURE = (
    """async ([fig, width]) => {
  const div = document.getElementById('fig');
  await Plotly.newPlot(div, fig.data, Object.assign({}, fig.layout, {width: width}), {staticPlot: true});
  const found = ("""
    + COLLECT
    + """)(div);
  Plotly.purge(div);
  return found;
}"""
)


def plotly_page(page: object) -> object:
    """`page` (Playwright) with the bundled plotly.js loaded and an empty figure container."""
    js = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    page.set_content(PAGE.format(js=js), timeout=180_000)  # parsing 4.6 MB of plotly.js: seconds, more on a busy machine
    return page


@dataclass(frozen=True)
class Drawn:
    """A figure as Chromium drew it: its texts, its panels (plot areas) and its size."""

    texts: list[Box]
    panels: list[Box]
    width: float
    height: float


def draw(page: object, fig: go.Figure, width: int) -> Drawn:
    """Every visible text and every panel of `fig` drawn `width` px wide on a `plotly_page`."""
    return _drawn(page.evaluate(MEASURE, [json.loads(fig.to_json()), width]))


def drawn_chart(element: object) -> Drawn:
    """The texts and panels of a chart already drawn in a page (a Playwright locator of it or around it)."""
    return _drawn(element.evaluate(COLLECT))


def _drawn(found: dict) -> Drawn:
    return Drawn([Box(*row) for row in found["texts"]], [Box(*row) for row in found["panels"]], found["width"], found["height"])


OUTSIDE_PANELS = ("gtitle", "gtitle-subtitle", "legendtext")  # texts that belong around the panels, never on them


def problems(drawn: Drawn) -> list[str]:
    """What is wrong with the text of a drawn figure, one line each: texts that overlap, texts that leave
    the canvas, and titles, subtitles or legend entries drawn over a panel."""
    found = [f"overlap: {a.text[:40]!r} and {b.text[:40]!r}" for a, b in overlapping(drawn.texts)]
    found += [f"off the {drawn.width:.0f}×{drawn.height:.0f} canvas: {b.text[:40]!r}" for b in outside(drawn.texts, drawn.width, drawn.height)]
    around = [b for b in drawn.texts if b.kind in OUTSIDE_PANELS]
    pairs = [(a, b) for a, b in overlapping([*around, *drawn.panels]) if (a.kind == "panel") != (b.kind == "panel")]
    found += [f"on a panel: {(b if a.kind == 'panel' else a).text[:40]!r}" for a, b in pairs]
    return found
