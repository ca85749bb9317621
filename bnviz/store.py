"""The run store: one SQLite file (WAL mode) plus saved `.keras` models under a home folder.

It is the only channel between training processes and the dashboard. Every write is one
transaction, so a worker killed mid-run leaves every record up to its last commit.

Data contract (arrays are little-endian float32 blobs, histogram counts int32):
- runs: one row per run (config JSON, status, timings, pid, error, model path, info JSON).
- steps: per training step, loss and accuracy as `fit` reports them (running epoch means).
- probes: per probe step, accuracy/loss on the fixed validation probe batch in training mode
  (batch statistics) and inference mode (moving statistics).
- probe_layers: per probe step and BN layer, per channel: moving mean/variance, the BN input's
  mean/variance on the training batch of that step, and its population mean/variance over a
  fixed training sample; plus histograms of the BN output on the probe batch in both modes with
  shared bin edges (`bins + 1` edges, values outside the edges fall into the end bins; an
  all-equal layer gets edges value ± 0.5).
- evaluations: named metric sets per run ("final", "precisebn", ...), JSON.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bnviz.config import RunConfig
from bnviz.stats import probe_steps

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled", "interrupted")
RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
LAYER_ARRAYS = ("moving_mean", "moving_var", "batch_mean", "batch_var", "pop_mean", "pop_var", "hist_edges")
HIST_ARRAYS = ("hist_train", "hist_infer")
CALLBACK_GRACE = 300.0  # seconds without a commit before a run in the user's own process counts as dead

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, preset TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, heartbeat REAL,
    pid INTEGER, error TEXT, steps_per_epoch INTEGER, total_steps INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0, sweep TEXT, parent TEXT, model_path TEXT,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL, loss REAL, accuracy REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS probes (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL,
    acc_train_mode REAL, acc_inference REAL, loss_train_mode REAL, loss_inference REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS probe_layers (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, layer TEXT NOT NULL,
    moving_mean BLOB, moving_var BLOB, batch_mean BLOB, batch_var BLOB, pop_mean BLOB, pop_var BLOB,
    hist_edges BLOB, hist_train BLOB, hist_infer BLOB,
    PRIMARY KEY (run_id, step, layer)
);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created);
"""


class StoreError(LookupError):
    """A run id that is malformed or unknown."""


