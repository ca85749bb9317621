"""Slides: the Story, a diagnosis and a comparison as sequences of screens, each one message in large
type and the one chart that proves it, for a projector at 1280×720. The dashboard's presentation
layout shows them one at a time (pages/slides.py) and `deck` renders the same sequence as one PDF or
a one-file HTML deck. No Streamlit here.

A slide's figure is built on demand, at the text scale its screen needs (`Slide.chart(scale)`), so a
deck of nine slides builds nine figures only when it is shown or downloaded.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from bnviz import export, figlayout, figures
from bnviz.diagnose import diagnose
from bnviz.records import RunData
from bnviz.stats import init_weight, steps_to_forget
from bnviz.story import CHAPTERS, LAG_CHAPTER, LAG_MOMENTA, RAW_CHAPTER, RAW_PRESETS, RAW_SUFFIX, Chapter, lag_key, mean_gap
from bnviz.summary import inspected

MESSAGE_CHARS = 120  # a message fits two lines of large type (32 px) on a 1280-px screen; longer text is cut at a word
SLIDE_SCALE = 1.5  # chart text on a slide: 20 px, read from the back; the message above it is the large type
SCREEN_CHART = (figlayout.PRESENTATION_WIDTH, 400)  # px: a slide's chart at 1280×720 (720 less the 20rem above it, pages/slides.py)
SLIDE_MIN_PANEL = 60  # px at scale 1 (90 at SLIDE_SCALE): on a slide large text comes before tall panels
DECK_SIZES = {"1280×720": (1280, 720), "1920×1080": (1920, 1080)}  # downloads: the projector's size and full HD
BASE_WIDTH, BASE_HEIGHT = DECK_SIZES["1280×720"]  # a deck is laid out at this size; 1920×1080 is the same slide, sharper
FONT_FILES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf")  # Debian's chromium brings DejaVu; PIL's own font otherwise
BOLD_FILES = ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf")


@dataclass(frozen=True)
class Slide:
    """One screen: a small heading (where in the sequence), the message in large type, and the chart
    that proves it (`figure(scale)`, or None where there is nothing to show yet); `chapter` numbers
    a Story slide's chapter (1-based; 0 elsewhere)."""

    title: str
    message: str
    figure: Callable[[float], go.Figure] | None = None
    chapter: int = 0

    def chart(self, scale: float = SLIDE_SCALE) -> go.Figure | None:
        return self.figure(scale) if self.figure else None


def on_screen(fig: go.Figure) -> go.Figure:
    """Screen figure `fig` (scale 1) as a slide's chart at 1280×720, the smallest screen the layout is for:
    SLIDE_SCALE text, smaller where the chart would not hold it (bnviz.export.fit_exactly); a larger
    window only adds room."""
    return export.fit_exactly(fig, *SCREEN_CHART, font=figures.BASE_FONT * SLIDE_SCALE, min_panel=SLIDE_MIN_PANEL)


def short(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` cut at a word to at most `limit` characters: a message stays on two lines of large type."""
    text = re.sub(r"[*`]", "", " ".join(text.split()))
    return textwrap.shorten(text, limit, placeholder=" …")


def _pct(value: float) -> str:
    return f"{value:.0%}" if math.isfinite(value) else "–"


def _score(data: RunData, key: str) -> str:
    """One final accuracy as a percentage ('test', 'test_batchstats', 'fit'); '–' where not measured."""
    found = data.evaluations.get("final")
    return _pct(found.accuracy_of(key) if found else math.nan)


def _fit(data: RunData) -> str:
    """What fit reported: the final evaluation's figure, else the last step's running accuracy."""
    stored = _score(data, "fit")
    return stored if stored != "–" or not len(data.steps) else _pct(float(data.steps["accuracy"].iloc[-1]))


# --- the Story -------------------------------------------------------------------------------------
def _waiting(number: int, chapter: Chapter, state: str) -> Slide:
    return Slide(chapter.title, f"This chapter's runs are {state}: the slide shows them once they are done.", chapter=number)


def _curves(number: int, chapter: Chapter, data: RunData, message: str) -> list[Slide]:
    return [Slide(chapter.title, message, lambda s: figures.training_curves(data, scale=s), number)]


