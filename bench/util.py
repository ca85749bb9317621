"""Small helpers shared by the benchmark sections: alternating repetitions, medians, clocks and
/proc readings. Imports nothing heavy."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rotations(names: Sequence[str], reps: int) -> Iterator[tuple[int, str]]:
    """(round, name) for `reps` rounds, each round starting one variant later (A B C, B C A, C A B):
    a slow spell of the machine then hits every variant, and no variant always runs first."""
    for r in range(reps):
        for i in range(len(names)):
            yield r, names[(r + i) % len(names)]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a sample, plus the sample itself (seconds or ratios)."""
    return {"median": median(values), "min": float(min(values)), "max": float(max(values)), "n": len(values), "values": [round(v, 6) for v in values]}


def ratios(samples: dict[str, list[float]], base: str) -> dict[str, list[float]]:
    """Per round, each variant's time over `base`'s time in the same round."""
    return {name: [v / b for v, b in zip(values, samples[base], strict=True)] for name, values in samples.items() if name != base}


@contextmanager
def stopwatch(into: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall seconds of the block to `into[name]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into[name] = into.get(name, 0.0) + time.perf_counter() - start


def timed(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeat` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` from /proc (0 when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def mapped_libraries(pid: int, needle: str) -> list[str]:
    """Files mapped into `pid` whose path contains `needle` (e.g. libtensorflow)."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in lines if needle in line and "/" in line})


def quiet_tensorflow() -> None:
    """Set before TensorFlow is imported: the Keras backend and no C++ info lines."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
