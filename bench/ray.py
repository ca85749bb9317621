"""`python -m bench.ray`: a sweep of N runs trained by one local worker, then by a 2-node Ray
cluster on this machine (`ray.cluster_utils.Cluster`, 1 CPU per node, on loopback: the command
re-runs itself in a network namespace of its own), in one process, on the same configs.

It reports the wall time of each and their ratio; the per-run overhead Ray adds (scheduling and
worker start, from the store's timestamps: claimed → finished minus the run's own training
time, against the same for the local worker); the record traffic (a proxy call's round trip and
one probe record through the proxy, timed in a task on the second node, against the store
directly); and the ratio projected per added node from those overheads. Not part of
`python -m bench` (nor its --quick mode the tests run): it needs Ray and minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.docs import fenced, write_generated
from bench.util import ROOT, load_average, median

NETNS_ENV = "BNVIZ_BENCH_NETNS"
NODE = {"num_cpus": 1, "object_store_memory": 150 * 2**20}


def sweep(store, address: str | None, configs: list) -> dict:
    """Queue `configs` on a JobManager (local worker, or Ray at `address`) and time them to the end."""
    from bnviz.jobs import JobManager

    manager = JobManager(store, max_workers=1, ray_address=address)
    started = time.time()
    ids = [manager.submit(c) for c in configs]
    assert manager.wait_idle(timeout=1800), "the sweep did not finish"
    runs = [store.get_run(i) for i in ids]
    assert all(r.status == "done" for r in runs), [(r.status, r.error) for r in runs]
    jobs = {j.run_id: j for j in store.list_jobs(kinds=["train"])}
    train = [r.info["seconds"] for r in runs]
    overhead = [r.finished - jobs[r.id].started - r.info["seconds"] for r in runs]  # claimed → finished, beyond training itself
    return {
        "wall_s": max(r.finished for r in runs) - started,
        "startup_s": min(jobs[i].started for i in ids) - started,
        "train_s": median(train),
        "overhead_s": median(overhead),
        "overhead_first_s": overhead[0],
        "nodes": len({(r.info.get("node") or {}).get("node_id", r.host) for r in runs}),
        "ids": ids,
    }


def probe_record(store, run_id: str):
    """One real probe record of a finished run, as the probe hands it to the store."""
    from bnviz.records import ProbeLayer, ProbeRecord

    data = store.load_run(run_id)
    row = data.probes.iloc[-1]
    layers = tuple(ProbeLayer(name, **{f: getattr(t, f)[-1] for f in ProbeLayer.__dataclass_fields__ if f != "layer"}) for name, t in data.layers.items())
    return ProbeRecord(
        int(row.step), int(row.epoch), float(row.acc_train_mode), float(row.acc_inference), float(row.loss_train_mode), float(row.loss_inference), layers
    )


def traffic(home: str, record, calls: int = 40) -> dict:
    """Milliseconds per store call: direct here, and through a StoreProxy in a task on another node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from bnviz.rayexec import RUNTIME_ENV, StoreProxy, StoreWriter
    from bnviz.store import Store

    run_id = Store(home).list_runs()[0].id

    def timings(store) -> dict:
        out = {}
        for name, call in (
            ("cancel_requested", lambda: store.cancel_requested(run_id)),
            ("add_records(probe record)", lambda: store.add_records(run_id, (), [record])),
            ("add_records(20 steps)", lambda: store.add_records(run_id, [(s, 1, 0.5, 0.5) for s in range(20)])),
        ):
            times = []
            for _ in range(calls):
                began = time.perf_counter()
                call()
                times.append(time.perf_counter() - began)
            out[name] = 1000 * median(times)
        return out

    ray.init(address=os.environ["BNVIZ_BENCH_RAY"], runtime_env=RUNTIME_ENV, logging_level="WARNING", log_to_driver=False)
    here = ray.get_runtime_context().get_node_id()
    other = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here)
    writer = ray.remote(num_cpus=0)(StoreWriter).options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(home, os.getpid())
    remote = ray.remote(num_cpus=1)(lambda: timings(StoreProxy(writer, {})))
    proxied = ray.get(remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False)).remote())
    ray.shutdown()
    return {
        "direct_ms": timings(Store(home)),
        "proxy_ms": proxied,
        "record_kb": sum(a.nbytes for lay in record.layers for a in vars(lay).values() if hasattr(a, "nbytes")) / 1024,
    }


def calls_per_run(store, run_id: str) -> dict:
    """How many store writes and polls a run makes through the proxy (from its stored rows and the
    Recorder's intervals)."""
    from bnviz.tf.train import CANCEL_POLL_SECONDS, COMMIT_SECONDS

    run = store.get_run(run_id)
    probes = len(store.load_run(run_id).probes)
    seconds = run.info["seconds"]
    return {"probe_records": probes, "commits": math.ceil(seconds / COMMIT_SECONDS), "polls": math.ceil(seconds / CANCEL_POLL_SECONDS)}


