"""Streamlit glue shared by the pages (not a page): the job manager, cached run loading, run
pickers that honour query parameters, and chart display.

Opening a page on given runs, from code or a link:
- Diagnose / Export: `?run=<id>`, or `st.session_state["diagnose_open"] = id` before switching;
- Compare: `?runs=<id>,<id>`, or `st.session_state["compare_open"] = [id, ...]`.
- any page in the presentation layout: `?layout=presentation`; Story on a chapter: `?chapter=<preset>`
  (or `raw`); Train on given settings: its "Copy link" (bnviz.forms.LINK_FIELDS).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from pandas.io.formats.style import Styler
from streamlit.navigation.page import StreamlitPage

from bnviz import figlayout
from bnviz.config import SETTING, ConfigError
from bnviz.diagnose import Finding, all_layer_figures, diagnose, ranked_layers
from bnviz.executors import ray_address
from bnviz.figures import PRESENTATION_SCALE, frozen, use_as_default_template
from bnviz.forms import FolderScan, scan_folder
from bnviz.glossary import glossary_markdown
from bnviz.jobs import JobManager
from bnviz.labels import md_literal, unique_labels
from bnviz.live import RunCache, StepDrawings, View, Watch, Watches, activity, records_version, steps_version, view
from bnviz.records import ACTIVE, SPLITS, Evaluation, Run, RunData, RunStatus
from bnviz.store import Store, StoreFull, StoreUnreadable, default_home
from bnviz.summary import inspected

STATUS_COLOURS = {
    RunStatus.QUEUED: "gray",
    RunStatus.RUNNING: "blue",
    RunStatus.DONE: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "orange",
    RunStatus.INTERRUPTED: "orange",
}
PAGE_FILES = {name: f"pages/{name}.py" for name in ("train", "runs", "diagnose", "inspect", "compare", "sweep", "story", "export")}
PLOT_CONFIG = {"displaylogo": False}
COMPACT_CSS = "<style>.block-container {padding-top: 2.5rem !important;}</style>"  # the answer, not blank space, on the first screen
# The presentation layout, for a projector at 1280×720: prose, headings, tables, metrics and controls (buttons, select boxes,
# chips, inputs, page links) about twice their size (charts get bnviz.figures' scale instead; tables are drawn as HTML
# tables, which CSS reaches, not as canvas data grids), and the page clear of Streamlit's header.
PRESENTATION_CSS = """<style>
[data-testid="stMain"] :is(.stMarkdown p, .stMarkdown li, .stCaption p, [data-testid="stAlert"] p, [data-testid="stWidgetLabel"] p,
  [role="radiogroup"] p)
  {font-size: 1.6rem !important;}
[data-testid="stMain"] h1 {font-size: 3.5rem !important;} [data-testid="stMain"] h2 {font-size: 3rem !important;}
[data-testid="stMain"] h3 {font-size: 2rem !important;}
[data-testid="stTable"] td, [data-testid="stTable"] th {font-size: 1.75rem !important; padding: 0.4rem 0.8rem !important;}
[data-testid="stMetricValue"] {font-size: 4.5rem !important;}
[data-testid="stMetricLabel"] p, [data-testid="stMetricDelta"] div {font-size: 1.75rem !important;}
[data-testid="stMetricLabel"] :is(div, p), [data-testid="stMetricDelta"] :is(div, p) {white-space: normal !important; overflow: visible !important;}
[data-testid="stMainBlockContainer"] {padding-top: 4.5rem !important;}
[data-testid="stMain"] :is(button, [data-baseweb="select"], [data-baseweb="input"], [data-baseweb="tag"], [data-testid="stPageLink"] a) :is(p, span, div, input)
  {font-size: 1.6rem !important; line-height: 1.3 !important;}
