"""Shared fixtures: tiny data and runs so the whole suite fits in minutes on 2 cores."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import io  # noqa: E402
import zipfile  # noqa: E402

import pytest  # noqa: E402

TINY = 20  # input size for training tests: seconds per run


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
