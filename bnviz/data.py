"""Data sets for bnviz: an embedded synthetic set, scikit-learn's digits, and image folders.

Every loader returns a `Dataset` of float32 NHWC images holding raw 0-255 pixel values: nothing
here rescales, so what the dashboard shows is what the files hold, and any input scaling belongs
to the model. The scale matters to BatchNormalization's story: its moving statistics start at
mean 0 / variance 1, and how wrong they are after t steps, in units of each layer input's
population spread, depends on the input's scale and offset.

This module imports numpy and PIL only (scikit-learn lazily, for the digits), never TensorFlow, so
the dashboard can validate and preview data without loading Keras.
"""

from __future__ import annotations

import inspect
import io
import re
import shutil
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bnviz.config import MAX_INPUT_SIZE, MIN_INPUT_SIZE

SYNTHETIC_CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")
IMAGE_SPLIT_DIRS = (("seg_train", "seg_test"), ("train", "test"))  # the Intel layout, and the usual one
ZIP_SKIP_DIRS = ("__MACOSX",)  # macOS resource forks: would otherwise become a bogus class folder
# The largest image decoded, checked from its header before decoding: 25 Mpx is 75 MB as RGB (a
# 12000×12000 PNG of one colour zips to under 1 MB and took 1.5 GB to decode). JPEGs are checked
# after PIL's draft mode picks a reduced decoding scale, so large photos still load.
MAX_IMAGE_PIXELS = 25_000_000


class DataError(ValueError):
    """Bad data input; message is one line, shown to users."""


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test splits of float32 NHWC raw 0-255 images with int32 labels."""

    name: str
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    skipped: int = 0  # files skipped as unreadable or not images (folder loader)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(images, labels) by split name: train, val, test."""
        return {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val), "test": (self.x_test, self.y_test)}

    def summary(self) -> dict:
        """Plain-data description for the UI: split sizes, classes and the training pixel statistics."""
        return {
            "name": self.name,
            "classes": list(self.class_names),
            "input_size": int(self.x_train.shape[1]),
            "channels": self.channels,
            "train": len(self.y_train),
            "val": len(self.y_val),
            "test": len(self.y_test),
            "train_per_class": np.bincount(self.y_train, minlength=self.num_classes).tolist(),
            "pixel_mean": float(self.x_train.mean(dtype=np.float64)),
            "pixel_std": float(self.x_train.std(dtype=np.float64)),
            "skipped": self.skipped,
        }


def load_dataset(spec: str, input_size: int, seed: int = 0) -> Dataset:
    """Load `spec`: a built-in name (BUILTIN_DATASETS) or a folder path. Raises DataError on bad input."""
    if spec in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[spec].load(input_size, seed)
    return from_folder(spec, input_size, seed)


def _check_size(input_size: int) -> None:
    if not isinstance(input_size, int) or not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE:
        raise DataError(f"input_size must be in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}]. Received: input_size={input_size}")


def _split_indices(y: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> tuple[np.ndarray, ...]:
    """Stratified, seeded train/val/test index arrays; every class puts at least one image in each."""
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, round(len(idx) * val_fraction)) if val_fraction > 0 else 0
        n_test = max(1, round(len(idx) * test_fraction)) if test_fraction > 0 else 0
        parts[0].append(idx[n_val + n_test :])
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val : n_val + n_test])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


# --- synthetic ---------------------------------------------------------------------------------
# Each class draws a mask in [0, 1] over unit coordinates (y, x) from per-image random parameters;
# the class is its shape/texture (orientation, frequency, silhouette), never its colour. Colours,
# brightness, phase/position and noise are nuisances drawn the same way for every class.

Mask = Callable[[np.random.Generator, int, np.ndarray, np.ndarray], np.ndarray]