[data-testid="stMain"] :is(button, [data-testid="stPageLink"] a) {min-height: 3.2rem !important; padding: 0.3rem 1rem !important;}
[data-testid="stMain"] [data-baseweb="tag"] {height: auto !important; max-width: none !important;}
[data-testid="stMain"] :is(button, [data-testid="stPageLink"] a) [data-testid="stIconMaterial"] {font-size: 1.9rem !important;}
</style>"""
EXPORT_OPEN = "export_runs_open"  # Export's session key for given runs, and the scope of its `?runs=`
LAYOUT_PARAM = "layout"  # ?layout=presentation opens any page in the presentation layout
WATCHES_KEY = "_watches"  # session key: the Watches of the page's current drawing (frame() starts them afresh)
POLL_S = 2.0  # how often a page re-reads the store while a run it shows is queued or training (docs/performance.md)
STORE_FAULTS = (StoreUnreadable, StoreFull)  # a damaged store file, a full disk: bnviz.store words each in one line
use_as_default_template()  # this server draws bnviz's figures only: each takes the template unvalidated (~8 ms a figure less)


# --- the frame: page config, navigation, sidebar ----------------------------------------------------
PAGES = (
    ("train", "Train", "model_training"),
    ("story", "Story", "school"),
    ("runs", "Runs", "list"),
    ("diagnose", "Diagnose", "troubleshoot"),
    ("inspect", "Inspect", "search"),
    ("compare", "Compare", "compare"),
    ("sweep", "Sweep", "tune"),
    ("export", "Export", "download"),
)


def frame() -> StreamlitPage:
    """Page config, the navigation and the shared sidebar; returns the page to run."""
    projected = st.query_params.get(LAYOUT_PARAM) == "presentation"  # a link into the layout opens with the sidebar folded: all width for it
    st.set_page_config(page_title="bnviz · BatchNorm collapse", page_icon="📉", layout="wide", initial_sidebar_state="collapsed" if projected else "auto")
    st.html(COMPACT_CSS)
    st.session_state[WATCHES_KEY] = Watches()  # this run's: the sidebar's and the page's watches join it
    page = st.navigation([st.Page(PAGE_FILES[key], title=title, icon=f":material/{icon}:", default=key == "train") for key, title, icon in PAGES])
    try:
        runs = store().list_runs(status=list(ACTIVE))
    except (*STORE_FAULTS, ConfigError) as exc:  # one clear message instead of a traceback; nothing is written
        st.error(md_literal(exc))
        st.stop()
    with st.sidebar:
        st.caption(f"Runs folder (BNVIZ_HOME): `{store().home}`")
        follow(_counter, activity(runs).active, detail=False)
        with st.expander("Glossary", icon=":material/menu_book:"):
            st.markdown(glossary_markdown())
        presentation_toggle()
    return page


def _counter(active: bool) -> None:
    """The sidebar's count of queued and running runs (bnviz.live.activity, as every page counts), drawn
    again whenever a run's status moves (`follow`)."""
    now = activity(store().list_runs(status=list(ACTIVE)))
    if now.active != active:
        st.rerun()
    st.caption(f"Runs train on: {manager().describe()} · {now.running} running · {now.queued} queued")


def run_page(page: StreamlitPage) -> None:
    """Run the chosen page under the store's banner: a full disk is named above the page, and a store
    that fails mid-page (a damaged file, a write on a full disk) ends the page with its one line
    instead of a traceback."""
    if full := store().full():
        st.warning(full, icon=":material/hard_drive:")
    try:
        page.run()
    except STORE_FAULTS as exc:
        st.error(str(exc), icon=":material/error:")


def presentation_toggle() -> None:
    """The sidebar's presentation-layout switch, kept in the URL (`?layout=presentation`) so that a
    shared link opens in the layout it was made in; draws the layout's CSS while it is on."""
    wanted = st.query_params.get(LAYOUT_PARAM)
    if wanted is not None and wanted != st.session_state.get("_layout_seen"):
        st.session_state["_layout_seen"] = wanted
        st.session_state["presentation"] = wanted == "presentation"
    on = st.toggle(
        "Presentation layout",
        key="presentation",
        persist_state="session",
        help="For a projector (1280×720): text, charts, tables and metrics about twice their size, on Story, Diagnose "
        "and Compare. Kept in the page's address, so a link opens in it.",
    )
    if on:
        st.html(PRESENTATION_CSS)
        st.query_params[LAYOUT_PARAM] = "presentation"
    else:
        st.query_params.pop(LAYOUT_PARAM, None)
        st.query_params.pop("slide", None)  # a slide's place means nothing outside the slides
    st.session_state["_layout_seen"] = st.query_params.get(LAYOUT_PARAM)


