"""Room for a figure's text, computed from the text itself: the one place that sizes margins, legends,
panel gaps and heights for every bnviz figure, so that no text prints over another at any scale.

Plotly never wraps text and places titles, subplot titles and horizontal legends at fixed spots: a
subtitle longer than the chart runs off it, a second subtitle line lands on the panel titles, a legend
with more rows than its margin grows over the axis title. `fit` wraps each text to the width it has
(at `CHAR_EM` of its font size per character, a little wider than Arial's/Liberation Sans' average,
so the estimate errs towards one line too many) and then, top to bottom, reserves

    pad · title lines · subtitle lines · top panel titles | panels with gaps | x ticks · x title · legend rows · pad

in pixels, keeps the requested height when the panels still get `min_panel` px each, else grows it.
Pure: a figure in, the same figure out (laid out); widths are CSS pixels of the chart's container.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

CHAR_EM = 0.56  # average glyph width of mixed text, in em of its font size (Arial/Liberation Sans: ~0.5)
LINE_EM = 1.3  # Plotly's line spacing for multi-line text
# Where Plotly draws a title anchored at its top and the subtitle under it, in em of their fonts (measured in
# Chromium with plotly.js 3: a one-line title's box starts 0.2 em above its y, a longer one's 0.9 em; a box is
# 0.23 em (title) or 0.15 em (subtitle) shorter than its lines; a one-line subtitle starts 1.38 em under the
# title's box, a longer one 0.68 em).
TITLE_EM = {"above, one line": 0.2, "above, lines": 0.9, "descent": 0.15, "subtitle gap": 1.4, "subtitle gap, lines": 0.7}
SCREEN_FONT = 13  # px: the base font at scale 1 (bnviz.figures.BASE_FONT)
PAD = 10  # px at scale 1 between the canvas edge and the first/last text, and between text blocks
LEGEND_SYMBOL = 40  # px before a legend entry's text (plotly.js: itemwidth 30 + 2 × itemGap 5)
LEGEND_GAP = 14  # px after a legend entry's text, before the next entry on its row
LEGEND_ROW_PAD = 10  # px at scale 1 a legend row takes beyond its lines, and the legend once more (plotly.js: item gaps, border pad)
TICK_HALF_EM = 0.7  # how far a panel's top tick label reaches above it, in em of the base font
MIN_PANEL = 110  # px at scale 1: the least height of one panel (a few tick labels and its data)
# Chart widths (px) the dashboard lays text out for; a chart wider than its estimate only has spare room.
DEFAULT_WIDTH = 900  # a full-width chart on a 1280–1440 screen with the sidebar open (1440: ~940)
HALF_WIDTH = 440  # one of two charts side by side there (1440×900: ~460 each)
PRESENTATION_WIDTH = 1120  # a full-width chart at 1280×720 in the presentation layout (sidebar folded)
_TAG = re.compile(r"<[^>]+>")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass(frozen=True)
class Fonts:
    """The font sizes (px) a figure draws its texts at, from its layout or else its template."""

    base: float
    title: float
    subtitle: float
    legend: float

    @classmethod
    def of(cls, fig: go.Figure) -> Fonts:
        """Read them the way Plotly resolves them: the layout's value, else the template's."""
        layout, template = fig.layout, template_layout(fig)
        base = layout.font.size or _get(template, "font", "size") or 12
        title = layout.title.font.size or _get(template, "title", "font", "size") or round(base * 1.4)
        subtitle = layout.title.subtitle.font.size or base
        return cls(base, title, subtitle, layout.legend.font.size or _get(template, "legend", "font", "size") or base)

    @property
    def scale(self) -> float:
        """How much larger than the screen's base font the text is: margins and pads follow it."""
        return self.base / SCREEN_FONT


def template_layout(fig: go.Figure) -> dict:
    """The layout of `fig`'s template as a plain dict: plotly reads a template's properties one by one
    about ten times slower than the figure's own (0.4 ms a margin)."""
    return fig.layout.template.layout.to_plotly_json()


