"""Uploads under `$BNVIZ_HOME/uploads`: what refers to them, the space they take, and their removal.

Each entry directly under `uploads/` is one upload: a zip extracted by the Train page
(`bnviz.forms.extract_upload`), a model or zip the Inspect page saved (`save_upload`), or a scratch
folder an inspect job left behind when it was killed. An upload is *referenced* when a path inside
it appears in any run (any status: its config, model path or info, or the arguments of its jobs)
or in the arguments of a queued or running job. Referenced uploads are never removed; the others
are removed once their modification time is older than the retention period
(`BNVIZ_UPLOAD_RETENTION_DAYS`, default `RETENTION_DAYS`): hourly by the dashboard's job manager,
and at once by `bnviz gc`. Deleting a run removes the uploads that only it referred to.

Removal never leaves the uploads folder: only its direct entries are removed, a symlink is
unlinked (never followed), folders go through `shutil.rmtree` (which does not follow symlinks
inside them either), and an uploads folder that is itself a symlink is left alone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bnviz.config import ConfigError

if TYPE_CHECKING:
    from bnviz.records import Job, Run
    from bnviz.store import Store

RETENTION_DAYS = 7.0  # a week: long enough to queue more runs on the same upload, short enough for a shared disk
RETENTION_ENV = "BNVIZ_UPLOAD_RETENTION_DAYS"


def uploads_dir(home: Path | str) -> Path:
    """Where uploads go: `home/uploads`."""
    return Path(home) / "uploads"


def retention_days(days: float | None = None) -> float:
    """`days`, else BNVIZ_UPLOAD_RETENTION_DAYS, else RETENTION_DAYS; ConfigError for anything but a number ≥ 0."""
    text = os.environ.get(RETENTION_ENV, "") if days is None else f"{days:g}"
    try:
        value = float(text) if text.strip() else RETENTION_DAYS
    except ValueError:
        value = math.nan
    if not value >= 0:  # NaN too
        raise ConfigError(f"The upload retention must be a number of days ≥ 0 ({RETENTION_ENV} or --days). Received: {text!r}")
    return value


# --- references -----------------------------------------------------------------------------------
def _strings(value: object) -> Iterator[str]:
    """Every string inside nested dicts and lists (config JSON, info, job arguments)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _upload_names(strings: Iterable[str], root: Path) -> set[str]:
    """Names of the uploads (entries of `root`) that these strings, read as absolute paths, point into."""
    names = set()
    for text in strings:
        if not os.path.isabs(text):
            continue
        try:
            relative = Path(text).resolve().relative_to(root)
        except (ValueError, OSError):  # outside the uploads, or not a path at all
            continue
        if relative.parts:
            names.add(relative.parts[0])
    return names


def _run_strings(run: Run, jobs: list[Job]) -> Iterator[str]:
    """The strings of a run that may name files: config, model path, info, and its jobs' arguments."""
    yield from _strings(json.loads(run.config.to_json()))
    yield from _strings([run.model_path or "", run.info])
    for job in jobs:
        if job.run_id == run.id or job.id == run.info.get("job"):  # an inspect run names its job in its info
            yield from _strings(job.args)


def referenced(store: Store) -> set[str]:
    """Uploads a run (any status) or a queued or running job refers to: these are never removed."""
    root, jobs = uploads_dir(store.home).resolve(), store.list_jobs()
    strings = [s for run in store.list_runs() for s in _run_strings(run, jobs)]
    strings += [s for job in jobs if job.status.active for s in _strings(job.args)]
    return _upload_names(strings, root)


def run_uploads(store: Store, run_id: str) -> set[str]:
    """Uploads run `run_id` refers to (none for an unknown id)."""
    jobs = store.list_jobs()
    return _upload_names((s for run in store.list_runs() if run.id == run_id for s in _run_strings(run, jobs)), uploads_dir(store.home).resolve())


# --- space and removal ----------------------------------------------------------------------------
def _entries(home: Path) -> list[Path]:
    """The uploads folder's direct entries; none when it is missing or a symlink (never followed)."""
    root = uploads_dir(home)
    if root.is_symlink() or not root.is_dir():
        return []
    return sorted(root.iterdir())


def _size(path: Path) -> int:
    """Bytes in `path`, symlinks counted as themselves and never followed; files that vanish meanwhile count 0."""
    files = [path] if path.is_symlink() or not path.is_dir() else [Path(folder, name) for folder, _, names in os.walk(path) for name in names]
    return sum(_lstat(f).st_size for f in files)


def _lstat(path: Path) -> os.stat_result:
    """The entry's own stat; for one removed meanwhile (a finished inspect job's scratch folder) a
    stat of size 0 and modified now, so it is neither counted nor removed."""
    try:
        return path.lstat()
    except OSError:
        return os.stat_result((0,) * 7 + (time.time(),) * 3)


def _remove(path: Path) -> bool:
    """Remove one upload (a symlink is unlinked, not followed); True when it is gone."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except OSError:
        return False
    return True


def size_text(n: float) -> str:
    """Bytes in the largest unit that keeps the number ≥ 1 (B, KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass(frozen=True)
class Collected:
    """What one collection removed (or, dry, would remove) and what it kept, by upload name."""

    removed: list[str]
    freed_bytes: int
    kept_referenced: list[str]
    kept_recent: list[str]
    retention_days: float
    dry_run: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """Two lines: what was removed and the space freed, then what was kept and why."""
        verb = "Would remove" if self.dry_run else "Removed"
        done = f"{verb} {len(self.removed)} upload{'s' * (len(self.removed) != 1)}, {size_text(self.freed_bytes)}"
        done += f" {'to free' if self.dry_run else 'freed'}" + (f": {', '.join(self.removed)}" if self.removed else "")
        kept = f"Kept {len(self.kept_referenced)} used by runs or active jobs, {len(self.kept_recent)} newer than {self.retention_days:g} days."
        return f"{done}\n{kept}"


def collect(store: Store, days: float | None = None, dry_run: bool = False, now: float | None = None) -> Collected:
    """Remove every unreferenced upload not modified for `days` (default: retention_days())."""
    days, now = retention_days(days), time.time() if now is None else now
    keep = referenced(store)
    removed, freed, used, recent = [], 0, [], []
    for entry in _entries(store.home):
        if entry.name in keep:
            used.append(entry.name)
        elif now - _lstat(entry).st_mtime < days * 86400:
            recent.append(entry.name)
        else:
            size = _size(entry)
            if dry_run or _remove(entry):
                removed.append(entry.name)
                freed += size
    return Collected(removed, freed, used, recent, days, dry_run)


def remove_unreferenced(store: Store, names: set[str]) -> None:
    """Remove those of the uploads `names` that nothing refers to any more (after a run was deleted)."""
    gone = names - referenced(store)
    for entry in _entries(store.home):
        if entry.name in gone:
            _remove(entry)


def usage_text(home: Path) -> str:
    """One line for the Runs page: the space uploads take and when the unused ones go."""
    entries = _entries(home)
    try:
        policy = f"those no run or active job uses are removed after {retention_days():g} days; `bnviz gc` removes them now"
    except ConfigError as exc:
        policy = str(exc)
    return f"Uploads: {size_text(sum(_size(e) for e in entries))} in {len(entries)} upload{'s' * (len(entries) != 1)}; {policy}."
