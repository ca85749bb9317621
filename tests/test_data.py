"""Tests for bnviz.data: the synthetic set, digits, folder loading and safe zip extraction."""

from __future__ import annotations

import errno
import io
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from bnviz import data
from bnviz.data import SYNTHETIC_CLASSES, DataError, Dataset, _copy_capped, digits, extract_zip, from_folder, load_dataset, synthetic
from tests.conftest import one_bit_png, zip_bytes

SMALL = {"train_per_class": 4, "val_per_class": 2, "test_per_class": 3}


def _arrays(d: Dataset) -> list[np.ndarray]:
    return [d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test]


# --- synthetic ---------------------------------------------------------------------------------


def test_synthetic_same_seed_same_arrays_other_seed_differs():
    a, b, c = synthetic(16, 3, **SMALL), synthetic(16, 3, **SMALL), synthetic(16, 4, **SMALL)
    for left, right in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize("size", [16, 224])
def test_synthetic_shapes_dtypes_and_raw_pixel_range(size):
    d = synthetic(size, 0, **SMALL)
    assert d.x_train.shape == (6 * 4, size, size, 3)
    assert d.x_val.shape == (6 * 2, size, size, 3) and d.x_test.shape == (6 * 3, size, size, 3)
    for x, y in [(d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)]:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.min() >= 0.0 and x.max() <= 255.0
        assert x.max() > 150.0  # raw 0-255 values, not rescaled to [0, 1]
    assert d.class_names == SYNTHETIC_CLASSES and d.channels == 3 and d.num_classes == 6


def test_synthetic_defaults_are_balanced_bright_and_fast():
    start = time.process_time()  # CPU time: robust to other processes on a shared machine
    d = synthetic(64, 0)
    assert time.process_time() - start < 2.0
    for y in (d.y_train, d.y_val, d.y_test):
        counts = np.bincount(y, minlength=6)
        assert counts.min() == counts.max() > 0
    summary = d.summary()
    assert summary["train"] == len(d.y_train) and summary["classes"] == list(SYNTHETIC_CLASSES)
    assert summary["pixel_mean"] > 100.0  # bright: far from BN's initial moving mean 0
    assert summary["pixel_std"] > 20.0