def _u(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """One uniform parameter per image, shaped (n, 1, 1) to broadcast over the pixel grid."""
    return rng.uniform(low, high, (n, 1, 1)).astype(np.float32)


def _soft(signal: np.ndarray, sharpness: float = 6.0) -> np.ndarray:
    """Threshold at 0 with a soft edge, so thin features survive small sizes without aliasing."""
    return np.clip(0.5 + sharpness * signal, 0.0, 1.0)


def _buildings(rng: np.random.Generator, n: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Blocks of random heights standing on the bottom edge, with gaps between them."""
    t = x * _u(rng, n, 3.0, 5.5) + _u(rng, n, 0.0, 1.0)  # column coordinate: at most 7 columns
    heights = rng.uniform(0.35, 0.85, (n, 1, 7)).astype(np.float32)
    top = 1.0 - np.take_along_axis(heights, np.floor(t).astype(np.intp), axis=2)
    return _soft(y - top, 30.0) * _soft(0.4 - np.abs(t - np.floor(t) - 0.5))


def _forest(rng: np.random.Generator, n: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A fine isotropic blob texture: three high-frequency plane waves in random directions."""
    total = 0.0
    for _ in range(3):
        angle, freq = _u(rng, n, 0.0, np.pi), _u(rng, n, 9.0, 14.0)
        total = total + np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + _u(rng, n, 0, 2 * np.pi))
    return _soft(total - 0.3, 2.0)


def _glacier(rng: np.random.Generator, n: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Broad diagonal bands, rising either way."""
    direction = np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
    return _soft(np.sin(2 * np.pi * _u(rng, n, 2.0, 3.5) * (x + direction * y) + _u(rng, n, 0, 2 * np.pi)), 3.0)


def _mountain(rng: np.random.Generator, n: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Two overlapping triangular peaks (a silhouette filling the area below the ridge)."""
    ridge = np.minimum(
        _u(rng, n, 0.15, 0.45) + _u(rng, n, 1.0, 2.0) * np.abs(x - _u(rng, n, 0.1, 0.5)),
        _u(rng, n, 0.25, 0.55) + _u(rng, n, 1.0, 2.0) * np.abs(x - _u(rng, n, 0.5, 0.9)),
    )
    return _soft((y - ridge) * 4.0)


def _sea(rng: np.random.Generator, n: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Horizontal waves: stripes along x, gently undulating."""
    wobble = _u(rng, n, 0.5, 1.5) * np.sin(2 * np.pi * _u(rng, n, 1.0, 2.5) * x + _u(rng, n, 0, 2 * np.pi))
    return _soft(np.sin(2 * np.pi * _u(rng, n, 4.0, 7.0) * y + wobble + _u(rng, n, 0, 2 * np.pi)), 2.0)


def _street(rng: np.random.Generator, n: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A road converging to a vanishing point, with a dashed centre line cut out of it."""
    vx, vy = _u(rng, n, 0.3, 0.7), _u(rng, n, 0.2, 0.45)
    depth = np.maximum(y - vy, 0.0)
    road = _soft(_u(rng, n, 0.6, 0.9) * depth - np.abs(x - vx) - 0.02, 40.0)
    dashes = _soft(0.04 * depth - np.abs(x - vx), 40.0) * _soft(np.sin(2 * np.pi * 3.0 / (depth + 0.1)))
    return road * (1.0 - dashes)


MASKS: tuple[Mask, ...] = (_buildings, _forest, _glacier, _mountain, _sea, _street)


def _render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Images for `labels`: class mask, random bright background, darker foreground, noise."""
    n = len(labels)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = coords[None, :, None], coords[None, None, :]
    mask = np.empty((n, size, size), np.float32)
    for label, draw in enumerate(MASKS):
        rows = np.flatnonzero(labels == label)
        mask[rows] = draw(rng, len(rows), y, x)
    background = rng.uniform(110.0, 255.0, (n, 1, 1, 3)).astype(np.float32)
    foreground = background * rng.uniform(0.1, 0.55, (n, 1, 1, 3)).astype(np.float32)
    images = background + mask[..., None] * (foreground - background)
    images *= rng.uniform(0.75, 1.0, (n, 1, 1, 1)).astype(np.float32)
    noise = rng.random(images.shape, dtype=np.float32)  # uniform noise, sd 8: far cheaper than normal
    noise *= 28.0
    noise -= 14.0
    images += noise
    return np.clip(images, 0.0, 255.0, out=images)


def synthetic(input_size: int, seed: int = 0, train_per_class: int = 200, val_per_class: int = 50, test_per_class: int = 50) -> Dataset:
    """Six procedurally drawn scene-like classes (named after the Intel image set), no download.

    Deterministic by `seed`. Backgrounds are bright (110-255 per channel) and the pixel mean is
    ~113, like photos. The default 200 training images per class give 38 steps per epoch at batch
    32, 114 steps in the default 3 epochs, after which momentum-0.99 moving statistics still weigh
    their initial 0/1 values by 0.99**114 = 0.32: the seed's stale-statistics regime, in seconds.
    """
    _check_size(input_size)
    rng = np.random.default_rng(seed)
    splits = []
    for per_class in (train_per_class, val_per_class, test_per_class):
        labels = rng.permutation(np.repeat(np.arange(len(MASKS), dtype=np.int32), per_class))
        splits += [_render(rng, labels, input_size), labels]
    return Dataset("synthetic", SYNTHETIC_CLASSES, *splits)


# --- digits ------------------------------------------------------------------------------------


def _resize_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) bilinear interpolation weights with pixel-centre alignment (as PIL)."""
    pos = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, source - 1)
    weights = np.zeros((target, source), np.float32)
    np.add.at(weights, (np.arange(target), low), 1.0 - (pos - low))
    np.add.at(weights, (np.arange(target), high), pos - low)
    return weights


def digits(input_size: int, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 handwritten 8x8 digits (bundled, no download), upscaled bilinearly.

    Values 0-16 become raw 0-255 and grayscale is replicated to 3 channels. The background stays
    exactly zero: sparse inputs, the opposite of the synthetic set's bright backgrounds.
    """
    _check_size(input_size)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    resize = _resize_matrix(8, input_size)
    images = np.einsum("ij,njk,lk->nil", resize, bunch.images.astype(np.float32) * (255.0 / 16.0), resize)
    x = np.repeat(np.clip(images, 0.0, 255.0)[..., None], 3, axis=-1).astype(np.float32)  # clip float round-off
    y = bunch.target.astype(np.int32)
    train, val, test = _split_indices(y, seed, 0.15, 0.15)
    names = tuple(str(d) for d in range(10))
    return Dataset("digits", names, x[train], y[train], x[val], y[val], x[test], y[test])


@dataclass(frozen=True)
class BuiltinDataset:
    """A data set generated in memory (no files behind it): how to make it from (input size,
    seed), and the sizes the Train page estimates steps and the head with before loading it."""

    load: Callable[[int, int], Dataset]
    label: str
    classes: int
    train_images: int


BUILTIN_DATASETS = {
    "synthetic": BuiltinDataset(
        synthetic,
        "Embedded synthetic scenes (6 classes, no download)",
        len(SYNTHETIC_CLASSES),
        len(SYNTHETIC_CLASSES) * inspect.signature(synthetic).parameters["train_per_class"].default,
    ),
    "digits": BuiltinDataset(
        digits, "Handwritten digits (scikit-learn, 10 classes)", 10, round(1797 * 0.7)
    ),  # scikit-learn's 1797 digits, 15 % val and 15 % test held out
}


# --- folders -----------------------------------------------------------------------------------


def _visible(path: Path) -> Iterator[Path]:
    """Children of `path` that are not hidden (dot files, macOS forks), sorted for determinism."""
    return (p for p in sorted(path.iterdir()) if not p.name.startswith(".") and p.name not in ZIP_SKIP_DIRS)


def _descend(path: Path) -> Path:
    """Follow folders that only wrap a single sub-folder (zips, Kaggle's seg_train/seg_train), but
    stop above a lone folder of files: that is one class, and the message should say "found 1"."""
    while True:
        children = list(_visible(path))
        if len(children) != 1 or not children[0].is_dir() or not any(p.is_dir() for p in _visible(children[0])):
            return path
        path = children[0]


def _class_files(root: Path) -> dict[str, list[Path]]:
    """Class name -> files below its sub-folder (hidden ones ignored); DataError if unusable."""
    root = _descend(root)
    folders = [p for p in _visible(root) if p.is_dir()]
    if len(folders) < 2:
        raise DataError(f"{root} needs at least 2 class sub-folders (one per class); found {len(folders)}")
    classes = {}
    for folder in folders:
        files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not _hidden(p, folder)]
        if not files:
            raise DataError(f"Class folder {folder} is empty")
        classes[folder.name] = files
    return classes


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part in ZIP_SKIP_DIRS for part in path.relative_to(root).parts)


def _read_image(path: Path, size: int) -> np.ndarray | None:
    """The file as a (size, size, 3) uint8 RGB array, or None if it is not a readable image.
    DataError, before decoding, for an image over MAX_IMAGE_PIXELS (after JPEG's reduced-scale draft)."""
    try:
        with Image.open(path) as image:  # reads the header only: the size is known, nothing is decoded yet
            image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster for photos
            _check_pixels(path, *image.size)
            rgb = image.convert("RGBA" if image.mode == "P" else image.mode).convert("RGB")
            return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # PIL's own cap, at twice Image.MAX_IMAGE_PIXELS: refused by open
        raise _too_large(path, f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx") from exc
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError):
        return None


def _check_pixels(path: Path, width: int, height: int) -> None:
    """DataError naming the file and its size when decoding it would take more than MAX_IMAGE_PIXELS."""
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(path, f"{width}×{height} pixels ({width * height / 1e6:.0f} Mpx)")


def _too_large(path: Path, size: str) -> DataError:
    """The refusal, naming the file by its class folder (a zip's extraction folder means nothing to its owner)."""
    cap = f"bnviz decodes images up to {MAX_IMAGE_PIXELS / 1e6:g} Mpx (bnviz.data.MAX_IMAGE_PIXELS)"
    return DataError(f"{path.parent.name}/{path.name} is {size}; {cap}: shrink it or remove it")


def _find_split_dirs(path: Path) -> tuple[Path, Path] | None:
    """(train, test) folders when `path` uses the Intel seg_train/seg_test or a train/test layout."""
    for train, test in IMAGE_SPLIT_DIRS:
        if (path / train).is_dir() and (path / test).is_dir():
            return path / train, path / test
    return None


@dataclass(frozen=True)
class FolderLayout:
    """An image folder as the loader sees it, before decoding anything: its root after unwrapping,
    the train/test folders when it has them, and class name -> files per part ("all", or "train"
    and "test")."""

    root: Path
    split_dirs: tuple[Path, Path] | None
    parts: dict[str, dict[str, list[Path]]]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(sorted(next(iter(self.parts.values()))))


def folder_layout(path: str | Path) -> FolderLayout:
    """Find the classes and files of an image folder (file names only); DataError says in one line
    what is wrong: a missing folder, fewer than two classes, an empty class, mismatched splits."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"Folder not found: {path}")
    root = _descend(root.resolve())
    split_dirs = _find_split_dirs(root)
    if not split_dirs:
        return FolderLayout(root, None, {"all": _class_files(root)})
    parts = {"train": _class_files(split_dirs[0]), "test": _class_files(split_dirs[1])}
    if set(parts["test"]) != set(parts["train"]):
        raise DataError(f"{split_dirs[1]} and {split_dirs[0]} have different class folders")
    return FolderLayout(root, split_dirs, parts)


def _load_files(
    parts: dict[str, dict[str, list[Path]]], class_names: tuple[str, ...], size: int, seed: int, max_files: int, max_bad: float
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Read every part's files (capped at max_files by a seeded sample) into (x, y) arrays."""
    jobs = [(part, class_names.index(name), f) for part, classes in parts.items() for name, files in classes.items() for f in files]
    if len(jobs) > max_files:
        keep = np.random.default_rng(seed).choice(len(jobs), max_files, replace=False)
        jobs = [jobs[i] for i in sorted(keep)]
    loaded: dict[str, tuple[list, list]] = {part: ([], []) for part in parts}
    for part, label, file in jobs:
        image = _read_image(file, size)
        if image is not None:
            loaded[part][0].append(image)
            loaded[part][1].append(label)
    skipped = len(jobs) - sum(len(ys) for _, ys in loaded.values())
    if skipped == len(jobs):
        raise DataError(f"No readable images found ({skipped} files skipped)")
    if skipped > max_bad * len(jobs):
        raise DataError(f"{skipped} of {len(jobs)} files are not readable images (more than {max_bad:.0%})")
    arrays = {part: (np.stack(xs).astype(np.float32), np.array(ys, np.int32)) for part, (xs, ys) in loaded.items() if ys}
    return arrays, skipped


def _check_classes(y: np.ndarray, class_names: tuple[str, ...], where: str) -> None:
    counts = np.bincount(y, minlength=len(class_names))
    if counts.min() < 3:
        name = class_names[int(counts.argmin())]
        raise DataError(f"Class {name!r} in {where} has {counts.min()} readable images; need at least 3")


def from_folder(
    path: str | Path,
    input_size: int,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_files: int = 20000,
    max_bad_fraction: float = 0.2,
) -> Dataset:
    """Images in one sub-folder per class, read with PIL, converted to RGB, resized to input_size.

    With `seg_train/` + `seg_test/` (the Intel set) or `train/` + `test/` sub-folders, those are the
    train and test splits and validation comes out of train; otherwise all three are split per
    class by `seed`. Unreadable files are skipped and counted; more than `max_bad_fraction` of them
    is a DataError, as is a missing folder, fewer than two classes or an empty class.
    """
    _check_size(input_size)
    layout = folder_layout(path)
    root, split_dirs = layout.root, layout.split_dirs
    class_names = layout.class_names
    arrays, skipped = _load_files(layout.parts, class_names, input_size, seed, max_files, max_bad_fraction)
    if split_dirs:
        x, y = arrays.get("train", (np.empty(0), np.empty(0, np.int32)))
        _check_classes(y, class_names, str(split_dirs[0]))
        train, val, _ = _split_indices(y, seed, val_fraction, 0.0)
        x_test, y_test = arrays.get("test", (np.empty((0, input_size, input_size, 3), np.float32), np.empty(0, np.int32)))
        if not len(y_test):
            raise DataError(f"No readable images in {split_dirs[1]}")
    else:
        x, y = arrays["all"]
        _check_classes(y, class_names, str(root))
        train, val, test = _split_indices(y, seed, val_fraction, test_fraction)
        x_test, y_test = x[test], y[test]
    return Dataset(root.name, class_names, x[train], y[train], x[val], y[val], x_test, y_test, skipped)


# --- zip upload --------------------------------------------------------------------------------

_UNSAFE_NAME = re.compile(r"^([/\\]|[A-Za-z]:)")


def _safe_parts(name: str) -> tuple[str, ...]:
    """The entry's path components; DataError for absolute paths, drive letters and `..`."""
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if _UNSAFE_NAME.match(name) or ".." in parts:
        raise DataError(f"Unsafe path in zip: {name!r}")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _copy_capped(source: io.BufferedIOBase, target: Path, budget: int) -> int:
    """Copy in chunks, counting the bytes actually written; DataError once `budget` is exceeded."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > budget:
                raise DataError("Zip expands beyond the size limit (zip bomb?)")
            out.write(chunk)
    return written


def _check_clashes(entries: list[tuple[zipfile.ZipInfo, tuple[str, ...]]]) -> None:
    """DataError when one name is both a file and a folder (`a/x` beside `a/x/` or `a/x/y`):
    extraction could only fail half-way through."""
    files = {parts for info, parts in entries if not info.is_dir()}
    folders = {parts for info, parts in entries if info.is_dir()} | {parts[:i] for parts in files for i in range(1, len(parts))}
    clash = min(files & folders, default=None)
    if clash:
        raise DataError(f"Zip holds both a file and a folder named {'/'.join(clash)!r}; rename one and zip it again")


def _write_entries(zf: zipfile.ZipFile, files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], dest: Path, budget: int) -> None:
    """Write each file below `dest`, counting the bytes written; any OSError is one-line DataError."""
    for info, parts in files:
        target = dest.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source:
                budget -= _copy_capped(source, target, budget)
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as exc:
            raise DataError(f"Cannot extract {info.filename!r}: {exc}") from exc
        except OSError as exc:
            raise DataError(f"Cannot extract {info.filename!r}: {exc.strerror or exc}") from exc


def extract_zip(archive: bytes | Path, dest: Path, max_total_bytes: int = 500 * 2**20, max_files: int = 20000) -> Path:
    """Safely extract an uploaded zip of class sub-folders into `dest`; return the folder to load.

    Refuses non-zips, entries escaping `dest` (zip slip), a name that is both a file and a folder,
    and zip bombs: the declared sizes and the file count are checked first, and the bytes actually
    written are counted too, since the declared sizes can lie. Symlinks and macOS `__MACOSX`
    entries are skipped. If the zip holds a single top-level folder, that folder is returned.
    `dest` must not exist yet: it is created, and removed again with everything in it when the zip
    is refused or any write fails (a full disk), so a refused zip leaves nothing behind.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(archive) if isinstance(archive, bytes) else archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"Not a zip file: {exc}") from exc
    with zf:
        entries = [(info, _safe_parts(info.filename)) for info in zf.infolist()]
        entries = [(i, p) for i, p in entries if p and p[0] not in ZIP_SKIP_DIRS and not _is_symlink(i)]
        _check_clashes(entries)
        files = [(i, p) for i, p in entries if not i.is_dir()]
        if len(files) > max_files:
            raise DataError(f"Zip holds {len(files)} files; the limit is {max_files}")
        if sum(i.file_size for i, _ in files) > max_total_bytes:
            raise DataError(f"Zip expands to more than {max_total_bytes // 2**20} MB")
        dest = Path(dest)
        try:
            dest.mkdir(parents=True)
        except OSError as exc:
            raise DataError(f"Cannot extract into {dest}: {exc.strerror or exc}") from exc
        try:
            _write_entries(zf, files, dest, max_total_bytes)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return _descend(dest)
