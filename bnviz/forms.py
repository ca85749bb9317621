"""Plain data behind the dashboard's Train form: option lists, the form → RunConfig mapping, data
sources (folders, uploaded zips) and which form field a validation message is about.

No Streamlit and no TensorFlow here, so the form logic is tested without a browser or Keras.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from bnviz import stats
from bnviz.config import (
    BLOCKS_RANGE,
    BN_ARGUMENTS,
    FILTERS_RANGE,
    MAX_INPUT_SIZE,
    MIN_INPUT_SIZE,
    NO_BUDGET_LIMIT,
    SETTING,
    ArchConfig,
    Norm,
    RunConfig,
    with_filters,
    with_settings,
)
from bnviz.data import BUILTIN_DATASETS, DataError, extract_zip, folder_layout
from bnviz.presets import PRESETS
from bnviz.uploads import uploads_dir

# Momentum choices for the slider: coarse far from 1, dense near 1, where the number of steps the
# moving average needs grows fastest (0.99: 458 steps to forget its initial values; 0.999: 4603).
MOMENTUM_STEPS = (
    0.0,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.92,
    0.94,
    0.95,
    0.96,
    0.97,
    0.98,
    0.985,
    0.99,
    0.993,
    0.995,
    0.997,
    0.998,
    0.999,
)
BATCH_SIZES = (4, 8, 16, 32, 64, 128, 256, 512)
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
PROBE_BUDGETS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 100.0)  # share of training time the probe may take in the loop
NORM_LABELS = {  # BN first: the model the story is about
    norm: f"{norm.keras_layer} ({'' if norm.has_moving_stats else 'no '}moving statistics)" if norm.normalizes else "no normalisation"
    for norm in sorted(Norm, key=lambda norm: not norm.has_moving_stats)
}
MAX_UPLOAD_BYTES = 200 * 2**20  # as the dashboard's server.maxUploadSize (.streamlit/config.toml)
PLACEMENT_LABELS = {"after": "after the ReLU (the seed)", "before": "before the ReLU (the paper)"}
DATA_SOURCES = {
    **{name: builtin.label for name, builtin in BUILTIN_DATASETS.items()},
    "folder": "A folder of class sub-folders on this machine",
    "zip": "Upload a zip of class sub-folders",
}


def probe_budget_label(budget: float) -> str:
    """'3 %' for a share of training time; the two ends say what they mean for the records."""
    if budget == 0:
        return "0 (every record after training)"
    return "no limit (every record live)" if budget >= NO_BUDGET_LIMIT else f"{budget:.0%}"


def nearest_momentum(value: float) -> float:
    """The slider step closest to `value` (a typed momentum outside [0, 1] snaps to an end)."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return MOMENTUM_STEPS[-1]
    return min(MOMENTUM_STEPS, key=lambda m: abs(m - value))


@dataclasses.dataclass(frozen=True)
class ArchForm:
    """What the architecture editor shows: a preset's arch reduced to the editable fields."""

    filters: tuple[int, ...]
    norm: str
    placement: str
    dropout: float
    momentum: float
    raw_pixels: bool = False  # no Rescaling(1/255) layer: what the seed notebook fed its models


def form_from_preset(name: str) -> ArchForm:
    """The editor values that reproduce preset `name` exactly."""
    arch = PRESETS[name]()
    return ArchForm(tuple(b.filters for b in arch.blocks), arch.norm, arch.bn.placement, arch.dropout, arch.bn.momentum)


def arch_from_form(preset: str, form: ArchForm) -> ArchConfig:
    """Preset `preset`'s arch with the editor's values; blocks beyond the preset's are plain
    Conv(3×3) + MaxPool(2), and kernels/pools of the preset's own blocks are kept."""
    base = with_filters(PRESETS[preset](), form.filters)
    bn = dataclasses.replace(base.bn, momentum=form.momentum, placement=form.placement)
    rescale = 1.0 if form.raw_pixels else base.rescale
    return dataclasses.replace(base, norm=form.norm, dropout=form.dropout, bn=bn, rescale=rescale)


def run_name(preset: str, arch: ArchConfig) -> tuple[str, str]:
    """(preset, default name): the preset is kept when only the momentum differs from it (as the
    CLI's `--momentum` does), else the run is "custom"."""
    base = PRESETS[preset]()
    same = dataclasses.replace(arch, bn=dataclasses.replace(arch.bn, momentum=base.bn.momentum)) == base
    return (preset, preset) if same else ("", "custom")


# The Train page's settings that map one to one onto the table (widget key: "train_" + name).
FORM_SETTINGS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "seed",
    "input_size",
    "optimizer",
    "shuffle",
    "probe_every",
    "probe_budget",
    *(name for name in BN_ARGUMENTS if name != "momentum"),
)  # momentum: the slider and its exact twin (ArchForm)


