"""The store on a failing file system: a full disk (a real tmpfs where this process may mount one, as
root in CI; else injected SQLITE_FULL errors) and a runs.sqlite with damaged pages. Reads go on,
writes fail with one line, runs end with a final status, `bnviz doctor` checks and recovers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bnviz import store as store_module
from bnviz.presets import preset_config
from bnviz.records import ProbeLayer, ProbeRecord, RunStatus
from bnviz.store import RESERVE_BYTES, Store, StoreFull
from tests.conftest import APP_TIMEOUT_S, skip_missing_tool
from tests.test_liveness import bnviz, gone_pid

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
FULL = re.compile(r"The disk holding BNVIZ_HOME \(.+\) is full \(\d+ MB free\)")
UNREADABLE = "is not a readable bnviz run store"


def record(step: int, channels: int = 64) -> ProbeRecord:
    rng = np.random.default_rng(step)
    layer = ProbeLayer(
        "norm1",
        *(rng.normal(size=channels).astype(np.float32) for _ in range(6)),
        np.linspace(-1, 1, 6, dtype=np.float32),
        *(rng.integers(0, 9, 5, dtype=np.int32) for _ in range(2)),
    )
    return ProbeRecord(step, 1, 0.5, 0.25, 1.0, 2.0, (layer,))


def one_line(result: subprocess.CompletedProcess, text: str | re.Pattern) -> None:
    """Exit code 2, one line on stderr holding `text`, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert text.search(result.stderr) if isinstance(text, re.Pattern) else text in result.stderr, result.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# === A full disk =====================================================================================
REAL_CONNECT = sqlite3.connect


class InjectedFull(sqlite3.Connection):
    """A connection on a full disk where no tmpfs can be mounted: every write transaction fails as
    SQLite fails it there (SQLITE_FULL)."""

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.startswith("BEGIN IMMEDIATE"):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode, error.sqlite_errorname = sqlite3.SQLITE_FULL, "SQLITE_FULL"
            raise error
        return super().execute(sql, *args)


@dataclass
class Disk:
    """A small file system for BNVIZ_HOME that `fill` makes full and `free` frees again."""

    root: Path
    mounted: bool  # a real tmpfs; else `fill` injects the faults
    patches: pytest.MonkeyPatch

    def fill(self) -> None:
        if not self.mounted:
            self.patches.setattr(sqlite3, "connect", lambda *a, **k: REAL_CONNECT(*a, **k, factory=InjectedFull))
            self.patches.setattr(store_module, "free_bytes", lambda folder: 0)
            return
        fd = os.open(self.root / "filler", os.O_WRONLY | os.O_CREAT)
        for size in (2**16, 2**12, 2**9, 1):  # to the last byte
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
        os.close(fd)

    def free(self) -> None:
        if self.mounted:
            (self.root / "filler").unlink()
        self.patches.undo()


