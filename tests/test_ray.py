"""The Ray executor on a real two-node cluster on this machine (tests/ray_cluster.py runs the
scenarios once, in a network namespace of its own so that Ray talks over loopback only), the
dashboard listing its runs, and the messages for a missing Ray or an unreachable cluster."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bnviz.config import ConfigError
from bnviz.executors import check_ray_auth, is_loopback, ray_address
from bnviz.jobs import JobManager
from bnviz.presets import preset_config
from bnviz.records import JobStatus, RunStatus
from bnviz.store import Store
from tests.browser import free_port
from tests.conftest import APP_TIMEOUT_S, skip_missing_tool
from tests.test_app import as_shown

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_SECONDS = 420


def cluster_test(test):
    """The module's one cluster (60 s on a quiet machine, 140 s on 2 busy cores): marked `cluster`, and
    allowed the scenarios' own limit plus a minute, not pytest's default 300 s for one test."""
    return pytest.mark.cluster(pytest.mark.timeout(SCENARIO_SECONDS + 60)(test))


def namespace_command(script: list[str]) -> list[str]:
    """`script` in a new network namespace with loopback up (a user namespace too when not root)."""
    flags = "-n" if os.geteuid() == 0 else "-rn"
    return ["unshare", flags, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *script]


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> tuple[Path, dict]:
    """Run every cluster scenario once; returns the store's home and what the scenarios saw."""
    if importlib.util.find_spec("ray") is None:
        skip_missing_tool("Ray is not installed (pip install -r requirements-ray.txt)")
    if not (shutil.which("unshare") and shutil.which("ip")):
        skip_missing_tool("unshare and ip are needed to keep the test cluster on loopback")
    home, out = tmp_path_factory.mktemp("ray-home"), tmp_path_factory.mktemp("ray-out") / "result.json"
    proc = subprocess.run(
        namespace_command([sys.executable, "-m", "tests.ray_cluster", str(home), str(out)]), cwd=ROOT, capture_output=True, text=True, timeout=SCENARIO_SECONDS
    )
    assert out.is_file(), f"the scenarios wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return home, json.loads(out.read_text())


@pytest.fixture(scope="module")
def seen(cluster_run) -> dict:
    return cluster_run[1]


@cluster_test
def test_cluster_talks_over_loopback_only(seen):
    assert seen["addresses"] == ["127.0.0.1", "127.0.0.1"], seen


@cluster_test
def test_sweep_spreads_over_both_nodes_and_lands_complete(seen):
    sweep = seen["sweep"]
    assert sweep["finished"] and sweep["status"] == ["done"] * 4, (sweep, seen["driver_log"])
    assert len(set(sweep["nodes"])) == 2, sweep["nodes"]  # 1 CPU per node: two runs at a time, one on each
    assert sweep["steps"] == sweep["total"] and min(sweep["total"]) > 0  # every step row reached the store
    assert all(sweep["models"])  # the model file travelled back to the store's folder
    assert all({"final", "recalibrated"} <= set(names) for names in sweep["evaluations"])


@cluster_test
def test_progress_is_live_while_a_ray_run_trains(seen):
    mid_run = [s for s in seen["sweep"]["live"] if 0 < s["step"] < s["total"]]
    assert mid_run, seen["sweep"]["live"]


@cluster_test
def test_cli_trains_on_ray_with_a_data_folder_that_travels(seen):
    cli = seen["cli"]
    assert cli["returncode"] == 0 and cli["payload"]["status"] == RunStatus.DONE, cli
    assert cli["dataset"] == cli["folder"]  # the run keeps the user's folder; the node trained on its unpacked copy
    assert cli["data"]["name"] == Path(cli["folder"]).name and cli["data"]["train_per_class"] == [12, 12]
    assert cli["node"]["node_id"] in seen["sweep"]["nodes"] and cli["payload"]["accuracy"]["test"] >= 0
    assert Path(cli["payload"]["model_path"]).is_file()