def _get(tree: dict, *path: str) -> object:
    """The value at `path` in nested dicts, None where a level is missing."""
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def plain(text: str | None) -> list[str]:
    """The lines of a Plotly label, tags removed and entities counted as one character."""
    lines = _BR.split(text or "")
    return [re.sub(r"&[a-z#0-9]+;", "x", _TAG.sub("", line)) for line in lines]


def text_width(text: str | None, size: float) -> float:
    """Estimated width in px of the longest line of `text` at font `size`."""
    return max((len(line) for line in plain(text)), default=0) * size * CHAR_EM


def line_count(text: str | None) -> int:
    """Lines of a Plotly label (0 when empty)."""
    return len(_BR.split(text)) if text and text.strip() else 0


def wrap(text: str | None, size: float, width: float) -> str:
    """`text` re-wrapped with `<br>` so that no line is wider than `width` px at font `size`; earlier
    wrapping is undone first, so wrapping again for another width or scale is exact."""
    if not text:
        return text or ""
    chars = max(8, int(width / (size * CHAR_EM)))
    flat = " ".join(_BR.split(text))
    return "<br>".join(textwrap.wrap(flat, chars, break_on_hyphens=False)) or flat


def lines_px(lines: int, size: float) -> float:
    """Height in px of `lines` lines of text at font `size`."""
    return lines * size * LINE_EM


# --- the parts of a figure ------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of panels: its y axes, its share of the panels' height, the texts above it (panel titles)."""

    axes: tuple[str, ...]  # layout keys: "yaxis", "yaxis2", ...
    share: float
    titles: tuple[object, ...]  # the annotations Plotly's make_subplots put above the row's panels


def _rows(fig: go.Figure) -> list[Row]:
    """The figure's rows of panels, top first, from its y axes' domains (one row for a plain figure)."""
    by_top: dict[tuple[float, float], list[str]] = {}
    for key, axis in sorted((a.plotly_name, a) for a in fig.select_yaxes()):  # not layout.to_plotly_json(): a deep copy
        if axis.overlaying:
            continue
        domain = tuple(axis.domain) if axis.domain else (0.0, 1.0)
        by_top.setdefault((round(domain[0], 6), round(domain[1], 6)), []).append(key)
    if not by_top:
        by_top[(0.0, 1.0)] = ["yaxis"]
    notes = [n for n in fig.layout.annotations if n.yref == "paper" and n.yanchor == "bottom" and n.showarrow is False]
    rows = []
    for (low, high), axes in sorted(by_top.items(), key=lambda item: -item[0][1]):
        titles = tuple(n for n in notes if n.y is not None and math.isclose(n.y, high, abs_tol=1e-6))
        rows.append(Row(tuple(axes), high - low, titles))
    return rows


def side_margin(fig: go.Figure, side: str, template: dict) -> float:
    """The figure's margin on `side` ("l", "r", ...), its `template`'s (`template_layout`) where the layout sets none."""
    value = fig.layout.margin[side]
    return value if value is not None else _get(template, "margin", side) or 0


def _x_axis_of(fig: go.Figure, y_key: str) -> object:
    """The x axis a y axis is anchored to (`yaxis2` → `xaxis2`)."""
    anchor = fig.layout[y_key].anchor or "x"
    return fig.layout["xaxis" + anchor[1:]]


def _x_labels_px(fig: go.Figure, row: Row, fonts: Fonts) -> float:
    """Height under a row's panels: tick labels (when shown) and the x axis title's lines."""
    height = 0.0
    for key in row.axes:
        axis = _x_axis_of(fig, key)
        if axis.visible is False:
            continue
        ticks = 0.0 if axis.showticklabels is False else lines_px(1, fonts.base) + 12 * fonts.scale  # with the tick marks
        title = lines_px(line_count(axis.title.text), fonts.base) + (10 * fonts.scale if axis.title.text else 0)
        height = max(height, ticks + title)
    return height


def _y_title_px(fig: go.Figure, row: Row, fonts: Fonts) -> float:
    """The longest y axis title of a row, in px: a panel must be at least this tall to hold it."""
    return max((text_width(fig.layout[key].title.text, fonts.base) for key in row.axes), default=0.0)


