"""User strings are shown as text: a run name, an error, a data set or layer name that reads as
Markdown never becomes a link, an image, HTML, LaTeX or a Streamlit directive on any page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from streamlit.testing.v1 import AppTest

from bnviz.labels import md_literal
from bnviz.presets import preset_config
from bnviz.records import RunStatus
from bnviz.store import Store
from tests.conftest import TINY
from tests.test_app import open_app
from tests.test_callback import PROBE
from tests.test_cli import bnviz

PHISH = "[Log in again](https://example.com/phish) ![t](http://HOST/beacon.png)"
HOSTILE = (
    PHISH,
    "<img src=x onerror=alert(1)>",
    "$\\href{https://example.com/phish}{x}$",
    ":red[x] :material/warning: www.example.com/phish phish@example.com",
    "**bold** _it_ `code` # h\n- list\n| a | b |",
)
# TensorFlow takes layer names that match ^[A-Za-z0-9.][A-Za-z0-9_.\\>-]*$ (and Keras no '/'): an autolink
# (a layer of a saved model may carry more; TensorFlow refuses them only when it runs the graph) is what remains.
LAYER_NAMES = ("www.example.com.phish", "beacon.x--y", "onerror.x_y_")
MARKERS = ("phish", "beacon", "onerror", "href", "red[")  # in every hostile string, escaped or not
# What the browser's Markdown does with a body, as far as links and images go: CommonMark with raw
# HTML on and GitHub's autolinks (Streamlit renders GitHub-flavoured Markdown).
BROWSER_MD = MarkdownIt("commonmark", {"html": True, "linkify": True}).enable(["linkify", "table", "strikethrough"])
UNESCAPED = re.compile(r"(?<!\\)(\$\\href|:red\[|:material/|<img)")  # LaTeX, directives and HTML without their backslash
PAGES = ("runs", "diagnose", "compare", "export", "sweep", "story", "inspect", "train")


@pytest.mark.parametrize("text", HOSTILE + LAYER_NAMES)
def test_md_literal_renders_exactly_the_text_typed(text):
    html = BROWSER_MD.renderInline(md_literal(text))
    assert html == escapeHtml(text), html
    assert "<a " not in html and "<img" not in html


def markdown_texts(at: AppTest) -> list[str]:
    """Every string on the page that Streamlit renders as Markdown: bodies, alerts, headings,
    captions, toasts, and the labels of widgets, expanders, tabs and metrics (and metric values and
    deltas). Option lists and code are shown literally and are left out."""
    texts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader", "toast") for e in at.get(kind)]
    for kind in (
        "button",
        "checkbox",
        "multiselect",
        "number_input",
        "radio",
        "select_slider",
        "selectbox",
        "slider",
        "text_input",
        "toggle",
        "expander",
        "tab",
    ):
        texts += [e.proto.label for e in at.get(kind) if hasattr(e.proto, "label")]
    texts += [str(getattr(m.proto, f)) for m in at.get("metric") for f in ("label", "body", "delta")]
    return [t for t in texts if isinstance(t, str)]


def leaks(texts: list[str]) -> list[str]:
    """The texts holding a hostile string that would render a link, an image or HTML, or still hold a
    Streamlit directive or LaTeX opener unescaped."""
    hostile = [t for t in texts if any(m in t for m in MARKERS)]
    return [t for t in hostile if any(tag in BROWSER_MD.render(t) for tag in ("<a ", "<img")) or UNESCAPED.search(t)]


def check_pages(run_ids: list[str], pages: tuple[str, ...] = PAGES, **extra: str) -> int:
    """Open `pages` (Diagnose and Export on each run, Compare on all; `extra` query parameters on
    each) and assert no leak; returns how many Markdown texts held a hostile string, so a test can
    tell they were shown at all."""
    shown, per_run = 0, {"diagnose": "run", "export": "run"}
    opened = [(page, {}) for page in pages if page not in per_run] + [(page, {per_run[page]: i}) for page in pages if page in per_run for i in run_ids]
    opened += [("compare", {"runs": ",".join(run_ids)})] if "compare" in pages else []
    for page, query in opened:
        at = open_app(**query, **extra)
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        texts = markdown_texts(at)
        assert not leaks(texts), (page, query, leaks(texts))
        shown += sum(any(m in t for m in MARKERS) for t in texts)
    return shown


def plant_in_store(home: Path) -> list[str]:
    """Two ended runs whose names, data sets and errors hold every hostile string."""
    store, ids = Store(home), []
    for status, text in ((RunStatus.FAILED, " ".join(HOSTILE[:3])), (RunStatus.INTERRUPTED, " ".join(HOSTILE[3:]))):
        run_id = store.create_run(preset_config("bn", name=text, dataset=f"/data/{text}"))
        store.finish(run_id, status, error=f"{text} went wrong")
        ids.append(run_id)
    return ids


@pytest.mark.slow
def test_runs_and_diagnose_show_stored_names_errors_and_data_sets_as_text(tmp_path, monkeypatch):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    assert check_pages(plant_in_store(tmp_path), ("runs", "diagnose")) >= 8  # name, data set and error on both pages, twice


@pytest.mark.slow
def test_every_page_shows_stored_names_errors_and_data_sets_as_text(tmp_path, monkeypatch):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    assert check_pages(plant_in_store(tmp_path)) >= 8


def _probed_model(home: Path, data) -> None:
    """A user's own model whose name and BN layer names are hostile, recorded with bnviz.Probe."""
    import keras
    from keras import layers

    import bnviz

    inputs = keras.Input((TINY, TINY, 3))
    x = layers.Conv2D(4, 3, padding="same")(layers.Rescaling(1 / 255)(inputs))
    for name in LAYER_NAMES:
        x = layers.BatchNormalization(name=name)(layers.ReLU()(x))
    outputs = layers.Dense(data.num_classes, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    probe = bnviz.Probe(name=PHISH, home=home, batch_size=16, probe=PROBE, test_data=(data.x_test, data.y_test), train_data=(data.x_train, data.y_train))
    model.fit(data.x_train, data.y_train, batch_size=16, epochs=1, verbose=0, callbacks=[probe])


@pytest.mark.slow
def test_names_planted_through_the_cli_the_form_and_probe_stay_text(tmp_path, monkeypatch, tiny_data):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    out = bnviz("train", "--name", PHISH, "--input-size", "16", "--epochs", "1", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    _probed_model(tmp_path, tiny_data)
    monkeypatch.setattr("bnviz.jobs.JobManager.pump", lambda self: None)  # queue only: the form's run stays queued
    at = open_app()
    at.text_input(key="train_name").set_value(HOSTILE[1]).run()
    at.button(key="train_queue").click().run()
    assert not at.exception
    runs = Store(tmp_path).list_runs()
    probed = next(r for r in runs if r.info.get("source") == "callback")
    assert sorted(r.name for r in runs) == sorted([PHISH, PHISH, HOSTILE[1]]) and len(probed.info["bn_layers"]) == len(LAYER_NAMES)
    done = [r.id for r in runs if r.status == RunStatus.DONE]
    assert len(done) == 2
    assert check_pages(done) >= 6
    check_pages(done, ("diagnose", "compare"), layout="presentation")  # the slides' sequences


@pytest.mark.slow
def test_chart_text_from_user_strings_stays_text():
    """Plotly reads a few HTML tags in titles, legends and hover text (`<a href>`, `<b>`): every
    figure built from runs with hostile names carries them escaped."""
    from bnviz import figures as F
    from tests.test_figures import make_data

    runs = [make_data(name, run_id=f"20260101-00000{i}-abcdef") for i, name in enumerate(("<a href='https://example.com/phish'>x</a>", *HOSTILE[:2]))]
    figures = [F.compare_accuracy_figure(runs), F.compare_drift_figure(runs, "norm1"), F.final_accuracy_figure(runs), F.sweep_figure(runs)]
    figures += [F.training_curves(runs[0]), F.live_figure(runs[0]), F.drift_figure(runs[0], "norm1"), F.activation_histograms(runs[0], "norm1")]
    for fig in figures:
        text = repr(fig.to_dict())  # to_json writes "<" as \u003c, which would hide it
        assert "<a " not in text and "<img" not in text, fig.layout.title.text
