"""Tests for bnviz.forms: the Train form's plain-data logic (no Streamlit, no TensorFlow)."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnviz import forms
from bnviz.config import SETTING, ConfigError, ProbeConfig, RunConfig, validate
from bnviz.data import DataError
from bnviz.presets import PRESETS, preset_config
from bnviz.shapes import param_counts


def test_momentum_steps_are_sorted_valid_and_dense_near_one():
    steps = forms.MOMENTUM_STEPS
    assert list(steps) == sorted(steps) and steps[0] == 0.0 and steps[-1] == 0.999
    assert {0.8, 0.9, 0.99} <= set(steps)
    assert sum(m >= 0.95 for m in steps) >= 8  # fine steps where mᵗ changes fastest with m


@pytest.mark.parametrize(("typed", "snapped"), [(0.99, 0.99), (0.801, 0.8), (1.5, 0.999), (-3.0, 0.0), (float("nan"), 0.999)])
def test_nearest_momentum(typed, snapped):
    assert forms.nearest_momentum(typed) == snapped


@pytest.mark.parametrize("name", list(PRESETS))
def test_form_round_trips_every_preset(name):
    arch = forms.arch_from_form(name, forms.form_from_preset(name))
    assert arch == PRESETS[name]()
    assert forms.run_name(name, arch) == (name, name)


def test_momentum_change_keeps_the_preset_other_edits_make_it_custom():
    form = forms.form_from_preset("bn")
    arch = forms.arch_from_form("bn", forms.ArchForm(form.filters, form.norm, form.placement, form.dropout, 0.8))
    assert arch == preset_config("bn").with_momentum(0.8).arch
    assert forms.run_name("bn", arch) == ("bn", "bn")
    wider = forms.arch_from_form("bn", forms.ArchForm((16, 32, 16, 8), "batch", "before", 0.25, 0.9))
    assert forms.run_name("bn", wider) == ("", "custom")
    assert [b.filters for b in wider.blocks] == [16, 32, 16, 8]
    assert wider.blocks[1].pool_stride == 1  # the preset's own block keeps its pooling
    assert wider.blocks[3].kernel == 3 and wider.blocks[3].pool == 2
    assert (wider.bn.placement, wider.dropout, wider.bn.momentum) == ("before", 0.25, 0.9)


def test_estimated_steps_and_outlook_match_the_background_table():
    config = RunConfig(batch_size=32, epochs=3)
    steps = forms.estimated_steps(config, forms.train_images("synthetic"))
    assert steps == 38 * 3  # 1200 synthetic training images
    out = forms.momentum_outlook(0.99, 40)
    assert out["remaining"] == pytest.approx(0.99**40) and round(out["remaining"], 2) == 0.67
    assert out["window"] == pytest.approx(100) and round(out["half_life"]) == 69
    assert out["forget"] == 459  # ceil(ln 0.01 / ln 0.99) = ceil(458.2)
    assert 0.99**40 > 0.01 > out["suggested"] ** 40
    assert forms.estimated_steps(config, None) is None


def test_error_field_comes_from_the_setting_not_the_message_text():
    def error(**changes) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            validate(RunConfig(**changes))
        return info.value

    assert forms.error_field(error(input_size=8)) == "input_size"
    assert forms.error_field(error(epochs=0)) == "epochs"
    assert forms.error_field(pytest.raises(ConfigError, validate, RunConfig().with_momentum(1.5)).value) == "momentum"
    assert forms.error_field(pytest.raises(ConfigError, validate, RunConfig().replace(probe=ProbeConfig(bins=1))).value) == "bins"
    with pytest.raises(ValueError) as info:
        param_counts(preset_config("bn").arch, 8)
    assert forms.error_field(info.value) == "input_size"
    assert forms.error_field(DataError("Folder not found: x")) == "dataset"
    assert forms.error_field(ConfigError("This model needs about 9.0 GiB")) == ""


def _image_bytes(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(out, "PNG")
    return out.getvalue()


def _class_tree(root: Path, classes=("cat", "dog"), per_class=4) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(_image_bytes(i * 20))
    return root


def test_scan_folder_counts_classes_and_refuses_bad_folders(tmp_path):
    scan = forms.scan_folder(_class_tree(tmp_path / "wrap" / "images"))
    assert scan.path == str((tmp_path / "wrap" / "images").resolve())  # single wrapping folder followed
    assert scan.classes == {"cat": 4, "dog": 4} and scan.layout == "one folder" and scan.files == 8
    assert forms.num_classes("folder", scan) == 2
    with pytest.raises(DataError, match="Folder not found"):
        forms.scan_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="Enter the path"):
        forms.scan_folder("  ")
    _class_tree(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="at least 2 class sub-folders"):
        forms.scan_folder(tmp_path / "one")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    (tmp_path / "empty" / "b" / "x.png").write_bytes(_image_bytes(1))
    with pytest.raises(DataError, match="is empty"):
        forms.scan_folder(tmp_path / "empty")


def test_scan_folder_train_test_layout(tmp_path):
    _class_tree(tmp_path / "set" / "train")
    _class_tree(tmp_path / "set" / "test", per_class=2)
    scan = forms.scan_folder(tmp_path / "set")
    assert scan.layout == "train/test" and scan.classes == {"cat": 6, "dog": 6}


def _zip(tree: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in tree.items():
            zf.writestr(name, content)
    return out.getvalue()


def test_extract_upload_is_idempotent_and_leaves_nothing_when_refused(tmp_path):
    content = _zip({f"pets/{c}/{i}.png": _image_bytes(i) for c in ("cat", "dog") for i in range(3)})
    scan = forms.extract_upload(tmp_path, "My Pets!.zip", content)
    dest = forms.upload_folder(tmp_path, "My Pets!.zip", content)
    assert dest.parent == tmp_path / "uploads" and dest.name.startswith("My_Pets-")
    assert scan.path == str((dest / "pets").resolve()) and scan.classes == {"cat": 3, "dog": 3}
    assert forms.extract_upload(tmp_path, "My Pets!.zip", content) == scan  # second call: no re-extraction
    bad = _zip({"../evil.png": b"x"})
    with pytest.raises(DataError, match="Unsafe path"):
        forms.extract_upload(tmp_path, "evil.zip", bad)
    assert not forms.upload_folder(tmp_path, "evil.zip", bad).exists()
    with pytest.raises(DataError):
        forms.extract_upload(tmp_path, "junk.zip", b"not a zip")
    assert forms.upload_folder(tmp_path, "../../etc/passwd", b"").parent == tmp_path / "uploads"


def test_raw_pixels_removes_the_rescaling_layer_only():
    scaled = forms.arch_from_form("bn", forms.ArchForm((16, 32, 16), "batch", "after", 0.5, 0.99))
    raw = forms.arch_from_form("bn", forms.ArchForm((16, 32, 16), "batch", "after", 0.5, 0.99, raw_pixels=True))
    assert scaled.rescale == pytest.approx(1 / 255) and raw.rescale == 1.0
    assert dataclasses.replace(raw, rescale=scaled.rescale) == scaled


def test_link_round_trips_every_field_and_reports_bad_values_by_field():
    values = {
        "preset": "final",
        "filters": (16, 24, 16),
        "norm": "batch",
        "placement": "before",
        "dropout": 0.15000000000000002,
        "momentum": 0.9995,
        "raw_pixels": True,
        "dataset": "folder",
        "folder": "/data/x y",
        "name": "a&b=c",
        **{name: SETTING[name].default for name in forms.FORM_SETTINGS},
    }
    query = forms.link_query(values)
    parsed, problems = forms.parse_link(query)
    assert not problems and set(parsed) == set(forms.LINK_FIELDS)
    assert parsed == {**values, "dropout": pytest.approx(0.15)}
    assert "folder" not in forms.link_query({**values, "dataset": "synthetic"})  # a folder path only travels with the folder source
    bad = {
        "batch_size": "48",
        "learning_rate": "0.0002",
        "momentum": "nan",
        "epochs": "2.5",
        "shuffle": "maybe",
        "dataset": "zip",
        "filters": "16,,32",
        "input_size": "65",
        "norm": "<script>",
        "preset": "x" * 100,
    }
    parsed, problems = forms.parse_link(bad)
    assert parsed == {} and set(problems) == set(bad)
    assert problems["momentum"] == "momentum must be in [0, 1]. Received: momentum=nan"
    assert problems["preset"].endswith("Received: preset='" + "x" * 40 + "'")  # what was received, cut short