def measure(args: argparse.Namespace) -> dict:
    from ray.cluster_utils import Cluster

    from bnviz.presets import preset_config
    from bnviz.store import Store

    configs = [
        preset_config("bn", input_size=args.input_size, epochs=args.epochs).with_momentum(m).replace(name=f"bench m={m:g}", seed=i)
        for i, m in enumerate([0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999][: args.runs])
    ]
    tmp = Path(tempfile.mkdtemp(prefix="bnviz-bench-ray-"))
    try:
        result = {"runs": len(configs), "input_size": args.input_size, "epochs": args.epochs, "cpus": os.cpu_count(), "load_before": load_average()}
        result["local"] = sweep(Store(tmp / "local"), None, configs)
        began = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args=NODE)
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        result["cluster_start_s"] = time.perf_counter() - began
        os.environ["BNVIZ_BENCH_RAY"] = cluster.address
        try:
            ray_store = Store(tmp / "ray")
            result["ray"] = sweep(ray_store, cluster.address, configs)
            record = probe_record(ray_store, result["ray"]["ids"][0])
            result["traffic"] = traffic(str(tmp / "ray"), record)
            result["calls_per_run"] = calls_per_run(ray_store, result["ray"]["ids"][0])
        finally:
            cluster.shutdown()
        result["load_after"] = load_average()
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def projection(r: dict) -> dict:
    """Wall-time ratio (local 1 worker / Ray N nodes) for N nodes of this machine's speed: each
    side pays its measured start once (until the first job is claimed: a worker, or the Ray driver
    joining the cluster; on Ray also a node's first worker and its TensorFlow import, in parallel on
    every node), and each run its measured overhead (scheduling, plus record traffic on Ray)."""
    t, c, local, ray = r["traffic"], r["calls_per_run"], r["local"], r["ray"]
    calls = {"cancel_requested": c["polls"], "add_records(probe record)": c["probe_records"], "add_records(20 steps)": c["commits"]}
    record_s = sum(n * (t["proxy_ms"][k] - t["direct_ms"][k]) for k, n in calls.items()) / 1000
    per_run_local, per_run_ray = local["train_s"] + local["overhead_s"], local["train_s"] + ray["overhead_s"] + record_s
    local_wall = local["startup_s"] + r["runs"] * per_run_local
    ray_start = ray["startup_s"] + ray["overhead_first_s"] - ray["overhead_s"]
    ray_wall = {n: ray_start + math.ceil(r["runs"] / n) * per_run_ray for n in (1, 2, 4, 8)}
    return {
        "record_traffic_s": record_s,
        "scheduling_s": ray["overhead_s"] - local["overhead_s"],
        "ratio": {n: local_wall / wall for n, wall in ray_wall.items()},
    }


def render(r: dict) -> str:
    p = r["projection"]
    lines = [
        f"Sweep of {r['runs']} runs (bn preset, {r['input_size']} px, {r['epochs']} epochs) on {r['cpus']} cores, load {r['load_before']} → {r['load_after']}",
        f"  local, 1 worker:      {r['local']['wall_s']:.1f} s wall (median run trains {r['local']['train_s']:.1f} s, "
        f"overhead {r['local']['overhead_s']:.2f} s/run; {r['local']['startup_s']:.1f} s until the first run started)",
        f"  Ray, 2 nodes × 1 CPU: {r['ray']['wall_s']:.1f} s wall on {r['ray']['nodes']} nodes (median run trains {r['ray']['train_s']:.1f} s, "
        f"overhead {r['ray']['overhead_s']:.2f} s/run, first {r['ray']['overhead_first_s']:.1f} s; {r['ray']['startup_s']:.1f} s until the first "
        f"run was claimed); cluster start {r['cluster_start_s']:.1f} s, not counted",
        f"  measured ratio local / Ray: {r['local']['wall_s'] / r['ray']['wall_s']:.2f}×",
        "  store calls, ms (direct → through the proxy from the other node): "
        + ", ".join(f"{k} {r['traffic']['direct_ms'][k]:.2f} → {r['traffic']['proxy_ms'][k]:.2f}" for k in r["traffic"]["direct_ms"]),
        f"  one probe record: {r['traffic']['record_kb']:.0f} KiB; per run {r['calls_per_run']}",
        f"  per-run overhead on Ray: scheduling + worker {p['scheduling_s']:.2f} s, record traffic {p['record_traffic_s']:.2f} s",
        "  projected ratio with N nodes like this machine's: " + ", ".join(f"{n}: {v:.2f}×" for n, v in p["ratio"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray", description=__doc__)
    parser.add_argument("--runs", type=int, default=8, choices=range(2, 9), metavar="2..8")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray.json")
    parser.add_argument("--report", type=Path, help="print the report of an earlier results file (its projection recomputed) and exit")
    parser.add_argument("--docs", action="store_true", help="also write the report into docs/scaling-out.md (between its markers)")
    args = parser.parse_args(argv)
    if args.report:
        result = json.loads(args.report.read_text())
        text = render({**result, "projection": projection(result)})
        print(text)
        return write_docs(text) if args.docs else 0
    if os.environ.get(NETNS_ENV) != "1":  # Ray must bind loopback only: run again in a network namespace of our own
        script = 'ip link set lo up && exec "$@"'
        command = ["unshare", "-n" if os.geteuid() == 0 else "-rn", "sh", "-c", script, "sh", sys.executable, "-m", "bench.ray", *sys.argv[1:]]
        os.execvpe("unshare", command, {**os.environ, NETNS_ENV: "1", "PYTHONPATH": str(ROOT)})
    result = measure(args)
    result["projection"] = projection(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(render(result))
    return write_docs(render(result)) if args.docs else 0


def write_docs(report: str) -> int:
    print(f"wrote {write_generated('scaling-out.md', 'bench.ray', fenced(report))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