@cluster_test
def test_a_driver_without_the_token_is_refused_in_one_line_before_queuing(seen):
    refused = seen["no_token"]
    last = refused["stderr"].strip().splitlines()[-1]  # Ray's own log lines come before it
    assert refused["returncode"] == 2, refused
    assert last.startswith("bnviz train: error: Ray token authentication failed (InvalidAuthToken: Authentication token is missing or incorrect;")
    assert "RAY_AUTH_MODE is unset here): run bnviz with RAY_AUTH_MODE=token and the head's token" in last
    assert "no token" not in refused["runs"]  # nothing was queued


@cluster_test
def test_cancel_stops_a_ray_run_at_the_next_step(seen):
    cancel = seen["faults"]["cancel"]
    assert cancel["status"] == RunStatus.CANCELLED, (cancel, seen["driver_log"])
    assert 20 <= cancel["steps"] < cancel["total"]
    assert cancel["jobs"][0][0] == JobStatus.CANCELLED


@cluster_test
def test_a_killed_ray_worker_leaves_its_run_interrupted_with_its_records(seen):
    kill = seen["faults"]["kill"]
    assert kill["status"] == RunStatus.INTERRUPTED, (kill, seen["driver_log"])
    assert kill["steps"] >= seen["faults"]["steps_at_kill"] >= 20  # every committed record kept
    assert "Ray worker" in kill["error"] and "WorkerCrashedError" in kill["error"]
    assert kill["jobs"][0][0] == JobStatus.INTERRUPTED


@cluster_test
def test_a_lost_node_leaves_its_run_interrupted_with_its_records(seen):
    lost = seen["lost_node"]
    assert lost["status"] == RunStatus.INTERRUPTED and lost["steps"] >= 5, (lost, seen["driver_log"])
    assert "NodeDiedError" in lost["error"] and "Every record that reached the store is kept" in lost["error"]
    assert lost["survivor"] == RunStatus.CANCELLED  # the other node's run went on until cancelled


@cluster_test
def test_runs_page_lists_ray_runs_with_their_node(cluster_run, monkeypatch):
    home, seen = cluster_run
    monkeypatch.setenv("BNVIZ_HOME", str(home))
    monkeypatch.delenv("BNVIZ_RAY_ADDRESS", raising=False)  # the page reads the store alone
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=APP_TIMEOUT_S).run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, at.exception
    captions = as_shown(" ".join(c.value for c in at.caption))
    for node in set(seen["sweep"]["nodes"]):
        assert f"(Ray node {node[:8]})" in captions
    assert "Ray worker training it" in captions  # the interrupted run says why


def test_queued_ray_runs_say_why_they_wait_when_the_cluster_is_gone(tmp_path):
    if importlib.util.find_spec("ray") is None:
        skip_missing_tool("Ray is not installed (pip install -r requirements-ray.txt)")
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn", input_size=20, epochs=1))
    manager = JobManager(store, ray_address="127.0.0.1:1")  # nothing listens there
    manager.pump()
    (driver,) = [e._proc for e in manager.executors if getattr(e, "_proc", None)]
    driver.wait(timeout=60)
    manager.pump()  # within the retry delay: no second driver yet
    (job,) = store.list_jobs(run_id=run_id)
    assert driver.returncode == 1 and manager.active_workers() == 0
    assert job.status == JobStatus.QUEUED and store.get_run(run_id).status == RunStatus.QUEUED
    assert job.progress.startswith("waiting for the Ray cluster: ") and "refused" in job.progress
    assert "127.0.0.1:1" not in job.progress  # the Runs page shows it to everyone


def test_with_ray_only_train_jobs_wait_for_the_cluster(tmp_path):
    """Ray takes train jobs; recalibrate and inspect read the store's model files, so local workers take them."""
    store = Store(tmp_path)
    run_id = store.create_run(preset_config("bn", input_size=20, epochs=1))
    inspect = store.enqueue_job("inspect", {"model": "m.keras"})
    local = JobManager(store, ray_address="127.0.0.1:1").executors[1]
    assert local.kinds == ("recalibrate", "inspect")
    claimed = store.claim_job(kinds=local.kinds)
    assert claimed.id == inspect and store.get_run(run_id).status == RunStatus.QUEUED  # the older train job stays queued
    assert store.claim_job(kinds=local.kinds) is None


