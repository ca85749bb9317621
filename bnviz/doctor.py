"""`bnviz doctor`: check a run store with SQLite's integrity check, and copy what is still readable
into a new store. The original is only ever opened read-only (`mode=ro`), so its bytes never change.

The copy goes table by table, row by row, because a damaged page stops any scan that reaches it:
row ids come from four scans (the table and its primary-key index, each forward and backward, each
up to its first damaged page), then every id from the smallest to the largest seen is read alone.
A row whose pages are intact is copied; an id whose lookup fails is counted as unreadable (a lost
row, or a gap in the ids that a damaged page hides). Model files stay where they are: the copied
runs name them by path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from bnviz.store import Store, StoreError

TABLES = ("runs", "jobs", "steps", "probes", "probe_layers", "evaluations")
MAX_PROBLEMS = 20  # integrity_check stops after this many problems: enough to tell a damaged store


@dataclass(frozen=True)
class Copied:
    """What the copy of one table kept: rows written to the new store, and ids that could not be read."""

    table: str
    copied: int
    unreadable: int
    readable_schema: bool = True  # False: the table's definition itself could not be read, nothing copied


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write to `path` (nor create it)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def integrity(path: Path) -> list[str]:
    """SQLite's `PRAGMA integrity_check` of the store file: ["ok"], or the problems it names (at most
    MAX_PROBLEMS), or the error that stopped it."""
    try:
        with closing(read_only(path)) as db:
            return [row[0] for row in db.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})")]
    except sqlite3.DatabaseError as exc:
        return [f"the check stopped: {exc}"]


def recover(path: Path, home: Path) -> list[Copied]:
    """Copy every readable row of the store file `path` into a new store in folder `home`, which must
    not hold one yet (StoreError otherwise)."""
    if (Path(home) / "runs.sqlite").exists():
        raise StoreError(f"{Path(home) / 'runs.sqlite'} exists; choose a folder without a run store for the copy.")
    target = Store(home)
    with closing(read_only(path)) as source, closing(sqlite3.connect(target.path, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        copied = [_copy_table(source, db, table) for table in TABLES]
        db.execute("COMMIT")
    return copied


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> Copied:
    """Copy the readable rows of one table (the columns both stores have)."""
    try:
        info = source.execute(f"PRAGMA table_info({table})").fetchall()
    except sqlite3.DatabaseError:
        info = []
    if not info:
        return Copied(table, 0, 0, readable_schema=False)
    wanted = {row[1] for row in target.execute(f"PRAGMA table_info({table})")}
    columns = [row[1] for row in info if row[1] in wanted]
    key = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
    unreadable, before = [0], target.total_changes
    rows = _readable_rows(source, f"SELECT {', '.join(columns)} FROM {table} WHERE rowid=?", _row_ids(source, table, key), unreadable)
    target.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    return Copied(table, target.total_changes - before, unreadable[0])


def _row_ids(source: sqlite3.Connection, table: str, key: list[str]) -> range:
    """From the smallest to the largest row id that any of the four scans reached."""
    seen: set[int] = set()
    orders = ["rowid", "rowid DESC"] + ([", ".join(key), ", ".join(f"{k} DESC" for k in key)] if key else [])
    for order in orders:
        try:
            for (rowid,) in source.execute(f"SELECT rowid FROM {table} ORDER BY {order}"):
                seen.add(rowid)
        except sqlite3.DatabaseError:
            pass  # this scan reached a damaged page; the others go on from their own ends
    return range(min(seen), max(seen) + 1) if seen else range(0)


def _readable_rows(source: sqlite3.Connection, query: str, ids: range, unreadable: list[int]) -> Iterator[tuple]:
    """Each row of `ids` that can be read; `unreadable[0]` counts the ids whose lookup failed."""
    for rowid in ids:
        try:
            row = source.execute(query, (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            unreadable[0] += 1
            continue
        if row is not None:
            yield row
