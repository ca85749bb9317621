"""The presentation layout's slides (not a page): one bnviz.slides sequence shown a screen at a time,
following the runs it is made from while they train, each slide fitting the window (1280×720 and up)
without scrolling: the heading, the message in large type, and the chart, whose height is the
window's less what stands above it (CSS `vh`, so it follows the projector, not a fixed size).
Previous/next buttons, the arrow keys (PageUp/PageDown: a presenter's clicker) and the address
(`?chapter=3&slide=2` on the Story, `?slide=2` elsewhere) move through it."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from bnviz import export
from bnviz.labels import md_literal, pair_of_interest
from bnviz.records import Run, RunStatus
from bnviz.slides import DECK_SIZES, Slide, compare_slides, deck_html, deck_pdf, diagnose_slides, on_screen, story_slides
from bnviz.story import ALL_CHAPTERS, latest_story
from pages import common

# Above the chart: the page's top padding (clear of Streamlit's header), the row of buttons, the heading
# and two lines of the message; the chart gets the rest of the window's height.
SLIDE_CSS = """<style>
[data-testid="stMainBlockContainer"] {padding-bottom: 0.5rem !important;}
[data-testid="stMain"] .st-key-slide_title p {font-size: 1.4rem !important; color: #555; margin: 0;}
[data-testid="stMain"] .st-key-slide_message p {font-size: 2rem !important; font-weight: 700; line-height: 1.2; margin: 0;}
.st-key-slide_chart {height: calc(100vh - 20rem) !important; min-height: 16rem; flex: 0 0 auto !important;}
.st-key-slide_chart :is(.stElementContainer, [data-testid="stFullScreenFrame"], [data-testid="stPlotlyChart"], .js-plotly-plot)
  {height: 100% !important;}
</style>"""
# The arrow keys click the previous/next buttons; one listener per browser tab, finding the buttons
# when a key is pressed, so a rerun or another page needs no new one. Keys meant for a field, a slider or a
# radio button are left to it.
KEYS_JS = """<script>
if (!window.bnvizSlideKeys) {
  window.bnvizSlideKeys = true;
  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, textarea, [contenteditable=true], [role=slider], [role=radio], [role=option]")) return;
    const which = {ArrowRight: "next", ArrowLeft: "previous", PageDown: "next", PageUp: "previous"}[e.key];
    const button = which && document.querySelector(`.st-key-slides_${which} button`);
    if (button && !button.disabled) { e.preventDefault(); button.click(); }
  });
}
</script>"""
FORMATS = {"PDF": ("pdf", "application/pdf"), "HTML (one file)": ("html", "text/html")}


def show(deck: Sequence[Slide], key: str, name: str, runs: Sequence[Run], chapters: bool = False, detail: bool = True) -> None:
    """Show `deck` one slide at a time with its buttons and download, then stop the page. `key`
    keeps this page's position; `chapters`: the address names the Story's chapter too. While one of
    the `runs` it is made from trains, the slides follow it (common.watch; `detail`: its records, else
    its status only)."""
    common.watch(any(r.status.active for r in runs), [r.id for r in runs], detail)
    if not deck:
        st.info("Nothing to show as slides yet.")
        st.stop()
    st.html(SLIDE_CSS)
    st.html(KEYS_JS, unsafe_allow_javascript=True)
    at = _position(deck, key, chapters)
    _controls(deck, key, at, name)
    slide = deck[at]
    with st.container(key="slide_title"):
        st.markdown(f"{md_literal(slide.title)} · {at + 1}/{len(deck)}")
    with st.container(key="slide_message"):
        st.markdown(md_literal(slide.message))  # layer and run names are users' strings
    fig = slide.chart(1.0)
    if fig is not None:  # the figure's own height goes: the container's, from the window, is the chart's
        with st.container(key="slide_chart"):
            chart = on_screen(fig).update_layout(width=None, height=None, autosize=True)
            st.plotly_chart(chart, key=f"{key}_slide_chart_{at}", theme=None, config=common.PLOT_CONFIG, height="stretch")
    st.stop()


def _controls(deck: Sequence[Slide], key: str, at: int, name: str) -> None:
    """Previous, next, and the download of the whole sequence, in one row."""
    back, forward, download = st.columns([1, 1, 3], vertical_alignment="center")
    back.button("Previous", key="slides_previous", icon=":material/arrow_back:", on_click=_step, args=(key, -1, len(deck)), disabled=at == 0, width="stretch")
    forward.button(
        "Next", key="slides_next", icon=":material/arrow_forward:", on_click=_step, args=(key, 1, len(deck)), disabled=at == len(deck) - 1, width="stretch"
    )
    with download.popover("Download slides", icon=":material/download:"):
        _download(deck, name)


def _download(deck: Sequence[Slide], name: str) -> None:
    """The same sequence as one PDF or one HTML file, at the projector's size or full HD."""
    ok, reason = export.static_export_available()
    if not ok:
        st.warning(f"Slides are drawn by the export browser, which is not available here: {reason}.")
        return
    kind = st.radio("Format", list(FORMATS), key="slides_format", horizontal=True)
    size = st.radio("Size", list(DECK_SIZES), key="slides_size", horizontal=True)
    ext, mime = FORMATS[kind]
    build = {"pdf": lambda: deck_pdf(deck, size), "html": lambda: deck_html(deck, f"bnviz · {name}", size).encode("utf-8")}[ext]
    st.download_button(
        f"Download {len(deck)} slides",
        build,
        file_name=f"bnviz-{name}-slides-{size.replace('×', 'x')}.{ext}",
        mime=mime,
        key="slides_download",
        on_click="ignore",
        icon=":material/download:",
        type="primary",
    )