def test_the_proxy_runs_every_store_context_manager_on_its_node():
    """A Store method that yields (a context manager) cannot be forwarded to the writer: Ray cannot
    pickle a generator, and every run on the cluster would fail. The proxy must define each itself."""
    from bnviz.rayexec import StoreProxy

    public = {name: method for name, method in vars(Store).items() if not name.startswith("_")}
    yielding = [name for name, method in public.items() if inspect.isgeneratorfunction(getattr(method, "__wrapped__", method))]
    assert "saving" in yielding
    assert [name for name in yielding if name not in vars(StoreProxy)] == []


def test_a_data_folder_travels_zipped_up_to_the_cap(tmp_path):
    if importlib.util.find_spec("ray") is None:
        skip_missing_tool("Ray is not installed (pip install -r requirements-ray.txt)")
    from bnviz.rayexec import DataTooLarge, pack_folder

    files = {"cats/a.png": b"x" * 3000, "dogs/b.png": b"y" * 3000}
    for name, content in files.items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(content)
    with zipfile.ZipFile(io.BytesIO(pack_folder(str(tmp_path / "data")))) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == files
    with pytest.raises(DataTooLarge, match=r"holds 0.0 MB; Ray runs carry at most 0.005 MB .*BNVIZ_RAY_DATA_MB.*unset BNVIZ_RAY_ADDRESS"):
        pack_folder(str(tmp_path / "data"), cap_mb=0.005)


def test_a_symlink_out_of_the_data_folder_is_refused_not_packed(tmp_path):
    if importlib.util.find_spec("ray") is None:
        skip_missing_tool("Ray is not installed (pip install -r requirements-ray.txt)")
    from bnviz.rayexec import DataRefused, pack_folder

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the cluster")
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "cats" / "a.png").write_bytes(b"x" * 100)
    (tmp_path / "data" / "cats" / "inside.png").symlink_to(tmp_path / "data" / "cats" / "a.png")  # stays inside: fine
    with zipfile.ZipFile(io.BytesIO(pack_folder(str(tmp_path / "data")))) as zf:
        assert sorted(zf.namelist()) == ["cats/a.png", "cats/inside.png"]
    (tmp_path / "data" / "cats" / "b.png").symlink_to(secret)
    with pytest.raises(DataRefused, match=rf"has 1 link leading outside it \(cats/b.png -> {secret}\); .*copy those files in or remove the links"):
        pack_folder(str(tmp_path / "data"))


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:6379", True),
        ("127.8.0.1:6379", True),
        ("localhost:6379", True),
        ("[::1]:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("10.0.0.5:6379", False),
        ("ray://head.example.org:10001", False),
        ("auto", False),
        ("[::]:6379", False),
        ("0.0.0.0:6379", False),
    ],
)
def test_only_loopback_counts_as_this_machine(address, loopback):
    assert is_loopback(address) is loopback


def test_a_cluster_beyond_loopback_without_token_auth_is_refused(monkeypatch):
    for address in ("10.0.0.5:6379", "auto"):
        for mode in ({}, {"RAY_AUTH_MODE": "disabled"}):
            with pytest.raises(ConfigError) as refused:
                check_ray_auth(address, mode)
            assert str(refused.value).startswith("The Ray cluster in BNVIZ_RAY_ADDRESS or --ray is not on 127.0.0.1 and RAY_AUTH_MODE is ")
            assert "start every node and bnviz with RAY_AUTH_MODE=token" in str(refused.value) and address not in str(refused.value)
        check_ray_auth(address, {"RAY_AUTH_MODE": "token"})
    check_ray_auth("127.0.0.1:6379", {})  # the test cluster's case: loopback needs no token here (the cluster may still ask for one)
    monkeypatch.setenv("BNVIZ_RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE is unset here"):
        ray_address()  # the one gate of the dashboard and the CLI
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert ray_address() == "10.0.0.5:6379"