def _collapse(number: int, chapter: Chapter, data: RunData) -> list[Slide]:
    """Chapter 3: the collapse, the two histograms that show it, mᵗ that explains it."""
    m, t = data.run.momentum, data.steps_trained
    layer = next(iter(data.layers), None)
    slides = [
        Slide(
            chapter.title,
            f"Train {_fit(data)}, test {_score(data, 'test')}; the same weights with batch statistics: {_score(data, 'test_batchstats')}.",
            lambda s: figures.final_accuracy_figure([data], scale=s),
            number,
        )
    ]
    if layer:
        slides.append(
            Slide(
                chapter.title,
                "Same layer, same images: inference normalises with the moving statistics and squashes the activations.",
                lambda s: figures.activation_histograms(data, layer, scale=s),
                number,
            )
        )
    return [*slides, Slide(chapter.title, _left(m, t), lambda s: figures.ema_theory_figure(m, t, scale=s), number)]


def _left(m: float, t: int) -> str:
    """mᵗ in words: how much of the initial mean 0 and variance 1 the moving statistics still hold."""
    return f"After {t:,} steps at momentum {m:g}, {_pct(float(init_weight(m, t)))} of the initial mean 0 and variance 1 are still in the moving statistics."


def _fix(number: int, chapter: Chapter, datas: Mapping[str, RunData]) -> list[Slide]:
    """Chapter 4: momentum 0.8 beside the collapsed run."""
    fixed = datas["final"]
    pair = [d for key, d in datas.items() if key in ("bn", "final")]
    message = f"Momentum 0.8 forgets the initial values within {steps_to_forget(0.8):.0f} steps: test {_score(fixed, 'test')} in inference mode."
    return [Slide(chapter.title, message, lambda s: figures.final_accuracy_figure(pair, scale=s), number)]


def _raw(number: int, datas: Mapping[str, RunData]) -> list[Slide]:
    """Chapter 5: the raw-pixel pair beside its scaled twins."""
    keys = [key for preset in RAW_PRESETS for key in (preset, preset + RAW_SUFFIX)]
    if any(key not in datas for key in keys):
        return [_waiting(number, RAW_CHAPTER, "not all trained")]
    runs = [datas[key] for key in keys]
    bn_raw = datas["bn" + RAW_SUFFIX]
    message = f"Raw 0–255 pixels change both halves of the story: with BN, test {_score(bn_raw, 'test')} instead of a collapse."
    return [Slide(RAW_CHAPTER.title, message, lambda s: figures.final_accuracy_figure(runs, scale=s), number)]


def _lag(number: int, datas: Mapping[str, RunData]) -> list[Slide]:
    """Chapter 6: the m = 0.99 run's drift, then the pair's accuracy."""
    pair = [datas.get(lag_key(m)) for m in LAG_MOMENTA]
    if any(d is None for d in pair):
        return [_waiting(number, LAG_CHAPTER, "not all trained")]
    lagged = pair[0]
    layer, gap = mean_gap(lagged)
    drift = (
        f"After {lagged.steps_trained:,} steps the initial values are gone, yet {layer}'s moving mean ends {gap:.2f} SDs "
        "from the population: it trails drifting statistics."
    )
    twin = f"Same weights, momentum 0.8: test {_score(pair[1], 'test')} instead of {_score(lagged, 'test')} in inference mode."
    return [
        Slide(LAG_CHAPTER.title, drift, lambda s: figures.drift_figure(lagged, layer, scale=s), number),
        Slide(LAG_CHAPTER.title, twin, lambda s: figures.final_accuracy_figure(pair, scale=s), number),
    ]


def _chapter(number: int, chapter: Chapter, datas: Mapping[str, RunData], states: Mapping[str, str]) -> list[Slide]:
    """One of the four seed chapters' slides, or a slide saying its run is not done."""
    data = datas.get(chapter.preset)
    if data is None or (chapter.chart == "compare" and "bn" not in datas):
        return [_waiting(number, chapter, states.get(chapter.preset, "missing"))]
    if chapter.chart == "histograms":
        return _collapse(number, chapter, data)
    if chapter.chart == "compare":
        return _fix(number, chapter, datas)
    lead = "It learns and generalises" if chapter.preset == "initial" else "One more block, eight times fewer parameters"
    return _curves(number, chapter, data, f"{lead}: fit says {_fit(data)}, and the test set {_score(data, 'test')}.")