@pytest.fixture
def disk(tmp_path) -> Iterator[Disk]:
    """A 4 MiB tmpfs where mounting works (root: CI), else injected faults on the same calls."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = (
        shutil.which("mount") is not None and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], capture_output=True).returncode == 0
    )
    patches = pytest.MonkeyPatch()
    try:
        yield Disk(root, mounted, patches)
    finally:
        patches.undo()
        if mounted:
            subprocess.run(["umount", "-l", str(root)], check=True)


def test_a_full_disk_fails_writes_in_one_line_and_reads_go_on(disk, monkeypatch):
    home = disk.root / "home"
    store = Store(home)
    dead, mine = (store.create_run(preset_config("bn"), status=RunStatus.RUNNING) for _ in range(2))
    store.start(dead, gone_pid(), 1, 10, {})
    store.add_records(dead, steps=[(s, 1, 1.0, 0.5) for s in (1, 2, 3)], probes=[record(0)])
    assert home.joinpath("reserve").stat().st_size == RESERVE_BYTES
    disk.fill()
    with pytest.raises(StoreFull) as full:
        store.add_records(dead, steps=[(4, 1, 1.0, 0.5)], probes=[record(3)])
    assert FULL.match(str(full.value)) and "\n" not in str(full.value)
    runs = {r.id: r for r in Store(home).list_runs()}  # reading reaps: best effort here, shown all the same
    assert runs[dead].status == RunStatus.INTERRUPTED and "is gone" in runs[dead].error
    assert store.get_run(dead).status == RunStatus.INTERRUPTED and store.load_run(dead).steps["step"].tolist() == [1, 2, 3]
    monkeypatch.setenv("BNVIZ_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S).run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning if FULL.match(w.value)], [w.value for w in at.warning]
    if disk.mounted:  # the reserve makes room for the final status, and only for that
        store.finish(mine, RunStatus.FAILED, error=str(full.value))
        assert not home.joinpath("reserve").exists() and store.get_run(mine).status == RunStatus.FAILED
    else:
        with pytest.raises(StoreFull):
            store.finish(mine, RunStatus.FAILED)
    disk.free()
    Store(home).list_runs()
    with sqlite3.connect(home / "runs.sqlite") as db:  # once there is space, the reader's mark is written
        assert db.execute("SELECT status FROM runs WHERE id=?", (dead,)).fetchone()[0] == "interrupted"


@pytest.mark.slow
def test_train_on_a_filling_disk_ends_failed_in_one_line(disk):
    """The CLI trains into a tmpfs with 96 KiB left: wherever the disk fills (records, the model file),
    one line and exit 2, the run ends failed with that line, and list still works there."""
    if not disk.mounted:
        skip_missing_tool("mounting a tmpfs needs root (CI runs as root)")
    home = disk.root / "home"
    Store(home)
    disk.fill()
    (disk.root / "filler").unlink()
    with open(disk.root / "filler", "wb") as filler:
        filler.write(bytes(shutil.disk_usage(disk.root).free - 96 * 2**10))
    trained = bnviz("train", "--input-size", "16", "--epochs", "1", "--json", home=home)  # --json: no progress bar on stderr
    one_line(trained, FULL)
    listed = bnviz("list", "--json", home=home)
    runs = json.loads(listed.stdout)["runs"]
    assert listed.returncode == 0 and [r["status"] for r in runs] == ["failed"], listed.stderr
    assert FULL.search(Store(home).get_run(runs[0]["id"]).error or "")


# === Damaged pages =====================================================================================
PAGE = 4096


@dataclass(frozen=True)
class Damaged:
    home: Path
    lost: set[str]  # runs whose rows sat on an overwritten page
    kept: set[str]
    digest: str  # sha256 of runs.sqlite right after the damage


def run_pages(path: Path, marker: bytes) -> list[int]:
    """0-based numbers of the table leaf pages (type 13) that hold `marker`, page 1 (the header) left out."""
    data = path.read_bytes()
    return [n for n in range(1, len(data) // PAGE) if data[n * PAGE] == 13 and marker in data[n * PAGE : (n + 1) * PAGE]]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Damaged:
    """A real store of 40 runs with records, then the middle third of the pages holding run rows overwritten."""
    home = tmp_path_factory.mktemp("damaged")
    store = Store(home)
    ids = [store.create_run(preset_config("bn").replace(name=f"damage-me-{i}"), status=RunStatus.RUNNING) for i in range(40)]
    for run_id in ids:
        store.add_records(run_id, steps=[(s, 1, 1.0, 0.5) for s in (1, 2, 3)], probes=[record(0)])
        store.finish(run_id, RunStatus.DONE)
    path = store.path
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = run_pages(path, b"damage-me-")
    hit = pages[len(pages) // 3 : 2 * len(pages) // 3]
    data = bytearray(path.read_bytes())
    for n in hit:
        data[n * PAGE : (n + 1) * PAGE] = np.random.default_rng(n).integers(0, 256, PAGE, dtype=np.uint8).tobytes()
    lost = {i for i in ids if any(i.encode() in path.read_bytes()[n * PAGE : (n + 1) * PAGE] for n in hit)}
    path.write_bytes(bytes(data))
    assert len(pages) >= 6 and lost and len(lost) < len(ids)
    return Damaged(home, lost, set(ids) - lost, sha256(path))


def test_damaged_store_gives_one_line_exit_2_on_list_and_show(damaged):
    one_line(bnviz("list", home=damaged.home), UNREADABLE)
    result = bnviz("show", sorted(damaged.lost)[0], home=damaged.home)
    one_line(result, UNREADABLE)
    assert "bnviz doctor" in result.stderr and sha256(damaged.home / "runs.sqlite") == damaged.digest


@pytest.mark.parametrize("page", ["runs", "diagnose"])
def test_damaged_store_pages_show_a_banner(damaged, monkeypatch, page):
    monkeypatch.setenv("BNVIZ_HOME", str(damaged.home))
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S).run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error if UNREADABLE in e.value and "bnviz doctor" in e.value], [e.value for e in at.error]


@pytest.mark.slow
def test_doctor_checks_and_copies_every_readable_row_leaving_the_original(damaged, tmp_path):
    checked = bnviz("doctor", "--json", home=damaged.home)
    report = json.loads(checked.stdout)
    assert checked.returncode == 1 and not report["ok"] and report["problems"] and report["recovered"] == []
    copy = tmp_path / "copy"
    recovered = bnviz("doctor", "--recover", str(copy), home=damaged.home)
    assert recovered.returncode == 1 and "runs" in recovered.stdout and str(copy) in recovered.stdout, recovered.stderr
    assert sha256(damaged.home / "runs.sqlite") == damaged.digest
    store = Store(copy)
    runs = {r.id: r for r in store.list_runs()}
    assert set(runs) == damaged.kept and all(r.status == RunStatus.DONE for r in runs.values())
    assert all(store.load_run(i).steps["step"].tolist() == [1, 2, 3] for i in damaged.kept)
    assert bnviz("doctor", home=copy).returncode == 0
    one_line(bnviz("doctor", "--recover", str(copy), home=damaged.home), "exists")
