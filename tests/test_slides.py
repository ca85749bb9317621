"""Slides (bnviz.slides, pages/slides.py): the sequences as data, the presentation layout's pages
driven through AppTest (position in the address, buttons, the download), the decks as files, and
the small things of the layout around them (Copy link, Compare → Export, Export's size and names).
Runs are written straight into a store (no training)."""

from __future__ import annotations

import re

import pytest

from bnviz import export, slides
from bnviz.store import Store
from bnviz.story import latest_story
from tests.conftest import browser_test
from tests.test_app import as_shown, deferred, open_app  # noqa: F401 (deferred: a fixture)
from tests.test_browser_classroom import _story
from tests.test_diagnose_page import _finished, inspected
from tests.test_live import _record, _running, _steps

STATIC, REASON = export.static_export_available()
PRESENTED = {"layout": "presentation"}


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    return Store(tmp_path)


def _datas(store: Store) -> tuple[dict, dict]:
    runs = latest_story(store)
    return {k: store.load_run(r.id) for k, r in runs.items()}, {k: str(r.status) for k, r in runs.items()}


def pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


# --- the sequences ----------------------------------------------------------------------------------
def test_story_slides_follow_the_chapters_and_say_what_is_missing(store):
    _story(store)
    deck = slides.story_slides(*_datas(store))
    assert [s.chapter for s in deck] == [1, 2, 3, 3, 4, 5, 6]  # no probe layers: chapter 3 has no histogram slide
    assert "97%" in deck[2].message and "28%" in deck[2].message  # the collapse: batch statistics vs inference
    assert [s.figure is None for s in deck[-2:]] == [True, True] and "not all trained" in deck[-1].message
    assert all(len(s.message) <= slides.MESSAGE_CHARS for s in deck)
    assert deck[3].chart(1.0).layout.title.text.startswith("The cause")  # mᵗ after chapter 3's steps


def test_story_slides_before_a_run_is_done(store):
    _story(store)
    datas, states = _datas(store)
    del datas["final"]
    deck = slides.story_slides(datas, states | {"final": "running"})
    assert [s.message for s in deck if s.chapter == 4] == ["This chapter's runs are running: the slide shows them once they are done."]


def test_diagnose_slides_go_verdict_symptom_cause_fix(store):
    data = store.load_run(inspected(store))
    deck = slides.diagnose_slides(data)
    assert [s.title for s in deck] == ["Verdict", "Symptom", "Cause", "Fix"]
    assert "norm" in deck[2].message and deck[2].chart().data[0].type == "bar"  # the key layer's histograms
    assert all(0 < len(s.message) <= slides.MESSAGE_CHARS for s in deck)


def test_compare_slides_and_a_long_message_cut_at_a_word(store):
    runs = [store.load_run(_finished(store, name)) for name in ("a", "b")]
    assert [s.title for s in slides.compare_slides(runs)] == ["Final accuracy", "During training"]  # no shared probe layer
    assert slides.short("word " * 60) == ("word " * 23).strip() + " …"


# --- the pages ---------------------------------------------------------------------------------------
def _shows(at, start: str) -> bool:
    """Whether the page shows a message that starts with `start`."""
    return any(as_shown(m.value).startswith(start) for m in at.markdown)


@pytest.mark.slow
def test_story_slides_in_the_address_and_on_the_buttons(store):
    _story(store)
    at = open_app("story", **PRESENTED, chapter="3", slide="2")
    assert at.query_params["chapter"] == "3" and at.query_params["slide"] == "2"
    assert _shows(at, "After 30 steps at momentum 0.99") and len(at.get("plotly_chart")) == 1
    at.button(key="slides_next").click().run()
    assert (at.query_params["chapter"], at.query_params["slide"]) == ("4", "1") and _shows(at, "Momentum 0.8")
    for _ in range(2):
        at.button(key="slides_next").click().run()
    assert at.button(key="slides_next").disabled and at.query_params["chapter"] == "6"
    at = open_app("story", **PRESENTED, chapter="bn", slide="9")  # a preset names a chapter too; slide 9 is not there
    assert "slide 9" in as_shown(at.warning[0].value) and at.query_params["slide"] == "1" and at.button(key="slides_previous").disabled is False


@pytest.mark.slow
def test_diagnose_and_compare_slides_pick_runs_in_the_sidebar(store):
    ids = [_finished(store, name) for name in ("a", "b")]
    at = open_app("diagnose", **PRESENTED, run=ids[0], slide="2")
    assert _shows(at, "fit says 99%") and at.sidebar.selectbox(key="diagnose_run").value == ids[0]
    assert at.get("download_button")[0].proto.label == "Download 4 slides" if STATIC else at.warning
    at = open_app("compare", **PRESENTED, runs=",".join(ids))
    assert _shows(at, "Test accuracy in inference mode: 28%, 28%") and at.query_params["slide"] == "1"


@pytest.mark.slow
def test_slides_of_a_training_run_follow_its_records(store):
    run_id = _running(store, total=400)
    store.add_records(run_id, steps=_steps(1, 30), probes=[_record(0), _record(10)])
    at = open_app("diagnose", **PRESENTED, run=run_id)
    assert not at.exception and _shows(at, "Verdict pending — step 30/400")
    at.button(key="slides_next").click().run()
    assert _shows(at, "fit says 30% on the training images")
    store.add_records(run_id, steps=_steps(31, 80), probes=[_record(80)])
    at.run()  # what the watcher's rerun draws, on the same slide
    assert _shows(at, "fit says 80% on the training images") and at.query_params["slide"] == "2"


@pytest.mark.slow
def test_compare_then_export_keeps_the_chosen_runs(store):
    ids = [_finished(store, name) for name in ("old", "mid", "new")]
    at = open_app("compare", runs=f"{ids[0]},{ids[1]}")
    at.switch_page("pages/export.py").run()  # the page link carries the same ?runs= into the same session
    assert at.selectbox(key="export_run").value == ids[0] and at.multiselect(key="export_others").value == [ids[1]]


@pytest.mark.slow
def test_layout_travels_in_copy_link_and_picks_export_size(store):
    _finished(store, "a")
    at = open_app(None, **PRESENTED)
    assert "layout=presentation" in at.code[0].value
    assert "layout=" not in open_app(None).code[0].value
    at = open_app("export", **PRESENTED)
    assert at.radio(key="export_size").value == "presentation"


@pytest.mark.slow
def test_export_names_files_by_run_and_size(store, deferred):  # noqa: F811 (the fixture imported above)
    run_id = _finished(store, "my run")
    at = open_app("export")
    at.radio(key="export_size").set_value("slide").run()
    assert any(name == f"my-run-{run_id[-6:]}-training-curves-slide-1600x900.png" for name in deferred), list(deferred)


# --- the decks ---------------------------------------------------------------------------------------
@browser_test(STATIC, f"static export unavailable here: {REASON}")
def test_decks_have_a_page_per_slide_at_both_sizes(store):
    _story(store)
    deck = slides.story_slides(*_datas(store))[2:5]
    pdf = slides.deck_pdf(deck, "1920×1080")
    assert pdf.startswith(b"%PDF") and pdf_pages(pdf) == 3
    page = slides.slide_image(deck[0], "1280×720", "1/3")
    assert page.size == (1280, 720) and page.convert("L").crop((0, 300, 1280, 720)).getextrema()[0] < 64  # the chart is drawn below
    html = slides.deck_html(deck, "bnviz · story")
    assert html.count('<section class="slide"') == 3 and "<script src" not in html and 'src="http' not in html
    assert html.count("data:image/png;base64,") == 3 and "Momentum 0.8 forgets" in html
