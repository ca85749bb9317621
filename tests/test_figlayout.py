"""bnviz.figlayout (room for wrapped text) and the overlap checker of tests/textboxes.py, without a browser;
the drawn figures are checked in tests/test_figure_text.py."""

from __future__ import annotations

import inspect

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz import figlayout
from bnviz import figures as F
from bnviz.summary import history_figures
from tests.test_figure_text import FIGURES
from tests.test_figures import make_data
from tests.textboxes import Box, Drawn, outside, overlapping, problems

LONG = "momentum 0.99: after t steps the initial values (0 and 1) still weigh 0.99ᵗ · at step 114, against the population"


def test_overlapping_pairs_share_area_not_only_an_edge():
    a = Box("a", 0, 0, 100, 20)
    assert overlapping([a, Box("b", 50, 10, 150, 30)]) == [(a, Box("b", 50, 10, 150, 30))]
    assert overlapping([a, Box("under", 0, 20, 100, 40)]) == []  # touching edges
    assert overlapping([a, Box("slack", 0, 19.5, 100, 40)]) == []  # within the 1 px tolerance
    assert overlapping([a, Box("right", 101, 0, 200, 20)]) == []
    assert len(overlapping([a, Box("inside", 10, 5, 20, 10), Box("far", 500, 500, 510, 510)])) == 1


def test_outside_finds_boxes_past_the_canvas():
    boxes = [Box("in", 0, 0, 100, 20), Box("cut", 1300, 0, 1400, 20), Box("above", 10, -8, 50, 5)]
    assert [b.text for b in outside(boxes, 1360, 500)] == ["cut", "above"]


def test_problems_name_titles_on_panels_but_not_tick_labels():
    panel = Box("xy", 80, 100, 500, 300, "panel")
    texts = [Box("subtitle", 10, 60, 400, 110, "gtitle-subtitle"), Box("0.5", 60, 150, 78, 165, "")]
    assert problems(Drawn(texts, [panel], 600, 400)) == ["on a panel: 'subtitle'"]


def test_wrap_fits_the_width_and_wraps_again_exactly():
    narrow = figlayout.wrap(LONG, 26, 500)
    assert narrow.count("<br>") >= 2 and all(figlayout.text_width(line, 26) <= 500 for line in narrow.split("<br>"))
    assert figlayout.wrap(narrow, 13, 2000) == LONG  # earlier wrapping undone
    assert figlayout.line_count("") == 0 and figlayout.line_count("a<br>b") == 2


def _two_rows(subtitle: str) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, subplot_titles=("loss", "accuracy"), vertical_spacing=0.02)
    fig.add_scatter(x=[0, 1], y=[0, 1], row=1, col=1).add_scatter(x=[0, 1], y=[1, 0], row=2, col=1)
    fig.update_layout(template=F.TEMPLATE, height=300, title=dict(text="Title", subtitle=dict(text=subtitle)))
    fig.update_xaxes(title_text="training step")
    return fig


def test_fit_reserves_the_wrapped_subtitle_and_the_panel_titles():
    wide, narrow = figlayout.fit(_two_rows(LONG), 1400), figlayout.fit(_two_rows(LONG), 400)
    assert narrow.layout.title.subtitle.text.count("<br>") >= 2 and "<br>" not in wide.layout.title.subtitle.text
    # two more subtitle lines, less the 0.7 em Plotly saves under a multi-line title (figlayout.TITLE_EM)
    assert narrow.layout.margin.t - wide.layout.margin.t >= 2 * figlayout.lines_px(1, 13) - 0.7 * 13 - 0.01
    plot = narrow.layout.height - narrow.layout.margin.t - narrow.layout.margin.b
    gap = (narrow.layout.yaxis.domain[0] - narrow.layout.yaxis2.domain[1]) * plot
    assert gap >= figlayout.lines_px(1, 16) + 12 + 13  # the accuracy title (16 px) and the loss panel's x labels
    assert narrow.layout.annotations[1].y == narrow.layout.yaxis2.domain[1]  # the title moved with its panel
    for fig in (wide, narrow):
        assert min(_panel_heights(fig)) >= figlayout.MIN_PANEL - 0.5 and fig.layout.height > 300  # grown from 300 px


def test_fit_keeps_an_exact_height_when_asked():
    fig = figlayout.fit(_two_rows(LONG), 1280, 720, grow=False)
    assert fig.layout.height == 720 and min(_panel_heights(fig)) > figlayout.MIN_PANEL


def _panel_heights(fig: go.Figure) -> list[float]:
    plot = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    return [(d[1] - d[0]) * plot for d in (fig.layout.yaxis.domain, fig.layout.yaxis2.domain)]


def test_side_by_side_history_charts_give_the_loss_panel_its_room():
    """Diagnose at 1440×900: the symptom beside the cause, each ~440 px wide; the loss panel was ~60 px."""
    for scale in (1.0, 2.0):
        curves = history_figures(make_data(), scale=scale, width=figlayout.HALF_WIDTH)["curves"]
        assert min(_panel_heights(curves)) >= figlayout.MIN_PANEL * scale - 0.5
        legend = [t.name for t in curves.data if t.showlegend is not False]
        assert all(figlayout.text_width(name, curves.layout.legend.font.size or 12) < figlayout.HALF_WIDTH for name in legend)


def test_every_public_figure_function_is_drawn_by_the_browser_test():
    """A new figure function fails here until tests/test_figure_text.py draws it."""
    public = {
        name
        for name, f in inspect.getmembers(F, inspect.isfunction)
        if not name.startswith("_") and f.__module__ == F.__name__ and inspect.signature(f).return_annotation == "go.Figure"
    }
    assert len(public) >= 12 and public - {"scale_text"} <= set(FIGURES), public - set(FIGURES)