def _step(key: str, delta: int, count: int) -> None:
    """A button's move: the previous or next slide, within the sequence."""
    st.session_state[f"{key}_slide"] = min(max(st.session_state.get(f"{key}_slide", 0) + delta, 0), count - 1)


def _position(deck: Sequence[Slide], key: str, chapters: bool) -> int:
    """The slide to show: the address's when it changed since this page wrote it, else the page's
    own; then the address is set to it."""
    state, seen = f"{key}_slide", f"_{key}_slides_seen"
    asked = (st.query_params.get("chapter", "") if chapters else "", st.query_params.get("slide", ""))
    if asked != st.session_state.get(seen) and any(asked):
        st.session_state[state] = _from_address(deck, *asked)
    at = min(max(int(st.session_state.get(state, 0)), 0), len(deck) - 1)
    st.session_state[state] = at
    chapter = deck[at].chapter
    number = at - next(i for i, s in enumerate(deck) if s.chapter == chapter) + 1
    if chapters:
        st.query_params["chapter"] = str(chapter)
    st.query_params["slide"] = str(number)
    st.session_state[seen] = (str(chapter) if chapters else "", str(number))
    return at


def _from_address(deck: Sequence[Slide], chapter: str, slide: str) -> int:
    """The index of `?chapter=` (a number or a preset, as the Story's chapters are named) and
    `?slide=` (1-based, within the chapter); a link to a slide that is not there gets a warning."""
    presets = {c.preset: str(i) for i, c in enumerate(ALL_CHAPTERS, start=1)}
    chapter = presets.get(chapter, chapter)
    group = [i for i, s in enumerate(deck) if not chapter or str(s.chapter) == chapter]
    number = int(slide) if slide.isdigit() else 1
    if not group or not 1 <= number <= len(group):
        st.warning(f"The link's slide {md_literal(slide or '–')} (chapter {md_literal(chapter or '–')}) is not in this sequence; showing the first.")
        return group[0] if group else 0
    return group[number - 1]


# --- each page's sequence ----------------------------------------------------------------------------
def story() -> None:
    """The Story's chapters as slides, from its newest story (a chapter not trained yet says so)."""
    runs = latest_story(common.store())
    common.require(runs, "No story has run yet: switch the presentation layout off and press “Run the story”, or run `python -m bnviz story`.")
    datas = {key: common.load_run(run) for key, run in runs.items() if run.status == RunStatus.DONE}
    show(story_slides(datas, {key: str(run.status) for key, run in runs.items()}), "story", "story", list(runs.values()), chapters=True, detail=False)


def diagnose(runs: Sequence[Run]) -> None:
    """A run's diagnosis as slides; the run is picked in the sidebar (or by `?run=`), out of the slide's way."""
    with st.sidebar:
        run = common.pick_run("diagnose_run", runs, default=common.newest_done(runs)[0])
    show(diagnose_slides(common.load_run(run)), "diagnose", f"diagnose-{common.run_stem(run)}", [run])


def compare(runs: Sequence[Run]) -> None:
    """A comparison as slides; the runs are picked in the sidebar (or by `?runs=`)."""
    with st.sidebar:
        picked = common.pick_runs("compare_runs", runs, default=pair_of_interest(runs))
    common.require(picked, "Pick one or more runs to compare in the sidebar.")
    show(compare_slides([common.load_run(r) for r in picked]), "compare", "compare-" + "-".join(common.run_stem(r) for r in picked[:3]), picked)
