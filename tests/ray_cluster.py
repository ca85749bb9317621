"""The Ray scenarios of tests/test_ray.py, on a real two-node cluster (`ray.cluster_utils.Cluster`,
1 CPU and a 150 MB object store per node). Run as `python -m tests.ray_cluster HOME OUT.json`
inside a network namespace of its own (`unshare -rn`, loopback up), so that Ray binds 127.0.0.1
and nothing else; it checks that before any job, then writes what it saw to OUT.json. The cluster
and every bnviz process run with Ray token authentication (RAY_AUTH_MODE=token, the token in a
file beside HOME named by RAY_AUTH_TOKEN_PATH), as docs/scaling-out.md tells users to.

Scenarios, all on one cluster, through the dashboard's own JobManager (a Ray driver process)
unless said: a sweep of 4 tiny runs (live progress sampled while they train); `bnviz train
--ray` on a data folder; two long runs at once, one cancelled and one whose Ray worker process
is killed; two long runs again, and the second node goes away; and `bnviz train --ray` without
the token, which must be refused.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from bnviz.jobs import JobManager
from bnviz.presets import preset_config
from bnviz.records import ACTIVE, RunStatus
from bnviz.store import Store

NODE = {"num_cpus": 1, "object_store_memory": 150 * 2**20}
TINY = preset_config("bn", input_size=20, epochs=2)
TIMEOUT = 200.0


def use_token(folder: Path) -> None:
    """Token authentication for this process and all it starts (the nodes, the drivers, the CLI)."""
    token = folder / "ray-auth-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})


def start_cluster():
    """Two nodes on loopback; returns the cluster and the addresses Ray reports for its nodes."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    addresses = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
    ray.shutdown()
    return cluster, addresses