def form_config(preset: str, form: ArchForm, values: dict[str, Any], name: str, dataset: str) -> RunConfig:
    """The RunConfig the Train form describes: the edited preset arch, then every FORM_SETTINGS
    value (keyed by setting name); the name defaults to the preset's, or "custom"."""
    arch = arch_from_form(preset, form)
    kept, default_name = run_name(preset, arch)
    config = RunConfig(arch=arch, preset=kept, name=name.strip() or default_name, dataset=dataset)
    return with_settings(config, **{key: values[key] for key in FORM_SETTINGS})


def outlook_text(momentum: float, out: dict[str, float]) -> str:
    """What the moving statistics will still hold of their initial values, in one paragraph."""
    text = (
        f"With momentum {momentum:g} the moving average spans about {out['window']:.3g} batches and halves the weight of its "
        f"initial values every {out['half_life']:.2g} steps. After ≈ {out['steps']:,} steps they still weigh {out['remaining']:.1%}"
    )
    if out["remaining"] > 0.01:
        return text + f": inference will use statistics that are partly not data. A momentum ≤ {out['suggested']:g} forgets them to below 1 %."
    return text + "."


def estimated_steps(config: RunConfig, train_images: int | None) -> int | None:
    """Training steps (moving-average updates) the run will take, when the training size is known."""
    if not train_images:
        return None
    return math.ceil(train_images / config.batch_size) * config.epochs


def momentum_outlook(momentum: float, steps: int) -> dict[str, float]:
    """What the moving statistics will still hold of their initial values when training ends."""
    return {
        "steps": steps,
        "remaining": float(stats.init_weight(momentum, steps)),
        "window": stats.ema_window(momentum),
        "half_life": stats.half_life(momentum),
        "forget": stats.steps_to_forget(momentum),
        "suggested": stats.suggest_momentum(steps),
    }


# --- shareable links ----------------------------------------------------------------------------
# The Train form round-trips through a URL's query string, as TensorFlow Playground keeps its state in
# the hash: every field is declared once (bnviz.config.SETTINGS, plus the form's own fields below), so
# writing, parsing and range checks come from one place. A bad value never raises: it is left out of
# the values and reported by field, for the page to show beside that widget.
DROPOUT_MAX, DROPOUT_STEP, INPUT_SIZE_STEP = 0.9, 0.05, 4  # the Train page's dropout and input-size sliders
DROPOUTS = tuple(round(DROPOUT_STEP * i, 2) for i in range(round(DROPOUT_MAX / DROPOUT_STEP) + 1))  # 0 to 0.9
INPUT_SIZES = tuple(range(MIN_INPUT_SIZE, MAX_INPUT_SIZE + 1, INPUT_SIZE_STEP))
WIDGET_STEPS: dict[str, tuple] = {
    "batch_size": BATCH_SIZES,
    "learning_rate": LEARNING_RATES,
    "probe_budget": PROBE_BUDGETS,
    "dropout": DROPOUTS,
    "input_size": INPUT_SIZES,
}  # values the form's sliders can hold
LINK_SETTINGS = ("norm", "placement", "dropout", "momentum", *FORM_SETTINGS)
LINK_FIELDS = ("preset", "filters", *LINK_SETTINGS, "raw_pixels", "dataset", "folder", "name")
LINKABLE_SOURCES = (*BUILTIN_DATASETS, "folder")  # an uploaded zip lives in one browser session only


def link_query(values: dict[str, Any]) -> dict[str, str]:
    """The query parameters for the form's `values` (by LINK_FIELDS name; filters a tuple of ints)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return format(value, ".12g")
        return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)

    return {name: text(values[name]) for name in LINK_FIELDS if name in values and (name != "folder" or values.get("dataset") == "folder")}


def parse_link(query: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, problems) from query parameters: each LINK_FIELDS entry parsed and range-checked
    as the form would; `problems` maps a field to a one-line message saying what was received."""
    values, problems = {}, {}
    for name in LINK_FIELDS:
        if name in query:
            try:
                values[name] = _link_value(name, str(query[name]))
            except ValueError as exc:
                problems[name] = str(exc)
    return values, problems


def _link_value(name: str, text: str) -> Any:
    """One field's value from its query text; ValueError with the form's message when it cannot be used."""
    received = f"Received: {name}={text[:40]!r}"
    if name in ("preset", "dataset"):
        choices = tuple(PRESETS) if name == "preset" else LINKABLE_SOURCES
        if text not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}. {received}")
        return text
    if name in ("folder", "name"):
        return text
    if name == "filters":
        return _link_filters(text, received)
    if name == "raw_pixels":
        return _parsed(bool, text, name, received)
    value = _parsed(SETTING[name].kind, text, name, received)
    problem, steps = SETTING[name].problem(value), WIDGET_STEPS.get(name)
    if problem is None and steps and not any(math.isclose(value, step) for step in steps):
        problem = f"{name} must be one of the form's steps ({', '.join(f'{v:g}' for v in steps)}). {received}"
    if problem:
        raise ValueError(problem)
    return value


