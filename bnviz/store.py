"""The run store: one SQLite file (WAL mode) plus saved `.keras` models under a home folder.

It is the only channel between background work and the dashboard. Every write is one
transaction, so a worker killed mid-run leaves every record up to its last commit.

Jobs (the one background channel): `enqueue_job(kind, args, run_id)` queues a job; worker
processes (`bnviz.tf.worker`) claim the oldest queued job of any kind (`claim_job`) and run the
handler that `bnviz.jobs.JOB_HANDLERS` names for its kind, reporting a one-line `progress` text
and, on failure, an `error` text; `get_job` / `list_jobs` read them back as `Job` records. A
queued run always has its "train" job (`create_run` adds it in the same transaction).

Liveness: a running run or job records its owner (host, pid, process start time). Every reader
(`get_run`, `list_runs`, `get_job`, `list_jobs`) first marks running runs and jobs whose owner is
gone as interrupted, keeping their records. A run trained on a Ray node is owned by the Ray driver
on the store's host (`bnviz.rayexec`), which marks it interrupted itself when its node or worker
dies; `info["node"]` names the node. A home that is not a folder or a file that is not a
bnviz store raises `StoreUnreadable` and nothing is written.

Faults of the file system reach callers as one-line `StoreError`s, never as SQLite's own errors:
every connection (`Store._connect`) turns a damaged file into `StoreUnreadable` (which points to
`bnviz doctor`) and a full disk into `StoreFull` (with the megabytes left). Reads work on a full
disk: marking dead owners is then left to a later reader, and readers show those rows as
interrupted meanwhile. A final status is the one write that must land: `home/reserve` keeps
`RESERVE_BYTES` set aside while there is space and is given up for it when the disk is full.

Data contract (arrays are little-endian float32 blobs, histogram counts int32):
- runs: one row per run (config JSON, status, timings, owner host/pid/start, error, model path,
  info JSON: "params" {total, trainable, non_trainable}, "layers" (bnviz.tf.models.layer_rows),
  "data" (Dataset.summary), "data_shift", and once done "seconds" and "steps").
- jobs: one row per background job (kind, args JSON, run id, status, progress, error, owner).
- steps: per training step, loss and accuracy as `fit` reports them (running epoch means).
- probes: per probe step, accuracy/loss on the fixed validation probe batch in training mode
  (batch statistics) and inference mode (moving statistics).
- probe_layers: per probe step and BN layer, per channel: moving mean/variance, the BN input's
  mean/variance on the training batch of that step (NaN at step 0, and a variance below the
  resolution of the moving-average update, see `bnviz.stats.recover_batch_moments`), and its
  population mean/variance over a fixed training sample; plus histograms of the BN output on the probe batch in both modes with
  shared bin edges (`bins + 1` edges, values outside the edges fall into the end bins; an
  all-equal layer gets edges value ± 0.5); the BN input's mean/variance over the same training
  sample with the *whole network in inference mode* (`infer_mean`/`infer_var`: what inference
  actually feeds the layer, upstream errors included); and `iid_mean_sd`, the standard deviation
  of the BN input's mean between i.i.d. batches of the training batch size drawn from that sample
  (the sampling noise a training batch's mean should show). The population fields are measured at
  every `population_every`-th record and the last (the inference-mode ones at the last only); the
  records between hold NaN there.
- evaluations: named `Evaluation`s per run ("final", "recalibrated", "precisebn", ...), JSON.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from bnviz import uploads
from bnviz.config import RunConfig
from bnviz.records import (
    ACTIVE,
    FINISHED,
    HIST_ARRAYS,
    LAYER_ARRAYS,
    Evaluation,
    Job,
    JobStatus,
    LayerTrace,
    Mark,
    Owner,
    ProbeRecord,
    Progress,
    Run,
    RunData,
    RunStatus,
    process_start,
)
from bnviz.stats import probe_steps

__all__ = ["ACTIVE", "FINISHED", "Evaluation", "Job", "JobStatus", "Owner", "Progress", "RunStatus", "Store", "StoreError", "StoreFull", "StoreUnreadable"]
RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, preset TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, heartbeat REAL,
    pid INTEGER, error TEXT, steps_per_epoch INTEGER, total_steps INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0, sweep TEXT, parent TEXT, model_path TEXT,
    info TEXT NOT NULL DEFAULT '{}', host TEXT, pid_start REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, args TEXT NOT NULL, run_id TEXT, status TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '', error TEXT, created REAL NOT NULL, started REAL, finished REAL,
    host TEXT, pid INTEGER, pid_start REAL, cancel_requested INTEGER NOT NULL DEFAULT 0
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
    hist_edges BLOB, hist_train BLOB, hist_infer BLOB, infer_mean BLOB, infer_var BLOB, iid_mean_sd BLOB,
    PRIMARY KEY (run_id, step, layer)
);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created);
"""
ADDED_COLUMNS = {  # columns newer than the first stores; old rows read them as NULL (empty arrays)
    "runs": (("host", "TEXT"), ("pid_start", "REAL")),
    "probe_layers": (("infer_mean", "BLOB"), ("infer_var", "BLOB"), ("iid_mean_sd", "BLOB")),
}
GONE = "The process running it ({owner}) is gone; every record up to its last commit is kept."
FULL_BELOW = 2**20  # bytes: an I/O error with less free space than this on the store's disk is a full disk
RESERVE_BYTES = 256 * 2**10  # home/reserve; a final status update needs about 3 WAL frames of 4 KiB
IDLE_CONNECTIONS = 4  # a Store keeps this many for reuse: opening one reads the schema, ~1 ms, for each read of a page's poll


