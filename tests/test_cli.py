"""The command line: machine-readable output, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bnviz(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if home:
        env["BNVIZ_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "bnviz", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_summary_reports_seed_counts():
    out = bnviz("summary", "--preset", "bn", "--input-size", "224", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["total"], data["trainable"], data["non_trainable"]) == (279_638, 279_510, 128)
    assert [r["type"] for r in data["layers"]].count("BatchNormalization") == 3


def test_presets_json_lists_four_models():
    data = json.loads(bnviz("presets", "--input-size", "224", "--json").stdout)
    assert {p["preset"]: p["total"] for p in data["presets"]} == {"initial": 2_286_246, "more-layers": 279_382, "bn": 279_638, "final": 279_638}


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--momentum", "1.5"], "momentum=1.5"),
        (["train", "--momentum", "nan"], "momentum=nan"),
        (["train", "--preset", "resnet"], "Unknown preset"),
        (["train", "--dataset", "/definitely/missing"], "not found"),
        (["train", "--batch-size", "0"], "batch_size=0"),
        (["train", "--input-size", "5000"], "input_size=5000"),
        (["show", "../../etc/passwd"], "Malformed run id"),
        (["summary", "--preset", "vgg"], "Unknown preset"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    out = bnviz(*args, home=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in out.stderr


@pytest.mark.slow
def test_folder_with_one_class_is_refused(tmp_path):
    from PIL import Image

    (tmp_path / "data" / "only").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "data" / "only" / f"{i}.png")
    out = bnviz("train", "--dataset", str(tmp_path / "data"), "--input-size", "16", "--epochs", "1", home=tmp_path / "home")
    assert out.returncode == 2 and "class" in out.stderr.lower() and "Traceback" not in out.stderr


@pytest.mark.slow
def test_train_stores_run_and_prints_json(tmp_path):
    out = bnviz("train", "--preset", "bn", "--input-size", "16", "--epochs", "1", "--seed", "1", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"train", "val", "test", "val_batchstats", "test_batchstats"} <= set(data["accuracy"])
    assert data["steps"] > 0 and data["seconds"] > 0 and Path(data["model_path"]).is_file()
    listed = json.loads(bnviz("list", "--json", home=tmp_path).stdout)["runs"]
    assert [r["id"] for r in listed] == [data["run_id"]] and listed[0]["status"] == "done"
    shown = json.loads(bnviz("show", data["run_id"], "--json", home=tmp_path).stdout)
    assert shown["evaluations"]["final"]["accuracy"] == data["accuracy"]


def test_list_shows_no_momentum_for_a_model_without_bn(tmp_path):
    from bnviz.presets import preset_config
    from bnviz.store import Store

    store = Store(tmp_path)
    plain, bn = (store.create_run(preset_config(p)) for p in ("more-layers", "bn"))
    listed = {r["id"]: r["momentum"] for r in json.loads(bnviz("list", "--json", home=tmp_path).stdout)["runs"]}
    assert listed == {plain: None, bn: 0.99}
    rows = {line.split()[0]: line.split()[-1] for line in bnviz("list", home=tmp_path).stdout.splitlines()[2:]}
    assert rows == {plain: "–", bn: "0.99"}
