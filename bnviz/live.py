"""Following runs while they train, for pages that poll the store: one count of what is queued,
running and done (every page counts with it, so no two disagree about the same store state), and
the latest data of each followed run, extended by only the records stored since the last read.
No Streamlit: the dashboard keeps one `RunCache` per server and home folder."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from bnviz.records import Mark, Run, RunData, RunStatus
from bnviz.store import Store

STEP_REDRAWS = 100  # the charts over the steps are redrawn every 1 % of a training run (and with each probe record)
STEPS_REDRAW_S = 5.0  # a page following a run draws its new steps at most this often; a record or a status at the next poll
CACHED_RUNS = 32  # runs whose data a server keeps between polls (a classroom's story and sweeps fit)


@dataclass(frozen=True)
class Activity:
    """How many of some runs are queued, running and done, out of how many."""

    queued: int = 0
    running: int = 0
    done: int = 0
    total: int = 0

    @property
    def active(self) -> bool:
        """Is anything queued or running? Pages poll the store only while it is."""
        return bool(self.queued or self.running)


def activity(runs: Sequence[Run]) -> Activity:
    """The counts of `runs` (one read of the store): the sidebar, Runs, Sweep and Story all count with this."""
    statuses = [r.status for r in runs]
    return Activity(statuses.count(RunStatus.QUEUED), statuses.count(RunStatus.RUNNING), statuses.count(RunStatus.DONE), len(statuses))


def version(run: Run) -> tuple:
    """What changes whenever the run's stored data does: its status, and the heartbeat that every
    commit of records sets."""
    return run.status, run.heartbeat, run.finished


def records_version(data: RunData) -> tuple:
    """What changes when the run's probe records or evaluations do (not with each step row): the
    charts drawn from the records alone (histograms, drift, per-channel error) keep until it moves."""
    return data.run.id, data.run.status, len(data.probes), int(data.probes["step"].iloc[-1]) if len(data.probes) else -1, len(data.evaluations)


def steps_version(data: RunData) -> tuple:
    """`records_version` and the steps trained, counted in hundredths of the run (STEP_REDRAWS): what
    the charts over the steps (curves, mᵗ) are redrawn for, at most STEP_REDRAWS times a run however
    often sessions poll, so the sessions watching one run share each drawing."""
    return (*records_version(data), hundredths(data.steps_trained, data.run.total_steps or 0))


def hundredths(step: int, total_steps: int) -> int:
    """`step` counted in STEP_REDRAWS-ths of a run of `total_steps`."""
    return step // max(1, total_steps // STEP_REDRAWS)


@dataclass(frozen=True)
class View:
    """How far the runs a page shows have got, as the page drew them (`view`): `at_once` holds what is
    drawn at the next poll when it moves (the runs shown, their statuses and, in detail, their records
    and evaluations), `steps` what is drawn at most every STEPS_REDRAW_S (steps trained, in hundredths)."""

    at_once: tuple
    steps: tuple = ()

    def redraw_due(self, now: View, since_s: float) -> bool:
        """Must a page drawn at this view `since_s` seconds ago draw again, the runs being at `now`?"""
        return now.at_once != self.at_once or (now.steps != self.steps and since_s >= STEPS_REDRAW_S)


def view(marks: dict[str, Mark], detail: bool = True) -> View:
    """The `View` of runs at `marks` (Store.marks) for a page that shows their records (`detail`) or
    only their statuses (a count, a list of ended runs)."""
    if not detail:
        return View(tuple((run_id, m.status) for run_id, m in marks.items()))
    return View(
        tuple((run_id, m.status, m.records, m.evaluations) for run_id, m in marks.items()),
        tuple(hundredths(m.step, m.total_steps) for m in marks.values()),
    )


def marks_of(marks: dict[str, Mark], runs: Sequence[str] | None) -> dict[str, Mark]:
    """`marks` (Store.marks) of `runs` only (None: all), in the store's order, as `Store.marks(runs)` gives them."""
    if runs is None:
        return marks
    wanted = set(runs)
    return {i: m for i, m in marks.items() if i in wanted}


@dataclass(frozen=True)
class Watch:
    """Runs a part of a page follows (ids; None: every run), in `detail` or by status only, and the
    `View` of them it was drawn at."""

    runs: Sequence[str] | None
    detail: bool
    seen: View


@dataclass
class Watches:
    """The watches of one drawing of a page (the sidebar's count, the page's runs), polled together: one
    store query and one check per poll, however many parts of the page follow runs."""

    watches: list[Watch] = field(default_factory=list)
    drawn_at: float = field(default_factory=time.monotonic)
    started: bool = False  # is a watcher polling them?

    def runs(self) -> list[str] | None:
        """The ids whose marks the watches compare (None: every run)."""
        if any(w.runs is None for w in self.watches):
            return None
        return list(dict.fromkeys(i for w in self.watches for i in w.runs))

    def moved(self, marks: dict[str, Mark], now: float) -> bool:
        """Must the page draw again, its runs being at `marks` (of `runs()`) at monotonic time `now`?"""
        return any(w.seen.redraw_due(view(marks_of(marks, w.runs), w.detail), now - self.drawn_at) for w in self.watches)


class StepDrawings:
    """The newest drawing of each chart over a training run's steps, for every session of a server
    (thread-safe). Sessions following one run poll up to a poll apart, so each would see other steps
    and draw anew; while the run trains, a drawing of the same records made less than STEPS_REDRAW_S
    ago is shown instead, steps being redrawn that often anyway (View.redraw_due)."""

    def __init__(self, size: int = 4 * CACHED_RUNS):
        self.size = size
        self._drawn: OrderedDict[tuple, tuple[tuple, float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, data: RunData, now: float) -> object | None:
        """The drawing of `key` to show of `data` at monotonic time `now`, None when one must be made."""
        with self._lock:
            drawn = self._drawn.get(key)
        if drawn is None or data.run.status != RunStatus.RUNNING:
            return None
        records, at, built = drawn
        return built if records == records_version(data) and now - at < STEPS_REDRAW_S else None

    def put(self, key: tuple, data: RunData, now: float, built: object) -> object:
        """Keep `built`, drawn of `data` at `now`, as `key`'s newest drawing; returns it."""
        with self._lock:
            self._drawn[key] = (records_version(data), now, built)
            self._drawn.move_to_end(key)
            while len(self._drawn) > self.size:
                self._drawn.popitem(last=False)
        return built


def _same_training(before: Run, now: Run) -> bool:
    """Can `now`'s records extend those read at `before`? Only within one training of the run that was
    running then: a run started again (a new `started`) may rewrite its steps from the first."""
    return before.status == RunStatus.RUNNING and before.started == now.started


class RunCache:
    """The latest data of the runs pages show, shared by every session of a server (thread-safe): a
    run whose version moved is extended by its new records only (`Store.load_run(since=)`), so two
    students watching a training run cost one read of each record."""

    def __init__(self, store: Store, size: int = CACHED_RUNS):
        self.store, self.size = store, size
        self._data: OrderedDict[str, tuple[tuple, RunData]] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, run: Run) -> RunData:
        """`run`'s stored data as of `run`'s version (a `Run` just read from the store)."""
        with self._lock:
            seen = self._data.get(run.id)
            if seen is None or seen[0] != version(run):
                since = seen[1] if seen and _same_training(seen[1].run, run) else None
                seen = (version(run), self.store.load_run(run.id, since=since))
                self._data[run.id] = seen
            self._data.move_to_end(run.id)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
            return seen[1]
