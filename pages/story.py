"""Story mode: the seed notebook's four models in order, for a classroom. One button trains all four
(or run `python -m bnviz story`); the sidebar's presentation layout enlarges everything for a projector.
`?chapter=<preset>&layout=presentation` opens a chapter in that layout."""

from __future__ import annotations

import streamlit as st

from bnviz import export, figures
from bnviz.diagnose import diagnose
from bnviz.live import activity
from bnviz.presets import SEED_RESULTS
from bnviz.records import RunStatus
from bnviz.story import (
    CHAPTERS,
    LAG_CHAPTER,
    LAG_MOMENTA,
    RAW_CHAPTER,
    RAW_PRESETS,
    RAW_SUFFIX,
    lag_configs,
    lag_key,
    lag_numbers,
    latest_story,
    mean_gap,
    mechanisms_frame,
    new_story_id,
    raw_configs,
    story_configs,
    story_sections,
)
from pages import common, slides

common.frame_if_run_alone()
if common.presented():
    slides.story()

scale = common.scale()

st.title("The BatchNorm story")
top = st.columns([3, 1])
if scale == 1:  # the presentation layout keeps the first screen for the chapter itself
    top[0].caption(
        "A course notebook: a CNN learns, gains a block, gains BatchNormalization and collapses at test time, then is fixed "
        "by one number. Each chapter shows its model's accuracy in both BN modes and the chart that explains it. For a "
        "projector, switch on the presentation layout in the sidebar; the address keeps the chapter and the layout."
    )


def queue_story() -> None:
    """The button's callback, so the page drawn after the click already sees the story queued."""
    story = new_story_id()
    for config in story_configs():
        common.manager().submit(config, sweep=story)
    st.toast("Queued the four models; they train one after another.")


runs = latest_story(common.store())
training = activity(list(runs.values())).active
top[1].button(
    "Story queued" if training else "Run the story",
    type="primary",
    key="story_run",
    disabled=training,
    on_click=queue_story,
    help="The story's runs are queued or training; this page shows each chapter when its run is done"
    if training
    else "Queues the four seed models at the default settings",
)
common.require(runs, "No story has run yet: press “Run the story” (about a minute) or run `python -m bnviz story`.")
common.rerun_on_change(list(runs.values()))  # the page follows the runs by itself
data = {preset: common.load_run(run) for preset, run in runs.items() if run.status == RunStatus.DONE}
chapters = (*CHAPTERS, RAW_CHAPTER, LAG_CHAPTER)
common.url_choice("chapter", "story_chapter", {c.preset: i for i, c in enumerate(chapters)} | {str(i + 1): i for i in range(len(chapters))})
short = scale > 1  # on a projector the numbers alone fit one row; the chapter's heading names it
chapter = chapters[
    st.radio(
        "Chapter",
        range(len(chapters)),
        format_func=lambda i: chapters[i].title.split(" · ")[0] if short else chapters[i].title,
        horizontal=True,
        key="story_chapter",
    )
]
common.keep_in_url("chapter", chapter.preset)


def pair_or_stop(keys: list[str], own: list[str], pair: str, configs: list, help: str) -> list:
    """The runs of `keys` once all are done; until then a button that queues `configs` (the chapter's
    own runs, keys `own`) into this story, and a line that says how many are done, then the page stops."""
    done = [data[key] for key in keys if key in data]
    if len(done) < len(keys):
        queued = any(key in runs for key in own)
        st.button(
            f"The {pair} is queued" if queued else f"Train the {pair}",
            key=f"story_{chapter.preset}_run",
            help=help,
            disabled=queued,
            on_click=queue_pair,
            args=(pair, configs),
        )
        st.info(f"{len(done)} of the {len(keys)} runs this chapter compares are done. It shows them once they are, by itself.")
        st.stop()
    return done


def queue_pair(pair: str, configs: list) -> None:
    """A chapter button's callback: queue its runs into this story."""
    for config in configs:
        common.manager().submit(config, sweep=next(iter(runs.values())).sweep)
    st.toast(f"Queued the {pair}.")