def _legend_traces(fig: go.Figure) -> list[object]:
    """The traces the legend shows an entry for."""
    shown = [t for t in fig.data if t.showlegend is not False and t.name and t.type != "heatmap"]
    if fig.layout.showlegend is False or (fig.layout.showlegend is None and len(shown) < 2):
        return []
    return shown


def _legend_px(fig: go.Figure, fonts: Fonts, width: float) -> float:
    """Wrap long legend entries to the canvas and return the legend's height: entries packed into rows
    the way Plotly packs a horizontal legend (fixed shares of the width where the figure asks for them)."""
    traces = _legend_traces(fig)
    fraction = fig.layout.legend.entrywidth if fig.layout.legend.entrywidthmode == "fraction" else None
    room = (width * fraction if fraction else width - 2 * PAD * fonts.scale) - LEGEND_SYMBOL - LEGEND_GAP
    rows: list[int] = []  # lines per row
    used = math.inf
    for trace in traces:
        trace.name = wrap(trace.name, fonts.legend, room) if text_width(trace.name, fonts.legend) > room else trace.name
        entry = width * fraction if fraction else LEGEND_SYMBOL + text_width(trace.name, fonts.legend) + LEGEND_GAP
        if used + entry > width - 2 * PAD * fonts.scale:
            rows.append(0)
            used = 0.0
        used += entry
        rows[-1] = max(rows[-1], line_count(trace.name))
    return sum(lines_px(n, fonts.legend) + LEGEND_ROW_PAD * fonts.scale for n in rows) + LEGEND_ROW_PAD * fonts.scale * bool(rows)


def _outside_text_px(fig: go.Figure, fonts: Fonts) -> float:
    """Room above the top panel for bar labels drawn outside their bars (a 100 % bar's label)."""
    return lines_px(1, fonts.base) if any(t.type == "bar" and t.textposition == "outside" for t in fig.data) else 0.0


# --- the layout -----------------------------------------------------------------------------------
def _panel_width(fig: go.Figure, row: Row, note: object, plot: float) -> float:
    """The width in px of the panel a panel title stands over (the x axis of the row centred under it)."""
    domains = [tuple(_x_axis_of(fig, key).domain or (0.0, 1.0)) for key in row.axes]
    low, high = min(domains, key=lambda d: abs((d[0] + d[1]) / 2 - (note.x or 0.5)), default=(0.0, 1.0))
    return (high - low) * plot


def _wrap_texts(fig: go.Figure, fonts: Fonts, width: float, plot: float, rows: Sequence[Row]) -> None:
    """Wrap the title and subtitle to the canvas (`width` px), panel titles and x axis titles to their
    panel, notes in paper space to the plot (`plot` px)."""
    room = width - 2 * PAD * fonts.scale
    title = fig.layout.title
    _rewrap(title, fonts.title, room)
    _rewrap(title.subtitle, fonts.subtitle, room)
    panel_titles = {id(note): row for row in rows for note in row.titles}
    for note in fig.layout.annotations:
        size = note.font.size or fonts.base
        if id(note) in panel_titles:
            _rewrap(note, size, _panel_width(fig, panel_titles[id(note)], note, plot))
        elif note.xref == "paper" and note.yref == "paper":
            _rewrap(note, size, plot * 0.9)
    for axis in _x_axes(fig, rows):
        low, high = axis.domain or (0, 1)
        _rewrap(axis.title, fonts.base, (high - low) * plot)


def _rewrap(holder: object, size: float, width: float) -> None:
    """Wrap `holder.text` (a title, a note) to `width` px, setting it only when it changes: each set is validated."""
    text = holder.text
    wrapped = wrap(text, size, width)
    if text and wrapped != text:
        holder.text = wrapped


def plot_width(fig: go.Figure, width: float) -> float:
    """The px between the left and right margins of a chart `width` px wide."""
    template = template_layout(fig)
    return width - side_margin(fig, "l", template) - side_margin(fig, "r", template)