class StoreError(LookupError):
    """A run id that is malformed or unknown."""


class StoreUnreadable(StoreError):
    """The home folder or its runs.sqlite cannot be used; the message says which and why."""


class StoreFull(StoreError):
    """A write failed because the disk holding the store is full; the message says how full."""


def unreadable_message(path: Path, error: object) -> str:
    """The one line for a runs.sqlite that SQLite cannot read (a foreign or damaged file)."""
    return (
        f"{path} is not a readable bnviz run store ({error}); nothing was changed. Run `bnviz doctor` to check it and copy what is "
        "still readable into a new store, or choose another folder with --home or BNVIZ_HOME."
    )


def free_bytes(folder: Path) -> int:
    """Free space on the file system holding `folder` (0 where it cannot be read)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def full_message(home: Path) -> str:
    """The one line for a write that failed on a full disk."""
    return (
        f"The disk holding BNVIZ_HOME ({home}) is full ({free_bytes(home) // 10**6} MB free); every record committed before is kept. "
        "Free some space there, or choose another folder with --home or BNVIZ_HOME."
    )


def default_home() -> Path:
    """`BNVIZ_HOME`, else ./bnviz-runs."""
    return home_folder()


def home_folder(home: Path | str | None = None) -> Path:
    """The runs folder: `home` (--home), else `BNVIZ_HOME`, else ./bnviz-runs, as an absolute path."""
    return Path(home or os.environ.get("BNVIZ_HOME", "bnviz-runs")).expanduser().resolve()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def check_run_id(run_id: str) -> str:
    """Run ids become file names: refuse anything but the generated shape."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise StoreError(f"Malformed run id. Received: {run_id!r}")
    return run_id


def _blob(array: np.ndarray, dtype: str = "<f4") -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _array(blob: bytes | None, dtype: str = "<f4") -> np.ndarray:
    return np.frombuffer(blob or b"", dtype=dtype)


class _Connection(sqlite3.Connection):
    """A connection that says whether it may be reused: not one opened without the shared WAL index."""

    reusable = True
    opened_in: tuple[int, int] | None = None  # (process, runs.sqlite's inode)


