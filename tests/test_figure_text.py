"""Every figure drawn by Chromium at the sizes the dashboard and the exports use, screen text and 2×:
no text box overlaps another, none leaves the canvas, titles and legends stay off the panels, and
each panel keeps a readable height. Data: one real `bn` run (the Story's chapter 3 model, trained
small) and hand-made runs for the comparisons and sweeps. Boxes from the browser: tests/textboxes.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from bnviz import export, figlayout
from bnviz import figures as F
from bnviz.figures import PRESENTATION_SCALE
from bnviz.records import RunData
from bnviz.slides import SCREEN_CHART, SLIDE_MIN_PANEL, on_screen
from bnviz.store import Store
from bnviz.summary import history_figures
from tests.browser import BROWSER_MODULE, chromium, streamlit_server
from tests.many_layers import many_layer_data
from tests.test_figures import make_data, tiny_run
from tests.textboxes import draw, drawn_chart, plotly_page, problems

pytestmark = BROWSER_MODULE


@dataclasses.dataclass(frozen=True)
class Runs:
    """What the figures are drawn from: the real run, three hand-made ones, and a sweep over momentum × batch."""

    real: RunData
    made: list[RunData]
    sweep: list[RunData]

    @property
    def layer(self) -> str:
        return next(iter(self.real.layers))


Build = Callable[[Runs, float, float], object]
FIGURES: dict[str, Build] = {
    "activation_histograms": lambda r, s, w: F.activation_histograms(r.real, r.layer, scale=s, width=w),
    "drift_figure": lambda r, s, w: F.drift_figure(r.real, r.layer, scale=s, width=w),
    "channel_gap_figure": lambda r, s, w: F.channel_gap_figure(r.real, r.layer, scale=s, width=w),
    "layer_overview_figure": lambda r, s, w: F.layer_overview_figure(r.real, scale=s, width=w),
    "layer_overview_figure: 53 layers": lambda r, s, w: F.layer_overview_figure(many_layer_data(), scale=s, width=w),
    "ema_theory_figure": lambda r, s, w: F.ema_theory_figure(r.real.run.momentum, r.real.steps_trained, scale=s, width=w),
    "training_curves": lambda r, s, w: F.training_curves(r.real, scale=s, width=w),
    "live_figure": lambda r, s, w: F.live_figure(r.real, r.real.steps_trained * 3, scale=s, width=w),
    "compare_accuracy_figure": lambda r, s, w: F.compare_accuracy_figure([r.real, *r.made], scale=s, width=w),
    "compare_drift_figure": lambda r, s, w: F.compare_drift_figure([r.real, *r.made], r.layer, scale=s, width=w),
    "final_accuracy_figure": lambda r, s, w: F.final_accuracy_figure([r.real, *r.made], scale=s, width=w),
    "sweep_figure": lambda r, s, w: F.sweep_figure(r.sweep, "window", scale=s, width=w),
    "sweep_heatmap": lambda r, s, w: F.sweep_heatmap(r.sweep, scale=s, width=w),
    "empty_figure": lambda r, s, w: F.empty_figure("Drift", "No probe records for layer conv2; this run has: batch_normalization", scale=s, width=w),
    "history_figures: curves": lambda r, s, w: history_figures(r.real, scale=s, width=w)["curves"],
    "history_figures: theory": lambda r, s, w: history_figures(r.real, scale=s, width=w)["theory"],
}
# (scale, chart width): a page at 1440×900 full width and side by side, 2× text at full width, and the
# presentation layout at 1280×720; the export presets follow as their own cases. 2× text side by side is
# not drawn: the presentation layout stacks side-by-side charts (pages/common.py `side_by_side`).
PAGE_SIZES = {
    "screen, full width": (1.0, figlayout.DEFAULT_WIDTH),
    "screen, side by side": (1.0, figlayout.HALF_WIDTH),
    "2× text, full width": (PRESENTATION_SCALE, figlayout.DEFAULT_WIDTH),
    "presentation 1280×720": (PRESENTATION_SCALE, figlayout.PRESENTATION_WIDTH),
}
EXPORTS = ("presentation", "slide")  # export.SIZE_PRESETS: 1280×720 and 1600×900, exactly that size


def _sweep() -> list[RunData]:
    """Six finished runs: momentum 0.9, 0.99, 0.999 at batch 32 and 64."""
    runs = []
    for i, (m, batch) in enumerate((m, b) for b in (32, 64) for m in (0.9, 0.99, 0.999)):
        data = make_data(momentum=m, run_id=f"20260101-000000-{i:06d}")
        run = dataclasses.replace(data.run, config=dataclasses.replace(data.run.config, batch_size=batch))
        runs.append(dataclasses.replace(data, run=run))
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    made = [make_data(name, run_id=f"20260101-000000-{name * 6}") for name in ("a", "b", "c")]
    return Runs(tiny_run(tmp_path_factory), made, _sweep())


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:  # one per module: Playwright's sync API allows one at a time
        yield running


@pytest.fixture(scope="module")
def page(browser):
    return plotly_page(browser.new_page())


def _check(page, fig, width: float, scale: float, min_panel: float) -> list[str]:
    """`problems` of the drawn figure, and panels shorter than `min_panel` px × scale."""
    drawn = draw(page, fig, int(width))
    short = [f"panel {p.text} only {p.height:.0f} px tall" for p in drawn.panels if p.height < min_panel * scale]
    return problems(drawn) + short


@pytest.mark.parametrize("size", list(PAGE_SIZES))
def test_no_figure_overprints_at_page_sizes(page, runs, size):
    scale, width = PAGE_SIZES[size]
    found = [f"{name}: {p}" for name, build in FIGURES.items() for p in _check(page, build(runs, scale, width), width, scale, figlayout.MIN_PANEL)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("preset", EXPORTS)
def test_no_figure_overprints_in_export_presets(page, runs, preset):
    size = export.SIZE_PRESETS[preset]
    found = []
    for name, build in FIGURES.items():
        fig = export.sized(build(runs, 1.0, figlayout.DEFAULT_WIDTH), preset)
        assert (fig.layout.width, fig.layout.height) == (size.width, size.height)
        found += [f"{name}: {p}" for p in _check(page, fig, size.width, fig.layout.font.size / F.BASE_FONT, figlayout.MIN_PANEL)]
    assert not found, "\n".join(found)


def test_no_figure_overprints_on_a_slide(page, runs):
    """A slide's chart at 1280×720 (bnviz.slides.on_screen): 1.5× text, or less where a chart would not
    hold it, in exactly 1120×400 px."""
    width, height = SCREEN_CHART
    found = []
    for name, build in FIGURES.items():
        fig = on_screen(build(runs, 1.0, figlayout.DEFAULT_WIDTH))
        assert (fig.layout.width, fig.layout.height) == (width, height)
        found += [f"{name}: {p}" for p in _check(page, fig, width, fig.layout.font.size / F.BASE_FONT, SLIDE_MIN_PANEL)]
    assert not found, "\n".join(found)


def test_story_chapter_3_histogram_at_1280x720_in_the_presentation_layout(page, runs):
    """The reported case: the key histogram's subtitle wrapped over the panel titles "training mode /
    inference mode". Drawn from the chapter's model (`bn`) at the presentation layout's scale and width."""
    fig = F.activation_histograms(runs.real, runs.layer, scale=PRESENTATION_SCALE, width=figlayout.PRESENTATION_WIDTH)
    drawn = draw(page, fig, figlayout.PRESENTATION_WIDTH)
    assert not problems(drawn), problems(drawn)
    subtitle = next(b for b in drawn.texts if b.kind == "gtitle-subtitle")
    panel_titles = [b for b in drawn.texts if b.text.startswith(("training mode", "inference mode"))]
    assert len(panel_titles) == 2 and all(subtitle.bottom < b.top for b in panel_titles)
    assert all(b.bottom <= min(p.top for p in drawn.panels) for b in panel_titles)


def test_story_chapter_3_page_at_1280x720_has_no_overlapping_chart_text(browser, tmp_path):
    """The same chart on the real page: the Story opened on chapter 3 (`bn`, trained small) in the
    presentation layout at 1280×720, its histogram's text boxes read from Chromium."""
    from bnviz.presets import preset_config
    from bnviz.tf.train import execute_run

    store = Store(tmp_path)
    execute_run(store, store.create_run(preset_config("bn", input_size=24, epochs=1), status="running", sweep="story-20260101-000000"))
    with streamlit_server(tmp_path) as (url, _):
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(f"{url}/story?chapter=bn&slide=2&layout=presentation")
        chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="output on the validation probe batch").first
        chart.locator(".gtitle").wait_for(timeout=120_000)
        drawn = drawn_chart(chart)
    assert any(b.text.startswith("training mode") for b in drawn.texts) and len(drawn.panels) == 2
    assert drawn.width >= 900 and not problems(drawn), problems(drawn)