def _parsed(kind: type, text: str, name: str, received: str) -> Any:
    """`text` as `kind` (bools as true/false or 1/0); ValueError naming the field otherwise."""
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false. {received}")
        return text.lower() in ("true", "1")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number' if kind is float else 'text'}. {received}") from None


def _link_filters(text: str, received: str) -> tuple[int, ...]:
    """Filters per conv block as "16,32,16": 1 to 6 blocks of 1 to 512."""
    try:
        filters = tuple(int(part) for part in text.split(","))
    except ValueError:
        filters = ()
    if not (BLOCKS_RANGE[0] <= len(filters) <= BLOCKS_RANGE[1] and all(FILTERS_RANGE[0] <= f <= FILTERS_RANGE[1] for f in filters)):
        (fewest, most), (low, high) = BLOCKS_RANGE, FILTERS_RANGE
        raise ValueError(f"filters must be {fewest} to {most} whole numbers in [{low}, {high}], comma-separated. {received}")
    return filters


# --- data sources -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FolderScan:
    """A cheap look at an image folder (file names only, nothing decoded)."""

    path: str  # resolved folder the run will load
    classes: dict[str, int]  # class name -> files (all splits)
    layout: str  # "train/test" when the folder has split sub-folders, else "one folder"

    @property
    def files(self) -> int:
        return sum(self.classes.values())

    @property
    def train_estimate(self) -> int:
        """Training images after the loader holds out validation (and test) images. One folder: per
        class, as bnviz.data's split does (15 % val and 15 % test, at least one each), so a batch
        check against it holds for small sets; unreadable files are only found when decoding."""
        if self.layout == "train/test":
            return round(self.files * 0.85 * 0.85)
        return sum(max(0, n - 2 * max(1, round(n * 0.15))) for n in self.classes.values())


def scan_folder(path: str | Path) -> FolderScan:
    """Check that `path` looks loadable (bnviz.data.folder_layout, as the loader sees it) without
    decoding images; raises DataError with one line saying what is wrong."""
    text = str(path).strip()
    if not text:
        raise DataError("Enter the path of a folder that holds one sub-folder per class")
    layout = folder_layout(text)
    counts = {name: sum(len(part[name]) for part in layout.parts.values()) for name in layout.class_names}
    return FolderScan(str(layout.root), counts, "train/test" if layout.split_dirs else "one folder")


def upload_folder(home: Path, file_name: str, content: bytes) -> Path:
    """Where an uploaded zip goes: home/uploads/<safe stem>-<content hash>, so the same upload
    lands in the same folder and is extracted only once."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(file_name).stem).strip("._")[:40] or "upload"
    return uploads_dir(home) / f"{stem}-{hashlib.sha256(content).hexdigest()[:10]}"


def check_upload_size(file_name: str, size: int) -> None:
    """DataError for a file over `MAX_UPLOAD_BYTES`, with both sizes."""
    if size > MAX_UPLOAD_BYTES:
        raise DataError(f"{file_name} is {size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,} bytes ({MAX_UPLOAD_BYTES / 2**20:g} MB).")


def save_upload(home: Path, file_name: str, content: bytes) -> Path:
    """Write an uploaded file (a model, a zip kept whole) to home/uploads/<safe stem>-<hash>/<safe
    name> through a temporary name, so a worker never reads half of it and messages name the file
    the user chose; refuses files over the cap."""
    check_upload_size(file_name, len(content))
    folder = upload_folder(home, file_name, content)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(file_name).name).strip("._") or folder.name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".tmp-{path.name}")
        temp.write_bytes(content)
        temp.replace(path)
    os.utime(folder)  # uploaded again: its retention (bnviz.uploads) starts again
    return path


def extract_upload(home: Path, file_name: str, content: bytes) -> FolderScan:
    """Extract an uploaded zip of class sub-folders (bnviz.data.extract_zip) once and scan it.
    A refused zip leaves nothing behind; uploading it again restarts its retention (bnviz.uploads)."""
    dest = upload_folder(home, file_name, content)
    marker = dest / ".bnviz-extracted"
    if marker.exists():
        os.utime(dest)
    else:
        shutil.rmtree(dest, ignore_errors=True)
        try:
            extract_zip(content, dest)
            scan = scan_folder(dest)
        except DataError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        marker.write_text(scan.path)
    return scan_folder(dest)


def train_images(source: str, scan: FolderScan | None = None) -> int | None:
    """About how many training images a data source gives (for the step estimate)."""
    if source in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[source].train_images
    return scan.train_estimate if scan else None


def num_classes(source: str, scan: FolderScan | None = None) -> int:
    if source in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[source].classes
    return len(scan.classes) if scan else 2


# --- validation messages ------------------------------------------------------------------------
def error_field(exc: Exception) -> str:
    """Which form field an error belongs beside: the ConfigError's setting name, "dataset" for a
    DataError, "" when none (show it by the queue button)."""
    if isinstance(exc, DataError):
        return "dataset"
    return getattr(exc, "field", "")