def _x_axes(fig: go.Figure, rows: Sequence[Row]) -> list[object]:
    """The x axes of every panel."""
    return [_x_axis_of(fig, key) for row in rows for key in row.axes]


def _titles_px(row: Row, fonts: Fonts) -> float:
    """Height of the tallest panel title above a row with its lift over the top tick label (0 without titles)."""
    tallest = max((lines_px(line_count(n.text), n.font.size or fonts.base) for n in row.titles), default=0.0)
    return tallest + TICK_HALF_EM * fonts.base * bool(row.titles)


def _lift_titles(rows: Sequence[Row], fonts: Fonts) -> None:
    """Raise panel titles clear of the top tick label, which reaches half a line above its panel."""
    for note in (n for row in rows for n in row.titles):
        note.yshift = TICK_HALF_EM * fonts.base


def _head_px(fig: go.Figure, fonts: Fonts) -> float:
    """The pad, the title's box and the subtitle's box below it (the offsets Plotly places them at: `TITLE_EM`)."""
    title = fig.layout.title
    lines, sub_lines = line_count(title.text), line_count(title.subtitle.text)
    head = PAD * fonts.scale + (LINE_EM * lines - TITLE_EM["descent"]) * fonts.title
    if sub_lines:
        gap = TITLE_EM["subtitle gap"] if sub_lines == 1 else TITLE_EM["subtitle gap, lines"]
        head += (gap + LINE_EM * sub_lines - TITLE_EM["descent"]) * fonts.subtitle
    return head


def _title_y(fig: go.Figure, fonts: Fonts, height: float) -> float:
    """The container y that puts the top of the title's box `PAD` × scale below the canvas's top edge."""
    above = TITLE_EM["above, one line"] if line_count(fig.layout.title.text) == 1 else TITLE_EM["above, lines"]
    return 1 - (PAD * fonts.scale + above * fonts.title) / height


def _column_gap_px(fig: go.Figure, row: Row, fonts: Fonts) -> float:
    """Room between two panels side by side: the right one's tick labels (about 5 characters, "100%") and y title."""
    titled = max((line_count(fig.layout[key].title.text) for key in row.axes[1:]), default=0)
    return 5 * CHAR_EM * fonts.base + 14 * fonts.scale + lines_px(titled, fonts.base)


def needed_height(fig: go.Figure, width: float, min_panel: float = MIN_PANEL) -> int:
    """The least height (px) at which `fig` holds its text at `width` px with `min_panel` px panels (at scale 1); `fig` is kept."""
    return fit(go.Figure(fig), width, height=1, min_panel=min_panel).layout.height


def fit(fig: go.Figure, width: float = DEFAULT_WIDTH, height: float | None = None, min_panel: float = MIN_PANEL, grow: bool = True) -> go.Figure:
    """Lay `fig` out for a chart `width` px wide: wrap its texts, size the top and bottom margins, the gaps
    between panels and the height (at least `height`, more when the panels would get less than `min_panel`
    px each at scale 1, or less than their y axis titles need), thin the ticks to what the panels hold, and
    place title, subtitle and legend where the reserved room is. Font sizes are read from `fig` (set them,
    e.g. by a scale, first). `grow=False` keeps `height` exactly (a file of a fixed size): the panels get what is left."""
    fonts = Fonts.of(fig)
    pad = PAD * fonts.scale
    rows = _rows(fig)
    plot = plot_width(fig, width)  # fit sets the top and bottom margins only
    _place_columns(fig, rows, fonts, plot)
    _wrap_texts(fig, fonts, width, plot, rows)
    head = _head_px(fig, fonts)
    above_panels = (
        _titles_px(rows[0], fonts) + pad / 2 * bool(rows[0].titles),
        _outside_text_px(fig, fonts),
        TICK_HALF_EM * fonts.base,
    )  # 0.7: a top tick label's upper half
    top = head + pad + max(above_panels)
    legend = _legend_px(fig, fonts, width)
    bottom = pad + _x_labels_px(fig, rows[-1], fonts) + (legend + pad / 2 if legend else 0)
    gaps = [_x_labels_px(fig, upper, fonts) + _titles_px(lower, fonts) + pad * 1.5 for upper, lower in zip(rows, rows[1:], strict=False)]
    total_share = sum(r.share for r in rows)
    panels = max(max(min_panel * fonts.scale, _y_title_px(fig, r, fonts) + pad) * total_share / r.share for r in rows)
    asked = math.ceil(height or fig.layout.height or 0)
    final = max(math.ceil(top + bottom + sum(gaps) + panels), asked) if grow or not asked else asked
    _place_rows(fig, rows, gaps, final - top - bottom)
    _lift_titles(rows, fonts)
    _thin_ticks(fig, rows, fonts, plot, final - top - bottom)
    layout = fig.layout  # set one by one: update() validates the whole update again (~2.5 ms each)
    layout.height, layout.margin.t, layout.margin.b = final, top, bottom
    title, legend = layout.title, layout.legend
    title.yref, title.y, title.yanchor, title.automargin = "container", _title_y(fig, fonts, final), "top", False
    legend.yref, legend.y, legend.yanchor = "container", pad / 2 / final, "bottom"
    legend.xref, legend.x, legend.xanchor = "container", pad / width, "left"
    return fig