def default_home() -> Path:
    """`BNVIZ_HOME`, else ./bnviz-runs."""
    return Path(os.environ.get("BNVIZ_HOME", "bnviz-runs")).expanduser().resolve()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def check_run_id(run_id: str) -> str:
    """Run ids become file names: refuse anything but the generated shape."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise StoreError(f"Malformed run id. Received: {run_id!r}")
    return run_id


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    preset: str
    config: RunConfig
    status: str
    created: float
    started: float | None
    finished: float | None
    heartbeat: float | None
    pid: int | None
    error: str | None
    steps_per_epoch: int | None
    total_steps: int | None
    cancel_requested: bool
    sweep: str | None
    parent: str | None
    model_path: str | None
    info: dict

    @property
    def momentum(self) -> float:
        return self.config.arch.bn.momentum

    @property
    def label(self) -> str:
        """Short human label: name, momentum when the model has BN."""
        bn = f" m={self.momentum:g}" if self.config.arch.norm == "batch" else ""
        return f"{self.name or self.preset or 'custom'}{bn} · {self.id[-6:]}"


@dataclass(frozen=True)
class ProbeLayer:
    """One BN layer at one probe step (see the module docstring)."""

    layer: str
    moving_mean: np.ndarray
    moving_var: np.ndarray
    batch_mean: np.ndarray
    batch_var: np.ndarray
    pop_mean: np.ndarray
    pop_var: np.ndarray
    hist_edges: np.ndarray
    hist_train: np.ndarray
    hist_infer: np.ndarray


@dataclass(frozen=True)
class ProbeRecord:
    step: int
    epoch: int
    acc_train_mode: float
    acc_inference: float
    loss_train_mode: float
    loss_inference: float
    layers: tuple[ProbeLayer, ...]


@dataclass(frozen=True)
class LayerTrace(ProbeLayer):
    """One BN layer over all probe steps: each array gains a leading probe axis, so arrays are
    shaped (probes, channels) or (probes, bins); `steps` names the probe steps."""

    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))


@dataclass(frozen=True)
class RunData:
    """Everything stored about one run, as figures and the diagnosis consume it."""

    run: Run
    steps: pd.DataFrame  # step, epoch, loss, accuracy
    probes: pd.DataFrame  # step, epoch, acc_train_mode, acc_inference, loss_train_mode, loss_inference
    layers: dict[str, LayerTrace] = field(default_factory=dict)
    evaluations: dict[str, dict] = field(default_factory=dict)


def _blob(array: np.ndarray, dtype: str = "<f4") -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _array(blob: bytes | None, dtype: str = "<f4") -> np.ndarray:
    return np.frombuffer(blob or b"", dtype=dtype)


class Store:
    """A handle on a home folder; cheap to create, safe to share across threads and processes
    (each call opens its own short-lived connection)."""

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser().resolve() if home else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.models_dir = self.home / "models"
        self.models_dir.mkdir(exist_ok=True)
        self.path = self.home / "runs.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=60000")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so writers queue instead of deadlocking."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def model_path(self, run_id: str) -> Path:
        return self.models_dir / f"{check_run_id(run_id)}.keras"

    # --- runs -------------------------------------------------------------------------------
    def create_run(self, config: RunConfig, status: str = "queued", sweep: str | None = None, parent: str | None = None) -> str:
        run_id = new_run_id()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (id, name, preset, config, status, created, sweep, parent) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, config.name, config.preset, config.to_json(), status, time.time(), sweep, parent),
            )
        return run_id

    def claim_next(self, pid: int) -> str | None:
        """Atomically move the oldest queued run to running for worker `pid`."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM runs WHERE status='queued' ORDER BY created, id LIMIT 1").fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute("UPDATE runs SET status='running', pid=?, started=?, heartbeat=? WHERE id=?", (pid, now, now, row["id"]))
            return row["id"]

    def start(self, run_id: str, pid: int, steps_per_epoch: int, total_steps: int, info: dict) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status='running', pid=?, started=COALESCE(started, ?), heartbeat=?, steps_per_epoch=?, "
                "total_steps=?, info=? WHERE id=?",
                (pid, now, now, steps_per_epoch, total_steps, json.dumps(info), check_run_id(run_id)),
            )

    def finish(self, run_id: str, status: str, error: str | None = None, model_path: str | None = None) -> None:
        if status not in FINISHED:
            raise ValueError(f"Not a final status. Received: {status!r}")
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status=?, error=?, finished=?, model_path=COALESCE(?, model_path) WHERE id=?",
                (status, error, time.time(), model_path, check_run_id(run_id)),
            )

    def update_info(self, run_id: str, **info: object) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT info FROM runs WHERE id=?", (check_run_id(run_id),)).fetchone()
            merged = {**json.loads(row["info"]), **info}
            db.execute("UPDATE runs SET info=? WHERE id=?", (json.dumps(merged), run_id))

    def request_cancel(self, run_id: str) -> None:
        """Ask a run to stop: queued runs are cancelled now, running ones at their next step."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET cancel_requested=1 WHERE id=?", (check_run_id(run_id),))
            db.execute("UPDATE runs SET status='cancelled', finished=? WHERE id=? AND status='queued'", (time.time(), run_id))

    def cancel_requested(self, run_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM runs WHERE id=?", (check_run_id(run_id),)).fetchone()
        return bool(row and row["cancel_requested"])

    def get_run(self, run_id: str) -> Run:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (check_run_id(run_id),)).fetchone()
        if row is None:
            raise StoreError(f"No run {run_id!r} in {self.home}")
        return _run_from_row(row)

    def list_runs(self, status: Sequence[str] | None = None, sweep: str | None = None) -> list[Run]:
        """Runs, newest first, optionally filtered by status or sweep."""
        query, args = "SELECT * FROM runs WHERE 1=1", []
        if status:
            query += f" AND status IN ({','.join('?' * len(status))})"
            args += list(status)
        if sweep:
            query += " AND sweep=?"
            args.append(sweep)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created DESC, id DESC", args).fetchall()
        return [_run_from_row(r) for r in rows]

    def mark_interrupted(self, is_alive) -> list[str]:
        """Mark running runs whose worker process is gone (`is_alive(pid)` false) as interrupted. A
        run recorded by `bnviz.Probe` lives in the user's own process, which `is_alive` cannot tell
        from a reused pid: it counts as alive while its heartbeat is younger than `CALLBACK_GRACE`."""
        now = time.time()
        lost = [r.id for r in self.list_runs(status=["running"]) if not (r.pid and is_alive(r.pid))
                and not (r.info.get("source") == "callback" and now - (r.heartbeat or 0) < CALLBACK_GRACE)]
        with self._transaction() as db:
            for run_id in lost:
                db.execute(
                    "UPDATE runs SET status='interrupted', finished=?, error=COALESCE(error, ?) WHERE id=? AND status='running'",
                    (time.time(), "The worker process died; every record up to its last commit is kept.", run_id),
                )
        return lost

    def delete_run(self, run_id: str) -> None:
        with self._transaction() as db:
            for table in ("steps", "probes", "probe_layers", "evaluations"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (check_run_id(run_id),))
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        self.model_path(run_id).unlink(missing_ok=True)

    # --- records ----------------------------------------------------------------------------
    def add_records(self, run_id: str, steps: Sequence[tuple[int, int, float, float]] = (), probes: Sequence[ProbeRecord] = ()) -> None:
        """Commit step metrics (step, epoch, loss, accuracy) and probe records in one transaction."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?)", [(run_id, *s) for s in steps])
            for p in probes:
                db.execute(
                    "INSERT OR REPLACE INTO probes VALUES (?,?,?,?,?,?,?)",
                    (run_id, p.step, p.epoch, p.acc_train_mode, p.acc_inference, p.loss_train_mode, p.loss_inference),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO probe_layers VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (run_id, p.step, lay.layer, *(_blob(getattr(lay, a)) for a in LAYER_ARRAYS),
                         *(_blob(getattr(lay, a), "<i4") for a in HIST_ARRAYS))
                        for lay in p.layers
                    ],
                )
            db.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), run_id))

    def add_evaluation(self, run_id: str, name: str, metrics: dict) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO evaluations VALUES (?,?,?,?)", (check_run_id(run_id), name, time.time(), json.dumps(metrics)))

    def evaluations(self, run_id: str) -> dict[str, dict]:
        with self._connect() as db:
            rows = db.execute("SELECT name, metrics FROM evaluations WHERE run_id=? ORDER BY created", (check_run_id(run_id),)).fetchall()
        return {r["name"]: json.loads(r["metrics"]) for r in rows}

    def progress(self, run_id: str) -> dict:
        """The latest step row plus the run's step budget, and the probe records stored out of
        those scheduled (the probe makes some once training ends), for progress bars."""
        run = self.get_run(run_id)
        with self._connect() as db:
            row = db.execute("SELECT * FROM steps WHERE run_id=? ORDER BY step DESC LIMIT 1", (run_id,)).fetchone()
            records = db.execute("SELECT COUNT(*) FROM probes WHERE run_id=?", (run_id,)).fetchone()[0]
        latest = dict(row) if row else {"step": 0, "epoch": 0, "loss": None, "accuracy": None}
        total, probe = run.total_steps or 0, run.config.probe
        scheduled = len(probe_steps(total, run.steps_per_epoch or 1, probe.every)) if total and probe.enabled else 0
        return {**latest, "total_steps": total, "fraction": min(1.0, latest["step"] / total) if total else 0.0, "status": run.status,
                "probe_records": records, "probe_scheduled": scheduled}

    def load_run(self, run_id: str) -> RunData:
        """All stored data of one run (see the module docstring for the layout)."""
        run = self.get_run(run_id)
        with self._connect() as db:
            steps = pd.read_sql_query("SELECT step, epoch, loss, accuracy FROM steps WHERE run_id=? ORDER BY step", db, params=(run_id,))
            probes = pd.read_sql_query(
                "SELECT step, epoch, acc_train_mode, acc_inference, loss_train_mode, loss_inference FROM probes "
                "WHERE run_id=? ORDER BY step", db, params=(run_id,))
            rows = db.execute("SELECT * FROM probe_layers WHERE run_id=? ORDER BY layer, step", (run_id,)).fetchall()
        return RunData(run=run, steps=steps, probes=probes, layers=_layer_traces(rows), evaluations=self.evaluations(run_id))


def _layer_traces(rows: Sequence[sqlite3.Row]) -> dict[str, LayerTrace]:
    grouped: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        grouped.setdefault(row["layer"], []).append(row)
    traces = {}
    for layer, items in grouped.items():
        arrays = {a: np.stack([_array(r[a]) for r in items]) for a in LAYER_ARRAYS}
        hists = {a: np.stack([_array(r[a], "<i4") for r in items]) for a in HIST_ARRAYS}
        traces[layer] = LayerTrace(layer=layer, steps=np.array([r["step"] for r in items]), **arrays, **hists)
    return traces


def _run_from_row(row: sqlite3.Row) -> Run:
    values = dict(row)
    values["config"] = RunConfig.from_json(values["config"])
    values["info"] = json.loads(values["info"] or "{}")
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Run(**values)
