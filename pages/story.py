"""Story mode: the seed notebook's four models in order, for a classroom. One button trains all four
(or run `python -m bnviz story`); the sidebar's presentation layout enlarges everything for a projector.
`?chapter=<preset>&layout=presentation` opens a chapter in that layout."""

from __future__ import annotations

import streamlit as st

from bnviz import export, figures
from bnviz.diagnose import diagnose
from bnviz.presets import SEED_RESULTS
from bnviz.records import RunStatus
from bnviz.story import CHAPTERS, latest_story, new_story_id, story_configs
from pages import common

common.frame_if_run_alone()

scale = common.scale()

st.title("The BatchNorm story")
top = st.columns([3, 1])
if scale == 1:  # the presentation layout keeps the first screen for the chapter itself
    top[0].caption("A course notebook: a CNN learns, gains a block, gains BatchNormalization and collapses at test time, then is fixed "
                   "by one number. Each chapter shows its model's accuracy in both BN modes and the chart that explains it. For a "
                   "projector, switch on the presentation layout in the sidebar; the address keeps the chapter and the layout.")
if top[1].button("Run the story", type="primary", key="story_run", help="Queues the four seed models at the default settings"):
    story = new_story_id()
    for config in story_configs():
        common.manager().submit(config, sweep=story)
    st.toast("Queued the four models; they train one after another.")

runs = latest_story(common.store())
common.require(runs, "No story has run yet: press “Run the story” (about a minute) or run `python -m bnviz story`.")
data = {preset: common.load_run(run) for preset, run in runs.items() if run.status == RunStatus.DONE}
common.url_choice("chapter", "story_chapter", {c.preset: i for i, c in enumerate(CHAPTERS)})
short = scale > 1  # on a projector the numbers alone fit one row; the chapter's heading names it
chapter = CHAPTERS[st.radio("Chapter", range(len(CHAPTERS)), format_func=lambda i: CHAPTERS[i].title.split(" · ")[0] if short else CHAPTERS[i].title,
                            horizontal=True, key="story_chapter")]
common.keep_in_url("chapter", chapter.preset)

st.header(chapter.title)
st.markdown(chapter.text)
run = data.get(chapter.preset)
if run is None:
    state = runs[chapter.preset].status if chapter.preset in runs else "missing"
    st.info(f"This chapter's run is {state}. The page shows it once it is done (rerun with R).")
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

if len(data) == len(CHAPTERS):
    report = export.html_report(list(data.values()), "The BatchNorm story", [(c.title, c.text) for c in CHAPTERS])
    st.download_button("Download the whole story (HTML)", report, "bnviz-story.html", "text/html", key="story_export")