def _place_rows(fig: go.Figure, rows: Sequence[Row], gaps: Sequence[float], plot_px: float) -> None:
    """Set each row's y domain so that consecutive rows are `gaps` px apart, keeping their height shares,
    and move each row's panel titles onto its new top."""
    if len(rows) < 2 or plot_px <= 0:
        return
    total_share = sum(r.share for r in rows)
    panels = plot_px - sum(gaps)
    top = 1.0
    for i, row in enumerate(rows):
        bottom = top - panels * row.share / total_share / plot_px
        for key in row.axes:
            fig.layout[key].domain = (max(0.0, bottom), top)
        for note in row.titles:
            note.y = top
        top = bottom - (gaps[i] / plot_px if i < len(gaps) else 0)


def _place_columns(fig: go.Figure, rows: Sequence[Row], fonts: Fonts, plot_px: float) -> None:
    """Space panels side by side `_column_gap_px` apart, keeping their width shares, and centre their titles again."""
    for row in rows:
        axes = sorted((_x_axis_of(fig, key) for key in row.axes), key=lambda a: (a.domain or (0, 1))[0])
        if len(axes) < 2 or plot_px <= 0:
            continue
        shares = [(a.domain[1] - a.domain[0]) for a in axes]
        gap = _column_gap_px(fig, row, fonts) / plot_px
        left = 0.0
        for axis, share in zip(axes, shares, strict=True):
            right = left + (1 - gap * (len(axes) - 1)) * share / sum(shares)
            for note in row.titles:
                if math.isclose(note.x, sum(axis.domain) / 2, abs_tol=1e-6):
                    note.x = (left + right) / 2
            axis.domain = (left, min(1.0, right))
            left = right + gap


def _thin_ticks(fig: go.Figure, rows: Sequence[Row], fonts: Fonts, plot_w: float, plot_h: float) -> None:
    """At most one tick label per 80 px × scale across and 30 px × scale up, one line of text up on a
    category axis (Plotly's own spacing is fixed in px, so larger labels would touch), except where a figure
    sets its ticks itself."""
    for row in rows:
        for key in row.axes:
            x_axis, y_axis = _x_axis_of(fig, key), fig.layout[key]
            if x_axis.dtick is None and x_axis.tickvals is None:
                span = (x_axis.domain or (0, 1))[1] - (x_axis.domain or (0, 1))[0]
                x_axis.nticks = max(2, int(span * plot_w / (80 * fonts.scale)))
            if y_axis.dtick is None and y_axis.tickvals is None:
                span = (y_axis.domain or (0, 1))[1] - (y_axis.domain or (0, 1))[0]
                label = lines_px(1, fonts.base) + 2 * fonts.scale if y_axis.type == "category" else 30 * fonts.scale  # a name per line: every layer
                y_axis.nticks = max(2, int(span * plot_h / label))