def presented() -> bool:
    """Is the page in the presentation layout? Story, Diagnose and Compare then show slides (pages/slides.py)."""
    return bool(st.session_state.get("presentation"))


def side_by_side(count: int) -> list:
    """`count` columns on screen; in the presentation layout one full-width container each, one under another."""
    return [st.container() for _ in range(count)] if st.session_state.get("presentation") else st.columns(count, gap="medium")


def chart_width(columns: int = 1) -> float:
    """The width (px) a chart is laid out for, one of `columns` side by side (bnviz.figlayout wraps its text
    to it): the presentation layout stacks them at the projector's width, a screen splits ~900 px."""
    if st.session_state.get("presentation"):
        return figlayout.PRESENTATION_WIDTH
    return figlayout.DEFAULT_WIDTH if columns == 1 else figlayout.HALF_WIDTH


def scale() -> float:
    """The text scale every chart is drawn at: 2 in the presentation layout, else 1."""
    return PRESENTATION_SCALE if st.session_state.get("presentation") else 1.0


def table(frame: object, key: str) -> None:
    """A table: an interactive data grid on screen, an HTML table in the presentation layout (CSS can
    enlarge it there; the grid is drawn on a canvas at a fixed size)."""
    if st.session_state.get("presentation"):
        st.table(frame)
    else:
        st.dataframe(frame, key=key)


def legacy_multipage_mode() -> bool:
    """Is Streamlit running page files by themselves (its pages/-folder mode)? Streamlit has no public
    API for it: this is the one place that reads its internal `PagesManager` (tests/test_framework_seams.py
    fails with this function's name when an upgrade moves it)."""
    from streamlit.runtime.pages_manager import PagesManager

    return bool(PagesManager.uses_pages_directory)


def frame_if_run_alone() -> None:
    """Draw the frame when Streamlit ran this page file by itself. A pages/ folder beside app.py makes
    Streamlit start in its legacy multipage mode, where a deep link (/diagnose?run=...) on a fresh
    server, and every AppTest run, executes the page file directly instead of app.py; st.navigation
    then switches the server to the app.py navigation for good. So do what app.py does, and stop."""
    if legacy_multipage_mode():
        run_page(frame())
        st.stop()


# --- the job manager: one per server and home folder --------------------------------------------
def worker_count() -> int:
    """BNVIZ_MAX_WORKERS (default 1: one TensorFlow process already uses every core)."""
    try:
        return max(1, int(os.environ.get("BNVIZ_MAX_WORKERS", "1")))
    except ValueError:
        return 1


@st.cache_resource(show_spinner=False)
def _manager(home: str, workers: int, ray: str | None) -> JobManager:
    """Keyed on the home folder and executor, so a changed BNVIZ_HOME (tests) gets its own manager."""
    manager = JobManager(Store(home), max_workers=workers, ray_address=ray)
    manager.start_background()
    return manager


def manager() -> JobManager:
    """The server's job manager: local workers, or Ray when BNVIZ_RAY_ADDRESS is set (ConfigError
    when it is set and Ray is not installed)."""
    return _manager(str(default_home()), worker_count(), ray_address())


def store() -> Store:
    return manager().store


@st.cache_resource(show_spinner=False)
def _run_cache(home: str) -> RunCache:
    """One per server and home folder: every session reads a run's new records through it once."""
    return RunCache(Store(home))


@st.cache_resource(show_spinner=False, max_entries=64)
def _shared_figure(key: tuple, _build: Callable[[], object]) -> object:
    return frozen(_build())