def story_slides(datas: Mapping[str, RunData], states: Mapping[str, str] | None = None) -> list[Slide]:
    """The Story as slides, chapter by chapter (bnviz.story's keys: a preset, 'bn raw', 'lag 0.99'); a
    chapter whose runs are not done gets one slide that says so (`states`: preset → status)."""
    slides = [s for i, c in enumerate(CHAPTERS, start=1) for s in _chapter(i, c, datas, states or {})]
    return slides + _raw(len(CHAPTERS) + 1, datas) + _lag(len(CHAPTERS) + 2, datas)


# --- a diagnosis and a comparison ------------------------------------------------------------------
def diagnose_slides(data: RunData) -> list[Slide]:
    """A diagnosis as four slides: the verdict (accuracy in both BN modes), the symptom (training
    curves), the cause (the key layer's activations, else mᵗ) and the fix."""
    top = diagnose(data)[0]
    m, t, bn = data.run.momentum, data.steps_trained, data.run.config.arch.has_moving_stats
    layer = export.key_layer(data)
    symptom = f"fit says {_fit(data)} on the training images; evaluate says {_score(data, 'train')} on them and {_score(data, 'test')} on the test set."
    cause = (
        Slide("Cause", f"Training mode and inference mode feed {layer}'s outputs differently.", lambda s: figures.activation_histograms(data, layer, scale=s))
        if layer
        else Slide(
            "Cause",
            _left(m, t) if bn else short(top.detail),
            lambda s: figures.ema_theory_figure(m, t, scale=s) if bn else figures.training_curves(data, scale=s),
        )
    )
    suggested = top.numbers.get("suggested_momentum")
    compare = (suggested,) if suggested else (0.9, 0.8)
    return [
        Slide("Verdict", short(top.title.removeprefix("Verdict: ")), lambda s: figures.final_accuracy_figure([data], scale=s)),
        Slide("Symptom", symptom, None if inspected(data.run) else lambda s: figures.training_curves(data, scale=s)),  # a saved model has no history
        cause,
        Slide(
            "Fix",
            short(
                top.remedies[0] if top.remedies and top.severity in ("critical", "warning") else "Nothing to fix: inference mode scores as training mode does."
            ),
            (lambda s: figures.ema_theory_figure(m, t, compare, scale=s)) if bn else None,
        ),
    ]


def compare_slides(datas: Sequence[RunData]) -> list[Slide]:
    """A comparison as slides: final accuracy in both modes, probe accuracy over training, and the
    drift of the first BN layer the runs share."""
    runs = list(datas)
    shared = [layer for layer in runs[0].layers if all(layer in d.layers for d in runs)] if runs else []
    tests = ", ".join(f"{_score(d, 'test')}" for d in runs)
    slides = [
        Slide(
            "Final accuracy",
            f"Test accuracy in inference mode: {tests}. Where batch statistics score higher, the moving statistics are wrong.",
            lambda s: figures.final_accuracy_figure(runs, scale=s),
        ),
        Slide(
            "During training",
            "Probe accuracy in both BN modes over the steps: where the lines part, inference mode falls behind.",
            lambda s: figures.compare_accuracy_figure(runs, scale=s),
        ),
    ]
    if shared:
        message = f"{shared[0]}'s moving statistics against the population: the farther off, the worse inference normalises."
        slides.append(Slide("Moving statistics", message, lambda s: figures.compare_drift_figure(runs, shared[0], scale=s)))
    return slides


# --- the download: one PDF, or one HTML file --------------------------------------------------------
MARGIN, TITLE_PX, MESSAGE_PX, LINE = 40, 24, 36, 1.25  # the deck's layout at 1280×720, in px
GREY, INK = "#666666", "#111111"