class Store:
    """A handle on a home folder; cheap to create, safe to share across threads and processes
    (each call takes its own connection, reused once it is done with when nothing went wrong)."""

    def __init__(self, home: Path | str | None = None):
        self._idle: list[_Connection] = []
        self._idle_lock = threading.Lock()
        self.home = home_folder(home)
        self.models_dir = self.home / "models"
        self.path = self.home / "runs.sqlite"
        self.reserve = self.home / "reserve"
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnreadable(f"Cannot use {self.home} as the runs folder: {exc.strerror or exc}.") from None
        self._open()
        self.models_dir.mkdir(exist_ok=True)
        self._keep_reserve()

    def _open(self) -> None:
        """Check the file is a store (the connection reads first, so a foreign file is never written),
        then create the tables and add the columns that newer versions added."""
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            for row in db.execute("SELECT id FROM runs WHERE status='queued' AND id NOT IN (SELECT run_id FROM jobs WHERE run_id IS NOT NULL)").fetchall():
                _insert_job(db, "train", {}, row["id"])  # queued before runs had jobs

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection, reused when it was left with no error and no open transaction; a SQLite error in
        it leaves as `StoreFull` or `StoreUnreadable`."""
        try:
            db = self._take()
            try:
                yield db
            except BaseException:
                db.close()
                raise
            self._give_back(db)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            raise failure from exc

    def _take(self) -> _Connection:
        """An idle connection opened by this process to the file now at `path`, else a new one."""
        here = self._file_identity()
        with self._idle_lock:
            while self._idle:
                db = self._idle.pop()
                if db.opened_in == here:
                    return db  # the others are dropped, not closed: a forked parent's, or a replaced file's
        return self._connection()

    def _give_back(self, db: _Connection) -> None:
        """Keep `db` for the next call, or close it (enough kept, not reusable, or inside a transaction)."""
        with self._idle_lock:
            if db.reusable and not db.in_transaction and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(db)
                return
        db.close()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            return os.getpid(), self.path.stat().st_ino
        except OSError:
            return None

    def _connection(self, shared_index: bool = True) -> _Connection:
        """Open runs.sqlite and read its schema. That first read maps the WAL index (runs.sqlite-shm),
        which takes disk space; where there is none (a full disk, no process holding the store open),
        reopen without one: as an immutable file when the WAL holds nothing (then no process can be
        writing, nor start to without that space), else with the index in memory (exclusive locking
        mode, which reads the WAL in), so a full disk can still be read."""
        wal = Path(f"{self.path}-wal")
        quiet = not shared_index and (not wal.exists() or wal.stat().st_size == 0)
        target = f"{self.path.as_uri()}?immutable=1" if quiet else str(self.path)
        db = sqlite3.connect(target, timeout=60, isolation_level=None, uri=quiet, check_same_thread=False, factory=_Connection)
        db.row_factory = sqlite3.Row
        db.reusable, db.opened_in = shared_index, self._file_identity()
        try:
            if not shared_index and not quiet:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")  # before anything reads the file
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError as exc:
            db.close()
            if shared_index and exc.sqlite_errorcode == sqlite3.SQLITE_IOERR_SHMSIZE:
                return self._connection(shared_index=False)
            raise
        return db

    def _failure(self, exc: Exception) -> StoreError | None:
        """What a SQLite error means to a user: a full disk, a file it cannot read, or (None) a bug or a
        wait for a lock, shown as it is."""
        error = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
        if not isinstance(error, sqlite3.DatabaseError) or isinstance(error, (sqlite3.ProgrammingError, sqlite3.IntegrityError)):
            return None
        code = (error.sqlite_errorcode or 0) & 0xFF
        if code == sqlite3.SQLITE_FULL or (code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY) and free_bytes(self.home) < FULL_BELOW):
            return StoreFull(full_message(self.home))
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return None
        return StoreUnreadable(unreadable_message(self.path, error))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so writers queue instead of deadlocking. A
        failed statement or COMMIT (a full disk fails at COMMIT) rolls back where SQLite has not already."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.rollback()  # a no-op where SQLite rolled back by itself
                raise

    def _keep_reserve(self) -> None:
        """Set RESERVE_BYTES aside in home/reserve while there is space (random bytes: a compressing
        file system would store zeros in nothing); best effort, a full disk skips it."""
        try:
            with open(self.reserve, "xb") as file:
                file.write(os.urandom(RESERVE_BYTES))
        except FileExistsError:
            pass
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def _final_write(self, sql: str, args: tuple) -> None:
        """A final status, the one write that must land: on a full disk give up the reserve and try once
        more, so that a run never stays "running" for a reason that can be named."""
        try:
            with self._transaction() as db:
                db.execute(sql, args)
        except StoreFull:
            try:
                self.reserve.unlink()
            except FileNotFoundError:
                raise StoreFull(full_message(self.home)) from None
            with self._transaction() as db:
                db.execute(sql, args)

    def full(self) -> str | None:
        """The one-line message for a full disk when less than FULL_BELOW is free, else None."""
        return full_message(self.home) if free_bytes(self.home) < FULL_BELOW else None

    @contextmanager
    def saving(self, path: Path) -> Iterator[None]:
        """Write a file under the home (a model): on a full disk the half-written file is removed and
        the error leaves as StoreFull, like a store write's."""
        try:
            yield
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            path.unlink(missing_ok=True)
            raise StoreFull(full_message(self.home)) from exc

    def model_path(self, run_id: str) -> Path:
        return self.models_dir / f"{check_run_id(run_id)}.keras"

    # --- runs -------------------------------------------------------------------------------
    def create_run(self, config: RunConfig, status: str = RunStatus.QUEUED, sweep: str | None = None, parent: str | None = None) -> str:
        """A new run. Queued: with its "train" job, for the workers. Running: owned by this process,
        which trains it itself (the CLI)."""
        run_id, status, owner = new_run_id(), RunStatus(status), Owner.current()
        mine = status == RunStatus.RUNNING
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (id, name, preset, config, status, created, sweep, parent, host, pid, pid_start) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    config.name,
                    config.preset,
                    config.to_json(),
                    status.value,
                    time.time(),
                    sweep,
                    parent,
                    *((owner.host, owner.pid, owner.started) if mine else (None, None, None)),
                ),
            )
            if status == RunStatus.QUEUED:
                _insert_job(db, "train", {}, run_id)
        return run_id

    def start(self, run_id: str, pid: int, steps_per_epoch: int, total_steps: int, info: dict) -> None:
        """Training began in process `pid` on this host: record it as the owner, with the step budget."""
        now, owner = time.time(), Owner.current()
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status='running', pid=?, host=?, pid_start=?, started=COALESCE(started, ?), heartbeat=?, "
                "steps_per_epoch=?, total_steps=?, info=? WHERE id=?",
                (pid, owner.host, process_start(pid), now, now, steps_per_epoch, total_steps, json.dumps(info), check_run_id(run_id)),
            )

    def finish(self, run_id: str, status: str, error: str | None = None, model_path: str | None = None) -> None:
        if status not in FINISHED:
            raise ValueError(f"Not a final status. Received: {status!r}")
        self._final_write(
            "UPDATE runs SET status=?, error=?, finished=?, model_path=COALESCE(?, model_path) WHERE id=?",
            (RunStatus(status).value, error, time.time(), model_path, check_run_id(run_id)),
        )

    def update_info(self, run_id: str, **info: object) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT info FROM runs WHERE id=?", (check_run_id(run_id),)).fetchone()
            merged = {**json.loads(row["info"]), **info}
            db.execute("UPDATE runs SET info=? WHERE id=?", (json.dumps(merged), run_id))

    def request_cancel(self, run_id: str) -> None:
        """Ask a run to stop: queued runs (and their train jobs) are cancelled now, running ones at
        their next step."""
        now = time.time()
        with self._transaction() as db:
            db.execute("UPDATE runs SET cancel_requested=1 WHERE id=?", (check_run_id(run_id),))
            db.execute("UPDATE runs SET status='cancelled', finished=? WHERE id=? AND status='queued'", (now, run_id))
            db.execute("UPDATE jobs SET status='cancelled', finished=? WHERE run_id=? AND kind='train' AND status='queued'", (now, run_id))

    def cancel_requested(self, run_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM runs WHERE id=?", (check_run_id(run_id),)).fetchone()
        return bool(row and row["cancel_requested"])

    def get_run(self, run_id: str) -> Run:
        return _run_from_row(self._one("runs", check_run_id(run_id)))

    def list_runs(self, status: Sequence[str] | None = None, sweep: str | None = None) -> list[Run]:
        """Runs, newest first, optionally filtered by status or sweep."""
        return [_run_from_row(r) for r in self._select("runs", status=status, sweep=[sweep] if sweep else None)]

    def _one(self, table: str, row_id: str) -> sqlite3.Row | dict:
        """One row of `table` by id, read after marking dead owners; StoreError when there is none."""
        with self._reading() as (db, gone):
            row = db.execute(f"SELECT * FROM {table} WHERE id=?", (row_id,)).fetchone()
        if row is None:
            raise StoreError(f"No {table[:-1]} {row_id!r} in {self.home}")
        return _as_reaped(table, row, gone)

    def _select(self, table: str, **filters: Sequence[str] | None) -> list[sqlite3.Row]:
        """Rows of `table`, newest first, read after marking dead owners; each filter given keeps the
        rows whose column holds one of its values."""
        query, args = f"SELECT * FROM {table} WHERE 1=1", []
        for column, values in filters.items():
            if values:
                query += f" AND {column} IN ({','.join('?' * len(values))})"
                args += [str(v) for v in values]
        with self._reading() as (db, gone):
            rows = db.execute(query + " ORDER BY created DESC, id DESC", args).fetchall()
        return [_as_reaped(table, row, gone) for row in rows]

    def reap(self) -> list[str]:
        """Mark running runs and jobs whose owner process is gone as interrupted (records kept);
        returns their ids. Every reader calls it, so nothing stays "running" for a dead process."""
        with self._reading() as (_, gone):
            return [row_id for _, row_id in gone]

    @contextlib.contextmanager
    def _reading(self) -> Iterator[tuple[sqlite3.Connection, dict[tuple[str, str], str]]]:
        """A connection to read through, and (table, id) → error of each running row whose owner is gone,
        read through it (one connection a read, not two); those rows are marked interrupted once it
        closes, where the disk allows. On a full disk the mark waits for a later reader, and
        `_as_reaped` shows it meanwhile."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT 'runs' AS tab, id, host, pid, pid_start FROM runs WHERE status='running' UNION ALL "
                "SELECT 'jobs', id, host, pid, pid_start FROM jobs WHERE status='running'"
            ).fetchall()
            gone = {(r["tab"], r["id"]): GONE.format(owner=_describe(_owner(r))) for r in rows if not (r["pid"] and _owner(r).alive())}
            yield db, gone
        if gone:
            with contextlib.suppress(StoreFull), self._transaction() as db:
                for (table, row_id), error in gone.items():
                    db.execute(
                        f"UPDATE {table} SET status='interrupted', finished=?, error=COALESCE(error, ?) WHERE id=? AND status='running'",
                        (time.time(), error, row_id),
                    )

    def delete_run(self, run_id: str) -> None:
        """Remove the run's rows, its model files, and the uploads only it referred to (bnviz.uploads)."""
        own_uploads = uploads.run_uploads(self, run_id)
        with self._transaction() as db:
            for table in ("steps", "probes", "probe_layers", "evaluations", "jobs"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (check_run_id(run_id),))
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        for path in [self.model_path(run_id), *self.models_dir.glob(f"{run_id}-*")]:  # the model, its PreciseBN copy, kept samples
            path.unlink(missing_ok=True)
        uploads.remove_unreferenced(self, own_uploads)

    # --- jobs -------------------------------------------------------------------------------
    def enqueue_job(self, kind: str, args: dict | None = None, run_id: str | None = None) -> str:
        """Queue a background job of `kind` (see bnviz.jobs.JOB_HANDLERS); returns its id."""
        if run_id is not None:
            check_run_id(run_id)
        with self._transaction() as db:
            return _insert_job(db, kind, args or {}, run_id)

    def claim_job(self, owner: Owner | None = None, kinds: Sequence[str] | None = None) -> Job | None:
        """Atomically move the oldest queued job (of any kind, or of `kinds`) to running for `owner`
        (default: this process); a train job's run becomes running with the same owner."""
        owner, now = owner or Owner.current(), time.time()
        only = f" AND kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        with self._transaction() as db:
            row = db.execute(f"SELECT id, kind, run_id FROM jobs WHERE status='queued'{only} ORDER BY created, id LIMIT 1", list(kinds or ())).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status='running', started=?, host=?, pid=?, pid_start=? WHERE id=?", (now, owner.host, owner.pid, owner.started, row["id"])
            )
            if row["kind"] == "train" and row["run_id"]:
                db.execute(
                    "UPDATE runs SET status='running', host=?, pid=?, pid_start=?, started=?, heartbeat=? WHERE id=? AND status='queued'",
                    (owner.host, owner.pid, owner.started, now, now, row["run_id"]),
                )
        return self.get_job(row["id"])

    def set_job_progress(self, job_id: str, text: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET progress=? WHERE id=?", (text, job_id))

    def finish_job(self, job_id: str, status: str, error: str | None = None) -> None:
        if status not in FINISHED:
            raise ValueError(f"Not a final status. Received: {status!r}")
        self._final_write("UPDATE jobs SET status=?, error=?, finished=? WHERE id=?", (JobStatus(status).value, error, time.time(), job_id))

    def cancel_job(self, job_id: str) -> None:
        """Ask a job to stop: a queued one is cancelled now; a running handler may poll `get_job`."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            db.execute("UPDATE jobs SET status='cancelled', finished=? WHERE id=? AND status='queued'", (time.time(), job_id))

    def get_job(self, job_id: str) -> Job:
        return _job_from_row(self._one("jobs", job_id))

    def list_jobs(self, run_id: str | None = None, kinds: Sequence[str] | None = None, status: Sequence[str] | None = None) -> list[Job]:
        """Jobs, newest first, optionally of one run, of some kinds, in some states."""
        return [_job_from_row(r) for r in self._select("jobs", run_id=[run_id] if run_id else None, kind=kinds, status=status)]

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
                    f"INSERT OR REPLACE INTO probe_layers (run_id, step, layer, {', '.join(LAYER_ARRAYS + HIST_ARRAYS)}) "
                    f"VALUES ({', '.join('?' * (3 + len(LAYER_ARRAYS) + len(HIST_ARRAYS)))})",
                    [
                        (run_id, p.step, lay.layer, *(_blob(getattr(lay, a)) for a in LAYER_ARRAYS), *(_blob(getattr(lay, a), "<i4") for a in HIST_ARRAYS))
                        for lay in p.layers
                    ],
                )
            db.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), run_id))

    def add_evaluation(self, run_id: str, name: str, evaluation: Evaluation) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO evaluations VALUES (?,?,?,?)", (check_run_id(run_id), name, time.time(), json.dumps(evaluation.to_dict())))

    def evaluations(self, run_id: str) -> dict[str, Evaluation]:
        with self._connect() as db:
            rows = db.execute("SELECT name, metrics FROM evaluations WHERE run_id=? ORDER BY created", (check_run_id(run_id),)).fetchall()
        return {r["name"]: Evaluation.from_dict(json.loads(r["metrics"])) for r in rows}

    def progress(self, run_id: str) -> Progress:
        """The run's latest step row, its step budget and its probe records stored and scheduled."""
        run = self.get_run(run_id)
        with self._connect() as db:
            row = db.execute("SELECT step, epoch, loss, accuracy FROM steps WHERE run_id=? ORDER BY step DESC LIMIT 1", (run_id,)).fetchone()
            records = db.execute("SELECT COUNT(*) FROM probes WHERE run_id=?", (run_id,)).fetchone()[0]
        total, probe = run.total_steps or 0, run.config.probe
        scheduled = len(probe_steps(total, run.steps_per_epoch or 1, probe.every)) if total and probe.enabled else 0
        return Progress(run.status, **(dict(row) if row else {}), total_steps=total, probe_records=records, probe_scheduled=scheduled)

    def marks(self, run_ids: Sequence[str] | None = None) -> dict[str, Mark]:
        """Each run's (of `run_ids`, else every run's) status, last step and records and evaluations
        stored, in one query and without reading a record: what a page that follows runs compares
        between polls to know whether it must draw again (bnviz.live.View)."""
        where, args = ("WHERE id IN (" + ",".join("?" * len(run_ids)) + ")", [check_run_id(i) for i in run_ids]) if run_ids is not None else ("", [])
        with self._reading() as (db, gone):
            rows = db.execute(
                "SELECT id, status, host, pid, pid_start, error, total_steps, "
                "(SELECT MAX(step) FROM steps WHERE run_id=runs.id) AS step, "
                "(SELECT COUNT(*) FROM probes WHERE run_id=runs.id) AS records, "
                "(SELECT COUNT(*) FROM evaluations WHERE run_id=runs.id) AS evaluations "
                f"FROM runs {where} ORDER BY created DESC, id DESC",
                args,
            ).fetchall()
        status = {r["id"]: RunStatus(_as_reaped("runs", r, gone)["status"]) for r in rows}
        return {r["id"]: Mark(status[r["id"]], r["step"] or 0, r["records"], r["evaluations"], r["total_steps"] or 0) for r in rows}

    def load_run(self, run_id: str, since: RunData | None = None) -> RunData:
        """All stored data of one run (see the module docstring for the layout). With `since`, an
        earlier read of the same run, only the step rows and probe records after its last ones are read
        and appended to it: both are committed in step order, so a page that follows a training run
        reads each record once."""
        run = self.get_run(run_id)
        after_step, after_probe = (_last_step(since.steps), _last_step(since.probes)) if since else (-1, -1)
        with self._connect() as db:
            steps = pd.read_sql_query("SELECT step, epoch, loss, accuracy FROM steps WHERE run_id=? AND step>? ORDER BY step", db, params=(run_id, after_step))
            probes = pd.read_sql_query(
                "SELECT step, epoch, acc_train_mode, acc_inference, loss_train_mode, loss_inference FROM probes WHERE run_id=? AND step>? ORDER BY step",
                db,
                params=(run_id, after_probe),
            )
            rows = db.execute("SELECT * FROM probe_layers WHERE run_id=? AND step>? ORDER BY layer, step", (run_id, after_probe)).fetchall()
        steps, probes = (frame.astype({c: float for c in frame.columns if c not in ("step", "epoch")}) for frame in (steps, probes))
        layers = _layer_traces(rows)
        if since:
            steps, probes = _appended(since.steps, steps), _appended(since.probes, probes)
            layers = {name: _extended(since.layers.get(name), layers.get(name)) for name in {**since.layers, **layers}}
        return RunData(run=run, steps=steps, probes=probes, layers=layers, evaluations=self.evaluations(run_id))


def _last_step(frame: pd.DataFrame) -> int:
    return int(frame["step"].iloc[-1]) if len(frame) else -1


def _appended(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """`old` with `new`'s rows after it (`old` itself when there are none, so it is never copied needlessly)."""
    return pd.concat([old, new], ignore_index=True) if len(new) else old


def _extended(old: LayerTrace | None, new: LayerTrace | None) -> LayerTrace:
    """One layer's trace with the probe records of `new` after those of `old`."""
    if old is None or new is None:
        return old or new
    arrays = {a: np.concatenate([getattr(old, a), getattr(new, a)]) for a in (*LAYER_ARRAYS, *HIST_ARRAYS, "steps")}
    return LayerTrace(layer=old.layer, **arrays)


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


def _as_reaped(table: str, row: sqlite3.Row, gone: dict[tuple[str, str], str]) -> sqlite3.Row | dict:
    """The row as readers see it: still "running" for an owner that is gone (the mark could not be
    written on a full disk), it reads as interrupted all the same."""
    if row["status"] != "running" or (table, row["id"]) not in gone:
        return row
    return {**dict(row), "status": "interrupted", "error": row["error"] or gone[table, row["id"]]}


def _run_from_row(row: sqlite3.Row | dict) -> Run:
    values = dict(row)
    values["config"] = RunConfig.from_json(values["config"])
    values["status"] = RunStatus(values["status"])
    values["info"] = json.loads(values["info"] or "{}")
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Run(**values)


def _insert_job(db: sqlite3.Connection, kind: str, args: dict, run_id: str | None) -> str:
    job_id = new_run_id()
    db.execute(
        "INSERT INTO jobs (id, kind, args, run_id, status, created) VALUES (?,?,?,?,?,?)",
        (job_id, kind, json.dumps(args), run_id, JobStatus.QUEUED.value, time.time()),
    )
    return job_id


def _owner(row: sqlite3.Row) -> Owner:
    return Owner(row["host"] or "", row["pid"] or 0, row["pid_start"])


def _describe(owner: Owner) -> str:
    return f"pid {owner.pid} on {owner.host}" if owner.host and owner.pid else "no process recorded"


def _job_from_row(row: sqlite3.Row | dict) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        args=json.loads(row["args"]),
        run_id=row["run_id"],
        status=JobStatus(row["status"]),
        progress=row["progress"],
        error=row["error"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        owner=_owner(row) if row["pid"] else None,
        cancel_requested=bool(row["cancel_requested"]),
    )