def shared_figure(key: tuple, build: Callable[[], object]) -> object:
    """`build()` (a figure, or a dict of them) once per `key` for every session of the server: two
    students watching one training run cost one figure per new record, not two per poll. Key it on
    what the figure is drawn from (bnviz.live.records_version / steps_version, the widgets' choices);
    the result is shared, so never modify it."""
    return _shared_figure(key, build)


@st.cache_resource(show_spinner=False)
def _step_drawings() -> StepDrawings:
    return StepDrawings()


def shared_steps_figure(key: tuple, data: RunData, build: Callable[[], object]) -> object:
    """`shared_figure` for charts over the steps of `data`'s run (`key` says which, without the steps):
    while it trains, the sessions following it share one drawing per STEPS_REDRAW_S (bnviz.live.StepDrawings)."""
    drawings, key, now = _step_drawings(), (data.run.id, *key), time.monotonic()
    drawn = drawings.get(key, data, now)
    if drawn is not None:
        return drawn
    return drawings.put(key, data, now, shared_figure((*key, steps_version(data)), build))


def ranked_layer_names(data: RunData) -> list[str]:
    """The run's BN layers, furthest off first (bnviz.diagnose.ranked_layers), once per records_version
    for every session and page: 52 layers cost ~20 ms a ranking."""
    return shared_figure(("ranked layers", records_version(data)), lambda: [f.name for f in ranked_layers(all_layer_figures(data))])


def load_run(run: Run) -> RunData:
    """The run's stored data as of `run` (just read from the store): a training run's new records are
    read and appended, the rest comes from the server's cache. Shared by sessions: never modify it."""
    return _run_cache(str(store().home)).load(run)


@st.cache_data(show_spinner=False, ttl=10)
def scan(path: str) -> FolderScan:
    """bnviz.forms.scan_folder, cached briefly: the Train page calls it on every rerun."""
    return scan_folder(path)


# --- widgets ------------------------------------------------------------------------------------
def setting_widget(name: str, key: str, container: object = st, **kwargs: object) -> object:
    """The widget for setting `name` with its label, help and range or choices from the one table
    (bnviz.config.SETTINGS); `kwargs` go to the widget (format, disabled, ...)."""
    s = SETTING[name]
    shared = {"label": s.label, "key": key, "help": s.help or None, "persist_state": "session", **kwargs}
    if s.kind is bool:
        return container.checkbox(**shared)
    if s.choices:
        return container.selectbox(options=s.choices, **shared)
    low = 0 if s.auto else None if s.low is None or s.open_low else s.kind(s.low)
    high = None if s.high is None or s.open_high else s.kind(s.high)
    return container.number_input(min_value=low, max_value=high, step=1 if s.kind is int else None, **shared)


def defaults(values: dict) -> None:
    """Initialise session-state keys once (widgets then take their value from the state)."""
    for key, value in values.items():
        st.session_state.setdefault(key, value)


def ensure_choice(key: str, options: Sequence, default: object) -> None:
    """Reset `key` to `default` when its value is no longer among `options` (a run was deleted,
    another layer was picked), so select widgets never hold a stale value."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def _seen_key(param: str, open_key: str) -> str:
    """Where a page remembers the `?param=` it last applied or wrote: one key per page (`open_key` names
    it), since pages share parameter names: Compare's `runs` must not count as seen by Export."""
    return f"_{open_key}_{param}_seen"


def _requested(param: str, open_key: str) -> str | list[str] | None:
    """A new request to show given runs: a session key set by another page, else a query
    parameter that changed since this page last applied it."""
    if open_key in st.session_state:
        return st.session_state.pop(open_key)
    value = st.query_params.get(param)
    seen = _seen_key(param, open_key)
    if value is None or value == st.session_state.get(seen):
        return None
    st.session_state[seen] = value
    return value