def _font(files: Sequence[str], size: int) -> ImageFont.FreeTypeFont:
    """A TrueType font of the system at `size` px, else PIL's own."""
    for name in files:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """`text` broken into lines no wider than `width` px in `font`."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _header(slide: Slide, k: float, position: str) -> Image.Image:
    """The slide's heading and message, drawn at `k` times the 1280×720 layout, as an image as wide as the slide."""
    title_font, message_font = _font(FONT_FILES, round(TITLE_PX * k)), _font(BOLD_FILES, round(MESSAGE_PX * k))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(probe, slide.message, message_font, (BASE_WIDTH - 2 * MARGIN) * k)
    height = round((MARGIN + TITLE_PX * LINE + 8 + MESSAGE_PX * LINE * len(lines) + 8) * k)
    image = Image.new("RGB", (round(BASE_WIDTH * k), height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN * k, MARGIN * k * 0.6), f"{slide.title} · {position}", font=title_font, fill=GREY)
    top = (MARGIN * 0.6 + TITLE_PX * LINE + 8) * k
    for i, line in enumerate(lines):
        draw.text((MARGIN * k, top + i * MESSAGE_PX * LINE * k), line, font=message_font, fill=INK)
    return image


def slide_image(slide: Slide, size: str = "1280×720", position: str = "") -> Image.Image:
    """One slide as a picture of `size` (DECK_SIZES): heading and message on top, the chart below
    them filling the rest, drawn by bnviz.export's browser at the 1280×720 layout and sharpened to
    the size (1920×1080 is the same slide at 1.5× the pixels)."""
    width, height = DECK_SIZES[size]
    k = width / BASE_WIDTH
    header = _header(slide, k, position)
    image = Image.new("RGB", (width, height), "white")
    image.paste(header, (0, 0))
    fig = slide.chart()
    if fig is not None:
        room = BASE_HEIGHT - round(header.height / k)
        fig = go.Figure(fig).update_layout(width=BASE_WIDTH, height=room)
        chart = Image.open(io.BytesIO(export.png_bytes(fig, k))).convert("RGB")
        image.paste(chart, (0, header.height))
    return image


def _images(slides: Sequence[Slide], size: str) -> list[Image.Image]:
    return [slide_image(s, size, f"{i}/{len(slides)}") for i, s in enumerate(slides, start=1)]


def deck_pdf(slides: Sequence[Slide], size: str = "1280×720") -> bytes:
    """The slides as one PDF, a page of `size` each (needs the export browser: bnviz.export)."""
    pages = _images(slides, size)
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:], resolution=96.0)
    return out.getvalue()


DECK_CSS = """
html, body {margin: 0; background: #222; height: 100%;}
section {display: none; height: 100vh; align-items: center; justify-content: center;}
section.shown {display: flex;}
section img {max-width: 100vw; max-height: 100vh; background: white;}
@media print {section {display: flex !important; page-break-after: always; height: auto;} body {background: white;}}
"""
DECK_JS = """
const slides = [...document.querySelectorAll("section.slide")];
let at = Math.max(0, Math.min(slides.length - 1, parseInt(location.hash.slice(1) || "1", 10) - 1));
function show(i) {
  at = Math.max(0, Math.min(slides.length - 1, i));
  slides.forEach((s, j) => s.classList.toggle("shown", j === at));
  location.hash = String(at + 1);
}
document.addEventListener("keydown", e => {
  if (["ArrowRight", "PageDown", " "].includes(e.key)) { show(at + 1); e.preventDefault(); }
  if (["ArrowLeft", "PageUp"].includes(e.key)) { show(at - 1); e.preventDefault(); }
});
document.addEventListener("click", e => show(at + (e.clientX > innerWidth / 3 ? 1 : -1)));
show(at);
"""


def deck_html(slides: Sequence[Slide], title: str, size: str = "1280×720") -> str:
    """The slides as one HTML file that works offline: one picture per slide, arrow keys, space or a
    click move on (the address keeps the slide: #3), and printing gives a page per slide."""
    sections = []
    for i, image in enumerate(_images(slides, size), start=1):
        out = io.BytesIO()
        image.save(out, "PNG", optimize=True)
        alt = html.escape(f"{slides[i - 1].title}: {slides[i - 1].message}")
        sections.append(
            f'<section class="slide" id="slide-{i}"><img alt="{alt}" src="data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}"></section>'
        )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{DECK_CSS}</style></head>'
        f"<body>{''.join(sections)}<script>{DECK_JS}</script></body></html>\n"
    )