def wait_until(manager: JobManager, done, seconds: float = TIMEOUT, each=None) -> bool:
    """Pump the manager until `done()` is true (calling `each()` every turn); False on timeout."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        manager.pump()
        if each:
            each()
        if done():
            return True
        time.sleep(0.1)
    return False


def sweep(store: Store, manager: JobManager) -> dict:
    """Four tiny runs; while they train, sample the progress of any running one with steps stored."""
    ids = [manager.submit(TINY.replace(name=f"ray sweep {i}", seed=i)) for i in range(4)]
    live: list[dict] = []

    def sample() -> None:
        for run_id in ids:
            p = store.progress(run_id)
            seen = {"run": run_id, "step": p.step, "total": p.total_steps}
            if p.status == RunStatus.RUNNING and p.step and seen not in live:
                live.append(seen)

    finished = wait_until(manager, lambda: not store.list_jobs(status=list(ACTIVE)), each=sample)
    runs = [store.get_run(i) for i in ids]
    return {
        "finished": finished,
        "ids": ids,
        "status": [str(r.status) for r in runs],
        "errors": [r.error for r in runs],
        "nodes": [r.info.get("node", {}).get("node_id") for r in runs],
        "live": live[-6:],
        "steps": [len(store.load_run(i).steps) for i in ids],
        "total": [r.total_steps for r in runs],
        "models": [bool(r.model_path and Path(r.model_path).is_file()) for r in runs],
        "evaluations": [sorted(store.evaluations(i)) for i in ids],
    }


def image_folder(root: Path, per_class: int = 16) -> Path:
    """A tiny data folder (two classes of flat-colour PNGs plus noise) that must travel to the node."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 60), ("light", 190)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(level + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def cli_train(home: str, address: str) -> dict:
    """`bnviz train --ray` on a data folder: this process drives the cluster, the folder travels zipped."""
    folder = image_folder(Path(home).parent / "cli-data")
    command = [
        sys.executable,
        "-m",
        "bnviz",
        "train",
        "--ray",
        address,
        "--home",
        home,
        "--json",
        "--dataset",
        str(folder),
        "--input-size",
        "20",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--name",
        "ray cli",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    payload = json.loads(proc.stdout) if proc.returncode == 0 else {"stderr": proc.stderr[-3000:]}
    run = Store(home).get_run(payload["run_id"]) if "run_id" in payload else None
    return {
        "returncode": proc.returncode,
        "payload": payload,
        "node": run.info.get("node") if run else None,
        "dataset": run.config.dataset if run else None,
        "folder": str(folder),
        "data": run.info.get("data") if run else None,
    }


def no_token(home: str, address: str) -> dict:
    """`bnviz train --ray` with neither the token nor the mode (and a HOME without ~/.ray): refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(Path(home).parent)}
    command = [sys.executable, "-m", "bnviz", "train", "--ray", address, "--home", home, "--input-size", "20", "--epochs", "1", "--name", "no token"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    return {"returncode": proc.returncode, "stderr": proc.stderr[-3000:], "runs": [r.name for r in Store(home).list_runs()]}


def faults(store: Store, manager: JobManager) -> dict:
    """Two long runs at once: cancel one mid-run, kill the other's Ray worker process mid-run."""
    long = TINY.replace(epochs=60)
    cancel, kill = (manager.submit(long.replace(name=name)) for name in ("ray cancel", "ray kill"))
    both_stepping = wait_until(manager, lambda: all(store.progress(i).step >= 20 and store.get_run(i).info.get("node") for i in (cancel, kill)))
    manager.cancel(cancel)
    pid = store.get_run(kill).info["node"]["pid"]
    steps_at_kill = store.progress(kill).step
    os.kill(pid, signal.SIGKILL)
    ended = wait_until(manager, lambda: not store.list_jobs(status=list(ACTIVE)), seconds=60)
    out = {"stepping": both_stepping, "ended": ended, "steps_at_kill": steps_at_kill}
    for name, run_id in (("cancel", cancel), ("kill", kill)):
        run = store.get_run(run_id)
        out[name] = {
            "status": str(run.status),
            "error": run.error,
            "steps": len(store.load_run(run_id).steps),
            "total": run.total_steps,
            "jobs": [(str(j.status), j.error) for j in store.list_jobs(run_id=run_id)],
        }
    return out


def lost_node(store: Store, manager: JobManager, cluster) -> dict:
    """Two long runs at once, one per node; the second node goes away mid-run."""
    ids = [manager.submit(TINY.replace(epochs=60, name=f"ray lost node {i}")) for i in range(2)]
    stepping = wait_until(manager, lambda: all(store.progress(i).step >= 5 and store.get_run(i).info.get("node") for i in ids))
    (worker_node,) = cluster.worker_nodes
    lost = next(i for i in ids if store.get_run(i).info["node"]["node_id"] != cluster.head_node.node_id)
    survivor = next(i for i in ids if i != lost)
    cluster.remove_node(worker_node, allow_graceful=False)
    gone = wait_until(manager, lambda: not store.get_run(lost).status.active, seconds=90)
    manager.cancel(survivor)
    wait_until(manager, lambda: not store.list_jobs(status=list(ACTIVE)), seconds=60)
    run = store.get_run(lost)
    return {
        "stepping": stepping,
        "ended": gone,
        "status": str(run.status),
        "error": run.error,
        "steps": len(store.load_run(lost).steps),
        "survivor": str(store.get_run(survivor).status),
    }


def main(home: str, out: str) -> None:
    started = time.monotonic()
    use_token(Path(home).parent)
    cluster, addresses = start_cluster()
    result: dict = {"addresses": addresses, "cluster_seconds": round(time.monotonic() - started, 1)}
    try:
        if set(addresses) == {"127.0.0.1"} and len(addresses) == 2:
            store = Store(home)
            manager = JobManager(store, ray_address=cluster.address)
            for name, scenario in (
                ("sweep", lambda: sweep(store, manager)),
                ("cli", lambda: cli_train(home, cluster.address)),
                ("no_token", lambda: no_token(home, cluster.address)),
                ("faults", lambda: faults(store, manager)),
                ("lost_node", lambda: lost_node(store, manager, cluster)),
            ):
                began = time.monotonic()
                result[name] = scenario()
                result[f"{name}_seconds"] = round(time.monotonic() - began, 1)
    finally:
        logs = sorted((Path(home) / "logs").glob("ray-driver-*.log"))
        result["driver_log"] = "".join(p.read_text()[-3000:] for p in logs)
        result["seconds"] = round(time.monotonic() - started, 1)
        Path(out).write_text(json.dumps(result, indent=1))
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