def raw_chapter() -> None:
    """The raw-pixel chapter: more-layers and bn fed raw pixels beside their scaled twins."""
    keys = [key for preset in RAW_PRESETS for key in (preset, preset + RAW_SUFFIX)]
    done = pair_or_stop(
        keys,
        [p + RAW_SUFFIX for p in RAW_PRESETS],
        "raw-pixel pair",
        raw_configs(),
        "Queues more-layers and bn without the Rescaling layer into this story (about half a minute)",
    )
    common.table(figures.percent_cells(figures.accuracy_frame(done)), key="story_raw_accuracy")
    common.chart(figures.final_accuracy_figure(done, scale=scale), key="story_chart")


def lag_chapter() -> None:
    """The lag chapter: its m = 0.99 run's numbers, the drift chart of the layer that trails most, and the
    m = 0.8 twin beside it."""
    keys = [lag_key(m) for m in LAG_MOMENTA]
    lagged, fixed = pair_or_stop(
        keys, keys, "lag pair", lag_configs(), "Queues the +BN model on raw pixels for 570 steps at m = 0.99 and 0.8 into this story (about half a minute)"
    )
    st.markdown(lag_numbers(lagged, fixed))
    common.table(figures.percent_cells(figures.accuracy_frame([lagged, fixed])), key="story_lag_accuracy")
    common.chart(figures.drift_figure(lagged, mean_gap(lagged)[0], scale=scale), key="story_chart")
    common.chart(figures.final_accuracy_figure([lagged, fixed], scale=scale), key="story_lag_compare")


def recap() -> None:
    """Both mechanisms side by side, with the figures that tell them apart on a student's own run."""
    frame = mechanisms_frame(data)
    if len(frame):
        st.subheader("Two mechanisms, one symptom")
        st.caption(
            "High mᵗ: the initial values are still there (chapter 3). mᵗ near 0 with a large trail: the average lags behind "
            "drifting statistics (chapter 6). Diagnose names each with the verdict in the last column."
        )
        common.table(
            frame.style.format(
                {
                    "momentum m": "{:g}",
                    "initial values left, mᵗ": "{:.2%}",
                    "trail: drift × m/(1 − m) (SDs)": "{:.2f}",
                    "moving mean off (SDs)": "{:.2f}",
                    "test (inference)": "{:.0%}",
                    "test (PreciseBN)": "{:.0%}",
                },
                na_rep="–",
            ),
            key="story_recap",
        )


st.header(chapter.title)
st.markdown(chapter.text)
if chapter in (RAW_CHAPTER, LAG_CHAPTER):
    if chapter is RAW_CHAPTER:
        raw_chapter()
    else:
        lag_chapter()
    recap()
    st.stop()
run = data.get(chapter.preset)
if run is None:
    state = runs[chapter.preset].status if chapter.preset in runs else "missing"
    st.info(f"This chapter's run is {state}. The page shows it once it is done, by itself.")
    st.stop()
common.table(figures.percent_cells(figures.story_table(run, SEED_RESULTS[chapter.preset])), key="story_accuracy")
st.caption("The seed notebook's train figure is what fit reported; evaluate on the same training images is the next row.")
verdict = diagnose(run)[0]
st.markdown(f"**bnviz's {verdict.title[0].lower()}{verdict.title[1:]}.** {verdict.detail}")
if chapter.chart == "histograms" and run.layers:
    common.chart(figures.activation_histograms(run, next(iter(run.layers)), scale=scale), key="story_chart")
    common.chart(figures.ema_theory_figure(run.run.momentum, run.steps_trained, scale=scale), key="story_theory")
elif chapter.chart == "compare":
    common.chart(figures.final_accuracy_figure([d for p, d in data.items() if p in ("bn", "final")], scale=scale), key="story_chart")
else:
    common.chart(figures.training_curves(run, scale=scale), key="story_chart")

recap()
if all(c.preset in data for c in CHAPTERS):
    report = export.html_report(list(data.values()), "The BatchNorm story", story_sections(data))
    st.download_button("Download the whole story (HTML)", report, "bnviz-story.html", "text/html", key="story_export")