def test_ray_without_token_authentication_is_refused(monkeypatch):
    if importlib.util.find_spec("ray") is None:
        skip_missing_tool("Ray is not installed (pip install -r requirements-ray.txt)")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.51.1" if name == "ray" else "0")
    with pytest.raises(ConfigError, match=r"^Ray 2.51.1 has no token authentication \(it needs 2.52 or later\)"):
        ray_address("127.0.0.1:6379")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.52.0")
    assert ray_address("127.0.0.1:6379") == "127.0.0.1:6379"


def test_cli_refuses_a_remote_cluster_without_token_auth_exits_2(tmp_path, monkeypatch, capsys):
    from bnviz.cli import main

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(SystemExit) as exit_code:
        main(["train", "--ray", "10.0.0.5:6379", "--home", str(tmp_path)])
    assert exit_code.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bnviz train: error: The Ray cluster in BNVIZ_RAY_ADDRESS or --ray is not on 127.0.0.1")


def test_cli_with_no_cluster_at_the_address_exits_2_in_one_line_and_queues_nothing(tmp_path, capsys):
    from bnviz.cli import main

    with pytest.raises(SystemExit) as exit_code:
        main(["train", "--ray", f"127.0.0.1:{free_port()}", "--home", str(tmp_path)])
    assert exit_code.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bnviz train: error: No Ray cluster answers at the address given (Connection refused)"), line
    assert "127.0.0.1" not in line  # the waiting text reaches every viewer of the Runs page
    assert Store(tmp_path).list_runs() == []


def test_sidebar_says_a_ray_cluster_is_used_without_its_address(monkeypatch, tmp_path):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    monkeypatch.setenv("BNVIZ_RAY_ADDRESS", "127.0.0.1:1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=APP_TIMEOUT_S).run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.sidebar.caption]
    assert "Runs train on: a Ray cluster (BNVIZ_RAY_ADDRESS), idle · 0 running · 0 queued" in captions, captions
    assert not any("127.0.0.1:1" in c for c in captions)


FIND_SPEC = importlib.util.find_spec


@pytest.fixture
def no_ray(monkeypatch):
    """An installation without Ray, as importlib sees it."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "ray" else FIND_SPEC(name, *args))


def test_cli_ray_without_ray_installed_exits_2_with_one_line(tmp_path, no_ray, capsys):
    from bnviz.cli import main

    with pytest.raises(SystemExit) as exit_code:
        main(["train", "--ray", "auto", "--home", str(tmp_path)])
    assert exit_code.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "bnviz train: error: The Ray executor was asked for (BNVIZ_RAY_ADDRESS or --ray = 'auto') "
        "but Ray is not installed: pip install -r requirements-ray.txt, or unset "
        "BNVIZ_RAY_ADDRESS to train in local worker processes."
    ]


def test_ray_address_without_ray_installed_says_how(monkeypatch, no_ray):
    monkeypatch.setenv("BNVIZ_RAY_ADDRESS", "auto")
    with pytest.raises(ConfigError, match=r"Ray is not installed: pip install -r requirements-ray.txt"):
        ray_address()
    monkeypatch.setenv("BNVIZ_RAY_ADDRESS", "")
    assert ray_address() is None  # the embedded default needs no Ray


def test_dashboard_gives_one_clear_message_without_ray(monkeypatch, tmp_path, no_ray):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    monkeypatch.setenv("BNVIZ_RAY_ADDRESS", "auto")
    with pytest.raises(ConfigError) as expected:
        ray_address()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=APP_TIMEOUT_S).run()
    assert not at.exception, at.exception
    assert [as_shown(e.value) for e in at.error] == [str(expected.value)]