def test_synthetic_classes_differ_more_than_images_within_a_class():
    # A nearest-class-mean classifier on amplitude spectra must beat chance (1/6) by far, so the
    # classes carry a learnable signal (the training tests check the CNNs themselves).
    d = synthetic(16, 0, train_per_class=60, val_per_class=1, test_per_class=30)

    def features(x: np.ndarray) -> np.ndarray:
        gray = x.mean(-1)
        gray = gray - gray.mean((1, 2), keepdims=True)
        return np.abs(np.fft.fft2(gray)).reshape(len(x), -1)  # shift-invariant spectrum

    train, test = features(d.x_train), features(d.x_test)
    centres = np.stack([train[d.y_train == k].mean(0) for k in range(6)])
    predicted = np.argmin(((test[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (predicted == d.y_test).mean() > 0.8


@pytest.mark.parametrize("size", [15, 225, 0])
def test_synthetic_rejects_sizes_out_of_range(size):
    with pytest.raises(DataError, match="input_size"):
        synthetic(size)


def test_load_dataset_dispatches_by_spec(tmp_path):
    assert load_dataset("synthetic", 16).name == "synthetic"
    assert load_dataset("digits", 16).name == "digits"
    with pytest.raises(DataError, match="Folder not found"):
        load_dataset(str(tmp_path / "missing"), 16)


def test_data_module_does_not_import_tensorflow():
    code = "import sys, bnviz.data; sys.exit(any(m in sys.modules for m in ('tensorflow', 'keras', 'streamlit')))"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


# --- digits ------------------------------------------------------------------------------------


def test_digits_upscaled_raw_grayscale_in_three_channels_and_split_by_seed():
    d = digits(24, seed=1)
    assert d.num_classes == 10 and d.x_train.shape[1:] == (24, 24, 3) and d.x_train.dtype == np.float32
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1797
    np.testing.assert_array_equal(d.x_train[..., 0], d.x_train[..., 2])
    assert d.x_train.min() == 0.0 and 250.0 <= d.x_train.max() <= 255.0
    assert (d.x_train == 0.0).mean() > 0.3  # strokes on an exactly-zero background
    assert set(np.unique(d.y_test)) == set(range(10))
    np.testing.assert_array_equal(digits(24, seed=1).y_train, d.y_train)
    assert not np.array_equal(digits(24, seed=2).y_train, d.y_train)


# --- folders -----------------------------------------------------------------------------------


def _write(path: Path, size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG", value: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"L": value, "RGBA": (value, 10, 10, 128), "P": value % 256}.get(mode, (value, 20, 20))
    Image.new(mode, size, colour).save(path, fmt)


def _class_tree(root: Path, classes=("cats", "dogs"), per_class: int = 5) -> None:
    for k, name in enumerate(classes):
        for i in range(per_class):
            _write(root / name / f"{i}.png", (20 + 7 * i, 30), value=50 + 100 * k)


def test_from_folder_mixed_modes_sizes_and_skipped_files(tmp_path):
    _class_tree(tmp_path, per_class=6)
    _write(tmp_path / "cats" / "gray.jpg", (50, 40), "L", "JPEG")
    _write(tmp_path / "cats" / "alpha.png", (9, 9), "RGBA")
    _write(tmp_path / "dogs" / "palette.gif", (33, 17), "P", "GIF")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "dogs" / "notes.txt").write_text("hello")
    _write(tmp_path / ".hidden" / "x.png", (8, 8))  # hidden folder: not a class
    _write(tmp_path / "cats" / ".DS_Store.png", (8, 8))  # hidden file: ignored, not skipped
    d = from_folder(tmp_path, 16, seed=0)
    assert d.class_names == ("cats", "dogs")
    assert d.skipped == 2
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 15
    for x in (d.x_train, d.x_val, d.x_test):
        assert x.shape[1:] == (16, 16, 3) and x.dtype == np.float32
    assert len(d.y_val) >= 2 and len(d.y_test) >= 2  # each class contributes to every split
    gray = np.concatenate([d.x_train, d.x_val, d.x_test])
    assert np.any(np.all(gray == gray[..., :1], axis=(1, 2, 3)))  # grayscale became 3 equal channels


def test_from_folder_split_is_deterministic_by_seed(tmp_path):
    _class_tree(tmp_path, per_class=20)
    a, b, c = from_folder(tmp_path, 16, seed=0), from_folder(tmp_path, 16, seed=0), from_folder(tmp_path, 16, seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_from_folder_refuses_too_many_bad_files(tmp_path):
    _class_tree(tmp_path, per_class=3)
    for i in range(3):
        (tmp_path / "cats" / f"bad{i}.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not readable images"):
        from_folder(tmp_path, 16)


def test_from_folder_caps_the_number_of_files(tmp_path):
    _class_tree(tmp_path, per_class=10)
    d = from_folder(tmp_path, 16, max_files=12)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 12


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"only": 4}, "at least 2 class sub-folders"),
        ({"a": 4, "b": 0}, "b is empty"),
        ({}, "at least 2 class sub-folders"),
    ],
)
def test_from_folder_bad_layouts(tmp_path, layout, message):
    for name, count in layout.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            _write(tmp_path / name / f"{i}.png", (8, 8))
    with pytest.raises(DataError, match=message):
        from_folder(tmp_path, 16)


def test_from_folder_missing_folder(tmp_path):
    with pytest.raises(DataError, match="^Folder not found: "):
        from_folder(tmp_path / "nope", 16)


def test_from_folder_all_files_unreadable(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_text("text")
    with pytest.raises(DataError, match="No readable images"):
        from_folder(tmp_path, 16)


@pytest.mark.parametrize(("train", "test"), [("seg_train", "seg_test"), ("train", "test")])
def test_from_folder_intel_layout_uses_given_test_split(tmp_path, train, test):
    _class_tree(tmp_path / train / train, ("forest", "sea", "street"), per_class=10)  # Kaggle nests twice
    _class_tree(tmp_path / test / test, ("forest", "sea", "street"), per_class=4)
    _class_tree(tmp_path / "seg_pred", ("unlabelled", "more"), per_class=2)  # ignored
    d = from_folder(tmp_path, 16)
    assert d.class_names == ("forest", "sea", "street")
    assert len(d.y_test) == 12 and np.bincount(d.y_test).tolist() == [4, 4, 4]
    assert len(d.y_train) + len(d.y_val) == 30 and len(d.y_val) == 6


def test_from_folder_intel_layout_with_mismatched_classes(tmp_path):
    _class_tree(tmp_path / "train", ("a", "b"), per_class=4)
    _class_tree(tmp_path / "test", ("a", "c"), per_class=4)
    with pytest.raises(DataError, match="different class folders"):
        from_folder(tmp_path, 16)


# --- zips --------------------------------------------------------------------------------------


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), (value, value, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def test_extract_zip_round_trip_returns_single_top_folder(tmp_path):
    entries = {f"upload/{c}/{i}.png": _png(40 * i) for c in ("cats", "dogs") for i in range(4)}
    entries["__MACOSX/upload/cats/._0.png"] = b"resource fork"
    root = extract_zip(zip_bytes(entries), tmp_path / "out")
    assert root == tmp_path / "out" / "upload"
    assert not (tmp_path / "out" / "__MACOSX").exists()
    d = from_folder(root, 16)
    assert d.class_names == ("cats", "dogs") and d.skipped == 0


def test_extract_zip_accepts_a_path(tmp_path):
    archive = tmp_path / "up.zip"
    archive.write_bytes(zip_bytes({"a/0.png": _png(1), "b/0.png": _png(2)}))
    assert extract_zip(archive, tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out" / "b" / "0.png").read_bytes() == _png(2)


def test_extract_zip_rejects_non_zip(tmp_path):
    with pytest.raises(DataError, match="Not a zip file"):
        extract_zip(b"PK but not a zip", tmp_path / "out")


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/abs/evil.png", "C:/evil.png", "..\\evil.png"])
def test_extract_zip_rejects_zip_slip(tmp_path, name):
    with pytest.raises(DataError, match="Unsafe path"):
        extract_zip(zip_bytes({"a/ok.png": _png(1), name: b"x"}), tmp_path / "out")
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "out" / "a" / "ok.png").exists()


def test_extract_zip_caps_declared_size_and_file_count(tmp_path):
    bomb = zip_bytes({"a/zeros.bin": b"\0" * 200_000})
    assert len(bomb) < 2_000  # compresses ~100x: the declared size is what gives it away
    with pytest.raises(DataError, match="more than"):
        extract_zip(bomb, tmp_path / "one", max_total_bytes=100_000)
    with pytest.raises(DataError, match="files; the limit is 3"):
        extract_zip(zip_bytes({f"a/{i}": b"x" for i in range(4)}), tmp_path / "two", max_files=3)


def test_extract_zip_refuses_entries_whose_declared_size_lies(tmp_path):
    data = bytearray(zip_bytes({"a/zeros.bin": b"\0" * 200_000}))
    # Declare 10 bytes (local header offset 22, central directory entry offset 24) for 200 kB of data.
    central = data.rfind(b"PK\x01\x02")
    data[22:26] = data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(DataError, match="Cannot extract"):
        extract_zip(bytes(data), tmp_path / "out", max_total_bytes=100_000)
    assert not (tmp_path / "out").exists()  # the partial folder is removed


def test_copy_capped_counts_the_bytes_actually_written(tmp_path):
    budget = (1 << 20) + 5
    with pytest.raises(DataError, match="size limit"):
        _copy_capped(io.BytesIO(b"x" * (3 << 20)), tmp_path / "f", budget)
    assert (tmp_path / "f").stat().st_size <= budget
    assert _copy_capped(io.BytesIO(b"y" * 100), tmp_path / "g", 100) == 100


def test_extract_zip_skips_symlinks(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("a/ok.png", _png(3))
        zf.writestr("b/ok.png", _png(4))
    root = extract_zip(buffer.getvalue(), tmp_path / "out")
    assert not (root / "a" / "link.png").exists() and (root / "a" / "ok.png").exists()


# --- archives that fail half-way, and images too large to decode ---------------------------------


def _classes(**extra: bytes) -> dict[str, bytes]:
    return {**{f"pets/{c}/{i}.png": _png(40 * i) for c in ("cats", "dogs") for i in range(3)}, **extra}


@pytest.mark.parametrize(
    "extra",
    [
        {"pets/dogs/x": b"a file", "pets/dogs/x/0.png": _png(1)},  # the file first: mkdir of its folder failed (FileExistsError)
        {"pets/dogs/x/0.png": _png(1), "pets/dogs/x": b"a file"},  # the folder first: writing the file failed
        {"pets/dogs/x": b"a file", "pets/dogs/x/": b""},  # an explicit folder entry
    ],
)
def test_extract_zip_refuses_a_name_that_is_a_file_and_a_folder(tmp_path, extra):
    with pytest.raises(DataError, match=r"^Zip holds both a file and a folder named 'pets/dogs/x'; rename one and zip it again$"):
        extract_zip(zip_bytes(_classes(**extra)), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_any_os_error_while_extracting_is_one_line_and_removes_the_partial_folder(tmp_path, monkeypatch):
    real, calls = data._copy_capped, []

    def disk_full_on_the_third(source, target, budget):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(source, target, budget)

    monkeypatch.setattr(data, "_copy_capped", disk_full_on_the_third)
    with pytest.raises(DataError, match=r"^Cannot extract 'pets/cats/2\.png': No space left on device$"):
        extract_zip(zip_bytes(_classes()), tmp_path / "out")
    assert calls[0].is_relative_to(tmp_path / "out") and not (tmp_path / "out").exists()


def test_extract_zip_refuses_an_existing_destination_and_keeps_it(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="^Cannot extract into .*/out: File exists$"):
        extract_zip(zip_bytes(_classes()), tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


@pytest.fixture
def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image PIL decodes from here on."""
    sizes, load = [], ImageFile.ImageFile.load

    def spy(image):
        sizes.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns from 89 Mpx, refuses from 179 Mpx
@pytest.mark.parametrize(
    "size, shown",
    [((12000, 12000), "12000×12000 pixels (144 Mpx)"), ((14000, 14000), "over 179 Mpx")],  # the second is past PIL's own bomb check
)
def test_an_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path, decoded_sizes, size, shown):
    content = one_bit_png(*size)
    assert len(content) < 100_000
    root = extract_zip(zip_bytes(_classes(**{"pets/dogs/huge.png": content})), tmp_path / "out")
    with pytest.raises(DataError) as refused:
        from_folder(root, 16)
    message = str(refused.value)
    assert message == f"dogs/huge.png is {shown}; bnviz decodes images up to 25 Mpx (bnviz.data.MAX_IMAGE_PIXELS): shrink it or remove it"
    assert decoded_sizes and max(w * h for w, h in decoded_sizes) <= data.MAX_IMAGE_PIXELS  # the huge one was never decoded


def test_a_large_jpeg_loads_at_a_reduced_scale_under_the_cap(tmp_path, decoded_sizes):
    photo = io.BytesIO()
    Image.new("L", (6000, 6000), 200).save(photo, "JPEG")  # 36 Mpx: over the cap at full size
    root = extract_zip(zip_bytes(_classes(**{"pets/dogs/photo.jpg": photo.getvalue()})), tmp_path / "out")
    d = from_folder(root, 16)
    assert d.skipped == 0 and len(d.y_train) + len(d.y_val) + len(d.y_test) == 7
    assert max(w * h for w, h in decoded_sizes) <= (6000 // 8) ** 2  # JPEG's draft mode decoded it at 1/8 scale
    assert 200 in np.concatenate([d.x_train, d.x_val, d.x_test]).reshape(-1)
