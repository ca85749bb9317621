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


# Every bad input the CLI is known to get: (args, the words its one error line must hold). {run} is a
# queued run, {file} a plain file, {list_json} a config file holding a JSON list, {readonly} a folder
# nobody may write in.
BAD_INPUTS = [
    (["train", "--momentum", "1.5"], "momentum=1.5"),
    (["train", "--momentum", "nan"], "momentum=nan"),
    (["train", "--momentum", "x"], "momentum must be a number"),
    (["train", "--preset", "resnet"], "Unknown preset"),
    (["train", "--dataset", "/definitely/missing"], "not found"),
    (["train", "--batch-size", "0"], "batch_size=0"),
    (["train", "--batch-size", "1e400"], "batch_size must be a whole number"),
    (["train", "--input-size", "5000"], "input_size=5000"),
    (["train", "--filters", "1e400"], "filters must be a whole number"),
    (["train", "--filters", ","], "expected one or more comma-separated values"),
    (["train", "--filters", "16,0"], "filters=0"),
    (["train", "--config", "{list_json}"], "must be a JSON object"),
    (["sweep", "--momentum", ","], "expected one or more comma-separated values"),
    (["sweep", "--momentum", "0.9", "--batch-size", "1e400"], "batch_size must be a whole number"),
    (["sweep", "--momentum", "0.9,1e400"], "momentum=inf"),
    (["presets", "--input-size", "100000000"], "input_size=100000000"),
    (["summary", "--preset", "vgg"], "Unknown preset"),
    (["summary", "--preset", "bn", "--input-size", "8"], "input_size=8"),
    (["show", "../../etc/passwd"], "Malformed run id"),
    (["tensorboard", "{run}", "--logdir", "{file}"], "--logdir must be a folder you can write in"),
    (["tensorboard", "{run}", "--logdir", "{file}/sub"], "--logdir must be a folder you can write in"),
    (["tensorboard", "{run}", "--logdir", "{readonly}/tb"], "--logdir must be a folder you can write in"),
    (["tensorboard", "20990101-000000-abcdef", "--logdir", "tb"], "20990101-000000-abcdef"),
    (["recalibrate", "{run}"], "no finished model"),
    (["recalibrate", "{run}", "--batches", "0"], "batches=0"),
    (["recalibrate", "{run}", "--save", "fixed.h5"], ".keras file"),
    (["inspect", "{file}", "--data", "{file}", "--batch-size", "0"], "batch_size=0"),
    (["inspect", "{file}", "--data", "{file}", "--steps", "0"], "steps=0"),
    (["inspect", "{file}", "--data", "/nonexistent"], "--data: no such file or folder"),
    (["inspect", "/nonexistent.keras", "--data", "{file}"], "model: no such file or folder"),
]
# Runs every case through bnviz.cli.main in one child process (one start-up, not thirty) whose
# `tensorflow` and `keras` raise on import: each error must come before TensorFlow would load.
DRIVER = """
import contextlib, io, json, sys
from bnviz.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code, _ = -1, err.write(f"{type(exc).__name__}: {exc}")
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory) -> list[tuple[int, str]]:
    """(exit code, stderr) of every BAD_INPUTS case, with TensorFlow made unimportable."""
    from bnviz.presets import preset_config
    from bnviz.store import Store

    root = tmp_path_factory.mktemp("bad_inputs")
    for module in ("tensorflow", "keras"):
        (root / "no_tf" / module).mkdir(parents=True)
        (root / "no_tf" / module / "__init__.py").write_text(f"raise ImportError('{module} imported before the arguments were checked')\n")
    (root / "file").write_text("not a model")
    (root / "list.json").write_text("[1, 2]")
    (root / "readonly").mkdir()
    (root / "readonly").chmod(0o555)
    places = {"run": Store(root / "home").create_run(preset_config("bn")), "file": root / "file", "list_json": root / "list.json"}
    places["readonly"] = "/proc/bnviz" if os.geteuid() == 0 else root / "readonly"  # root writes anywhere; /proc takes no folders
    cases = [[*(a.format(**places) for a in args), "--home", str(root / "home")] for args, _ in BAD_INPUTS]
    env = {**os.environ, "PYTHONPATH": f"{root / 'no_tf'}{os.pathsep}{ROOT}", "KERAS_BACKEND": "tensorflow"}
    out = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("case", range(len(BAD_INPUTS)), ids=[" ".join(args) for args, _ in BAD_INPUTS])
def test_bad_arguments_exit_2_with_one_line(bad_input_results, case):
    code, err = bad_input_results[case]
    command, message = BAD_INPUTS[case][0][0], BAD_INPUTS[case][1]
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith(f"bnviz {command}: error: ") and message in err, err


def test_argparse_errors_point_at_help_instead_of_printing_usage():
    out = bnviz("train", "--epochs", "many")
    assert out.returncode == 2
    assert out.stderr == "bnviz train: error: argument --epochs: epochs must be a whole number. Received: epochs='many' (see bnviz train --help)\n"


def test_list_into_a_closed_pipe_exits_quietly(tmp_path):
    from bnviz.presets import preset_config
    from bnviz.store import Store

    store = Store(tmp_path)
    for _ in range(3):
        store.create_run(preset_config("bn"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BNVIZ_HOME": str(tmp_path)}
    child = subprocess.Popen([sys.executable, "-m", "bnviz", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    child.stdout.close()  # the reader is gone before bnviz writes, as `bnviz list | head -0`
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 1 and err == ""


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


@pytest.mark.slow
def test_list_shows_no_momentum_for_a_model_without_bn(tmp_path):
    from bnviz.presets import preset_config
    from bnviz.store import Store

    store = Store(tmp_path)
    plain, bn = (store.create_run(preset_config(p)) for p in ("more-layers", "bn"))
    listed = {r["id"]: r["momentum"] for r in json.loads(bnviz("list", "--json", home=tmp_path).stdout)["runs"]}
    assert listed == {plain: None, bn: 0.99}
    rows = {line.split()[0]: line.split()[-1] for line in bnviz("list", home=tmp_path).stdout.splitlines()[2:]}
    assert rows == {plain: "–", bn: "0.99"}