def url_choice(param: str, key: str, options: dict[str, object]) -> None:
    """Apply `?param=` to the widget state `key` when the URL changed since this page last set it:
    `options` maps the URL's words to widget values; a word not among them gets a warning, and the
    widget keeps its value. Call `keep_in_url` after the widget."""
    wanted = _requested(param, f"_{param}_open")
    if wanted is None:
        return
    if wanted in options:
        st.session_state[key] = options[wanted]
    else:
        st.warning(f"The link's {param} {_quoted(str(wanted))} is not one of: {', '.join(options)}; showing another.")


def keep_in_url(param: str, value: str, open_key: str | None = None) -> None:
    """Keep `?param=value` in step with a widget, so the address can be shared (`open_key`: the page's,
    as `_requested` was given it; url_choice's by default)."""
    st.query_params[param] = value
    st.session_state[_seen_key(param, open_key or f"_{param}_open")] = value


def _quoted(text: str) -> str:
    """A user-supplied id as inline code, shortened, without backticks that would end it."""
    return "`" + text.replace("`", "")[:40] + "`"


def pick_run(key: str, runs: Sequence[Run], default: str, param: str = "run", label: str = "Run") -> Run:
    """A selectbox of runs honouring `?run=` and `st.session_state["<page>_open"]`; keeps the URL
    in step with the choice, so it can be shared."""
    ids, open_key = [r.id for r in runs], key.split("_")[0] + "_open"
    wanted = _requested(param, open_key)
    if isinstance(wanted, str) and wanted in ids:
        st.session_state[key] = wanted
    elif wanted:
        st.warning(f"No run {_quoted(str(wanted))} here; showing another one.")
    ensure_choice(key, ids, default)
    chosen = st.selectbox(label, ids, key=key, format_func=run_labels(runs).get, persist_state="session")
    keep_in_url(param, chosen, open_key)
    return next(r for r in runs if r.id == chosen)


def pick_runs(key: str, runs: Sequence[Run], default: list[str], param: str = "runs", label: str = "Runs") -> list[Run]:
    """A multiselect of runs honouring `?runs=a,b` and `st.session_state["<page>_open"]`."""
    ids, open_key = [r.id for r in runs], key.split("_")[0] + "_open"
    wanted = _requested(param, open_key)
    if isinstance(wanted, str):
        wanted = [w for w in wanted.split(",") if w]
    if wanted is not None and [w for w in wanted if w in ids]:
        st.session_state[key] = [w for w in wanted if w in ids]
    if wanted is not None and any(w not in ids for w in wanted):
        st.warning(f"Not found here: {', '.join(_quoted(w) for w in wanted if w not in ids)}")
    if key not in st.session_state or any(i not in ids for i in st.session_state[key]):
        st.session_state[key] = [i for i in st.session_state.get(key, default) if i in ids] or default
    by_id = {r.id: r for r in runs}
    chosen = st.multiselect(label, ids, key=key, format_func=run_labels(runs).get, persist_state="session")
    if chosen:
        st.query_params[param] = ",".join(chosen)
    else:
        st.query_params.pop(param, None)
    st.session_state[_seen_key(param, open_key)] = ",".join(chosen)
    return [by_id[i] for i in chosen]


