"""Shared fixtures: tiny data and runs so the whole suite fits in minutes on 2 cores."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The same float arithmetic on every x86 CPU: where oneDNN's custom operations are on (CPUs with AVX-512,
# as on some of CI's machines and not on others), TensorFlow sums in another order, and a few tests that
# train a tiny model for a few dozen steps to a stated outcome drift to another one (the 52-layer run's
# verdict; the example notebook's). The worker and CLI processes the tests start inherit it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import io  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.processes import kill_workers  # noqa: E402

TINY = 20  # input size for training tests: seconds per run
# One AppTest script run may take this long: a guard against a hung page, not a speed claim. The first
# run of a test process imports TensorFlow and plotly; on a busy CI machine (a Ray cluster beside it)
# that took over 30 s.
APP_TIMEOUT_S = 120
REQUIRE_TOOLS = os.environ.get("BNVIZ_REQUIRE_TOOLS") == "1"  # .ci/run sets it: CI installs every tool, so a missing one is a failure


def needs_tool(available: bool, reason: str) -> pytest.MarkDecorator:
    """Skip a test when a tool it drives (chromium, kaleido) is missing: locally only. Under
    BNVIZ_REQUIRE_TOOLS=1 the test fails with `reason` instead, so CI cannot skip it unnoticed."""
    if available:
        return pytest.mark.skipif(False, reason=reason)
    return pytest.mark.missing_tool(reason) if REQUIRE_TOOLS else pytest.mark.skip(reason=reason)


def browser_test(available: bool, reason: str) -> Callable[[Callable], Callable]:
    """`needs_tool` for a test that drives Chromium (a page in a real browser, or kaleido's static
    export), marked `browser`: seconds each, so the fast lane leaves them to CI."""
    skip = needs_tool(available, reason)
    return lambda test: pytest.mark.browser(skip(test))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives a browser or starts a Ray cluster is also `slow`: `-m "not slow"`, the
    lane a developer runs every hour, leaves it out; `-m browser` or `-m cluster` picks those alone."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.slow)


def skip_missing_tool(reason: str) -> None:
    """`needs_tool` for a fixture that finds the tool missing at run time."""
    (pytest.fail if REQUIRE_TOOLS else pytest.skip)(reason)


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test(tmp_path: Path) -> Iterator[None]:
    """A run a page queued in a test (at its default size: minutes) would go on training beside the
    next tests: drop the job managers the pages cached (their background threads end with them, so
    none starts the workers again), then end the workers serving a home in this test's folder."""
    yield
    if common := sys.modules.get("pages.common"):
        common._manager.clear()
    kill_workers(tmp_path)


@pytest.fixture(autouse=True, scope="module")
def _no_worker_outlives_its_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The same for homes a module's fixtures made, once the module is done."""
    yield
    kill_workers(tmp_path_factory.getbasetemp())


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("missing_tool"):
        pytest.fail(f"BNVIZ_REQUIRE_TOOLS=1 but {mark.args[0]}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_data():
    from bnviz.data import synthetic

    return synthetic(TINY, seed=0, train_per_class=24, val_per_class=8, test_per_class=8)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """An in-memory zip of `entries` (name -> content), for upload and extraction tests."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def one_bit_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG: kilobytes on disk, width × height pixels (×3 bytes as RGB) once decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b"")
