"""The bnviz worker processes a test started, found through /proc, and how to end them. Workers run
in their own sessions so they outlive the dashboard that started them (a feature); in the suite that
means a run a page queued at its default size would train on beside the tests that follow."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from bnviz.records import Owner


def proc_cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def process_alive(pid: int) -> bool:
    """The store's own liveness test for a process on this host."""
    return Owner("", pid, None).alive()


def parent_pid(pid: int) -> int | None:
    """The parent's pid from /proc (None when the process is gone)."""
    try:  # the field after the parenthesised command name, which may itself hold spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def worker_home(cmdline: bytes) -> Path | None:
    """The `--home` of a bnviz worker's command line; None for any other process."""
    args = cmdline.split(b"\0")
    if b"bnviz.tf.worker" not in args or b"--home" not in args[:-1]:
        return None
    return Path(os.fsdecode(args[args.index(b"--home") + 1]))


def worker_pids(under: Path) -> list[int]:
    """Live (non-zombie) bnviz workers whose home is `under` or inside it. A worker's own child between
    fork and exec (h5py's import runs `uname -p`) still shows the worker's command line; it is not a worker."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    homes = {pid: worker_home(proc_cmdline(pid)) for pid in pids}
    matched = {pid: parent_pid(pid) for pid, home in homes.items() if home and (home == under or under in home.parents) and process_alive(pid)}
    return sorted(pid for pid, parent in matched.items() if parent is not None and parent not in matched)


def kill_workers(under: Path) -> None:
    """End the workers serving a home at or under `under`, with anything they started (their session)."""
    for pid in worker_pids(under):
        with contextlib.suppress(ProcessLookupError):  # bnviz.executors starts each in a session of its own
            os.killpg(pid, signal.SIGKILL)