def run_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run id → a label unique among `runs` for pickers, with the status unless the run is done."""
    labels = unique_labels(runs)
    return {r.id: labels[r.id] if r.status == RunStatus.DONE else f"{labels[r.id]} ({r.status})" for r in runs}


def export_request(run_key: str, others_key: str, ids: Sequence[str]) -> None:
    """Honour `?runs=a,b,…` on Export (Compare's link): the first becomes the run, the rest the
    runs compared with it; later choices keep the URL in step (`keep_export_runs`)."""
    wanted = _requested("runs", EXPORT_OPEN)
    wanted = [w for w in (wanted.split(",") if isinstance(wanted, str) else wanted or []) if w in ids]
    if wanted:
        st.session_state[run_key], st.session_state[others_key] = wanted[0], wanted[1:]
        st.query_params.pop("run", None)


def keep_export_runs(ids: Sequence[str]) -> None:
    """Export's runs in its address (`?runs=a,b`), seen by Export alone."""
    keep_in_url("runs", ",".join(ids), EXPORT_OPEN)


def slug(text: str) -> str:
    """`text` as a file-name part: lower-case letters, digits and dashes."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def run_stem(run: Run) -> str:
    """A run in a download's file name: its name and the end of its id."""
    return slug(f"{run.name or 'run'}-{run.id[-6:]}")


def own_model_text(run: Run) -> str | None:
    """A one-line description, as Markdown, of a model bnviz did not build (its config fields say little), else None."""
    layers = len(run.info.get("bn_layers", []))
    if run.info.get("source") == "callback":
        return f"your own model, recorded in your script by bnviz.Probe · {layers} BN layers · {run.total_steps or 0:,} steps · batch {run.config.batch_size}"
    if inspected(run):
        return f"a saved model, inspected (training history unknown) · {layers} BN layers · images: {md_literal(run.config.dataset)}"
    return None


def status_badge(status: str) -> str:
    """A coloured Markdown badge for a run status."""
    return f":{STATUS_COLOURS.get(status, 'gray')}-badge[{status}]"


def newest_done(runs: Sequence[Run], count: int = 1) -> list[str]:
    """Ids of the newest done runs (runs come newest first), else of the newest runs."""
    done = [r.id for r in runs if r.status == RunStatus.DONE]
    return (done or [r.id for r in runs])[:count]


def chart(fig: go.Figure, key: str) -> None:
    """A Plotly chart in the figure's own style (bnviz.figures sets colours meant to be kept)."""
    st.plotly_chart(fig, key=key, theme=None, config=PLOT_CONFIG)


def require(condition: object, message: str, link: str | None = None, link_label: str = "") -> None:
    """Show `message` and stop the page when `condition` is false."""
    if not condition:
        st.info(message)
        if link:
            st.page_link(PAGE_FILES[link], label=link_label or link.capitalize())
        st.stop()


# --- scores: accuracy, or the loss where the targets are not classes --------------------------------
MODES = {"inference mode (moving statistics)": "", "training mode (batch statistics)": "_batchstats"}  # row label -> key suffix


def is_values(run: Run) -> bool:
    """Whether the run's targets are values, not classes: it has no accuracy, only a loss."""
    return run.info.get("task") == "values"


def score_name(run: Run) -> str:
    """'accuracy', or the name of the loss that stands in for it."""
    return (run.info.get("loss_name") or "loss") if is_values(run) else "accuracy"


def score_title(run: Run) -> str:
    """'Accuracy', or 'Loss (mse)': what a table of the run's figures holds."""
    return f"Loss ({score_name(run)})" if is_values(run) else "Accuracy"


def scores(run: Run, evaluation: Evaluation) -> dict[str, float]:
    """An evaluation's figures by flat key ('test', 'test_batchstats'): accuracies, or losses for a values run."""
    return evaluation.losses() if is_values(run) else evaluation.accuracies()


def score_text(run: Run, value: float | None, places: int = 1) -> str:
    """'28.0%', a loss as '0.0123' for a values run, and '–' (never 'nan') where nothing was measured."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}" if is_values(run) else f"{value:.{places}%}"


def score_table(run: Run, rows: dict[str, tuple[Evaluation, str]]) -> pd.DataFrame:
    """A row per label, a column per split: the row's evaluation's figures with its key suffix ('' or
    '_batchstats'); NaN where not measured."""
    return pd.DataFrame(
        [[scores(run, ev).get(s + suffix, math.nan) for s in SPLITS] for ev, suffix in rows.values()], index=list(rows), columns=list(SPLITS), dtype=float
    )


def modes_table(run: Run, evaluation: Evaluation) -> pd.DataFrame:
    """Every split in both BN modes."""
    return score_table(run, {label: (evaluation, suffix) for label, suffix in MODES.items()})


def styled(run: Run, frame: pd.DataFrame) -> Styler:
    """`frame`'s figures written as `score_text` writes them."""
    return frame.style.format(lambda value: score_text(run, value))


# --- findings -----------------------------------------------------------------------------------
def finding_markdown(finding: Finding, remedies: bool = True) -> str:
    """A finding as Markdown: its title in bold, its sentence, and its remedies as a list. Shown as
    text: a finding names layers, and a model's layer names are its author's."""
    listed = "".join(f"\n- {md_literal(r)}" for r in finding.remedies) if remedies else ""
    return f"**{md_literal(finding.title)}**\n\n{md_literal(finding.detail)}{listed}"


def show_findings(data: RunData, shown: int = 3) -> Finding:
    """The diagnosis: the verdict, then the next critical or warning findings (`shown` callouts in
    all), the rest folded into an expander."""
    top, *items = diagnose(data)
    st.subheader("Findings")
    shows = {"critical": st.error, "warning": st.warning, "unknown": st.warning, "info": st.info, "ok": st.success}
    major = [top] + [f for f in items if f.severity in ("critical", "warning")][: shown - 1]  # the verdict always, first
    for finding in major:
        shows[finding.severity](finding_markdown(finding))
    rest = [f for f in items if f not in major]
    if rest:
        with st.expander(f"{len(rest)} more finding{'s' if len(rest) > 1 else ''}", expanded=not major):
            for finding in rest:
                shows[finding.severity](finding_markdown(finding))
    return top


@st.fragment(run_every=1.5)
def await_job(job_id: str, doing: str, cancel_key: str | None = None) -> None:
    """Poll a background job in the store; rerun the whole page when it ends, so every chart sees its
    result. While it is still queued, a `cancel_key` button drops it."""
    job = store().get_job(job_id)
    if not job.status.active:
        st.rerun()
    st.info(f"{doing} in a worker process… {md_literal(job.progress or job.status)}", icon=":material/hourglass_top:")
    if cancel_key and job.status == RunStatus.QUEUED and st.button("Cancel", key=cancel_key, help="Still queued: drop it"):
        store().cancel_job(job_id)
        st.rerun()


def rerun_on_change(runs: Sequence[Run]) -> None:
    """For pages that show ended runs only (Story): while any of `runs` is queued or training, rerun the
    page when one's status moves on; nothing to poll once all have ended."""
    watch(any(r.status.active for r in runs), [r.id for r in runs], detail=False)


def follow(body: Callable[..., None], active: bool, *args: object, runs: Sequence[str] | None = None, detail: bool = True) -> None:
    """Draw `body(active, *args)` as a fragment (its widgets rerun it alone) and `watch` the `runs` it
    shows (ids; None: every run) while `active`: something it shows is queued or training."""
    seen = watched(runs, detail) if active else None  # read before the body reads: what lands in between is drawn at the next poll
    st.fragment(body)(active, *args)
    if seen is not None:
        _add_watch(Watch(runs, detail, seen))


def watch(active: bool, runs: Sequence[str] | None, detail: bool = True) -> None:
    """While `active`, rerun the page when the `runs` it shows (ids; None: every run) move on: every
    POLL_S seconds one small query (Store.marks) and no redraw, unless a status, a record or an
    evaluation moved (or, in `detail`, the steps, at most every STEPS_REDRAW_S; bnviz.live.View). The
    sidebar's and the page's watches share one watcher (bnviz.live.Watches)."""
    if active:
        _add_watch(Watch(runs, detail, watched(runs, detail)))


def _add_watch(one: Watch) -> None:
    """Add `one` to this script run's watches, and start the watcher unless it runs already."""
    watches = st.session_state.setdefault(WATCHES_KEY, Watches())
    watches.watches.append(one)
    if not watches.started:
        watches.started = True
        st.fragment(_redraw_when_moved, run_every=POLL_S)(watches)


def watched(runs: Sequence[str] | None, detail: bool) -> View:
    return view(store().marks(runs), detail)


def _redraw_when_moved(watches: Watches) -> None:
    """The watcher's poll: a fragment that draws nothing and reruns the app when what it watches moved."""
    if watches.moved(store().marks(watches.runs()), time.monotonic()):
        st.rerun()


def home_path() -> Path:
    return store().home
