"""The benchmark runs end to end: `python -m bench --quick` writes every section with positive
numbers. Timings are never asserted (they depend on the machine and its load)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.overhead import RECORD_PIECES, SETUP_PIECE, probe_cpu_estimate

ROOT = Path(__file__).resolve().parent.parent


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


@pytest.mark.slow
@pytest.mark.timeout(600)  # 118 s on the shared 2-core machine at load 4–5 (seven sections: command, long and scale start processes)
def test_quick_bench_writes_every_section(tmp_path):
    out = tmp_path / "latest.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BNVIZ_HOME", None)
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| variant" in done.stdout and str(out) in done.stdout  # the printed tables
    sections = json.loads(out.read_text())["sections"]
    assert set(sections) == {"overhead", "story", "ui", "store", "command", "long", "scale"}
    for name, section in sections.items():
        assert "error" not in section, (name, section.get("error"))
        numbers = _numbers(section)
        assert numbers and all(math.isfinite(n) and n >= 0 for n in numbers), name

    overhead = sections["overhead"]
    for variant in ("plain", "recorder only", "probed", "probed, all at their step", "probed, all after training", "tensorboard"):
        assert overhead["main"][variant]["ms_per_step"] > 0
    probed, in_loop = overhead["main"]["probed"], overhead["main"]["probed, all at their step"]
    deferred = overhead["main"]["probed, all after training"]
    assert probed["ratio"]["median"] > 0 and probed["ratio_total"]["median"] > 0 and probed["ratio_of_fastest"] > 0
    assert probed["records"] == in_loop["records"] == in_loop["live_records"] == deferred["records"] > 0  # deferred or not, every record is stored
    assert deferred["live_records"] == 0 and probed["live_records"] >= probed["records"] - 1  # paced: all but the last step's in the loop
    assert set(overhead["population_error"]["sizes"]) and all(r["mean_err_sd"]["max"] >= 0 for r in overhead["population_error"]["sizes"].values())
    assert overhead["main"]["probed"]["ms_per_record"] is not None
    assert all(v > 0 for v in overhead["record_breakdown"]["ms"].values())
    estimate = overhead["probe_cpu_estimate"]
    assert estimate["total_ms"] > estimate["pieces_ms"][SETUP_PIECE] > 0 and estimate["plain_cpu_ms"] > 0
    for sweep in ("intervals", "probe_sizes"):
        assert all(row["ms_per_step"] > 0 for row in overhead[sweep].values())
    assert all(row["probed"]["ms_per_step"] > 0 for row in overhead["bn_layers"].values())

    story = sections["story"]
    assert story["story_s"] > 0 and story["process_s"] > 0 and len(story["runs"]) == 4
    assert all(r["phases_s"]["fit"] > 0 and r["phases_s"]["evaluate"] > 0 for r in story["runs"])
    collapse = story["collapse"]  # --quick: 16 px, 1 epoch; measured 0.26 for bn vs 0.57 with batch statistics, final 0.58
    assert collapse["bn_test_batchstats"] - collapse["bn_test"] > 0.2 and collapse["final_test"] - collapse["bn_test"] > 0.2, collapse

    ui = sections["ui"]
    assert all(v["median"] > 0 for v in ui["first_render"]["pages_s"].values())
    assert all(v["median"] > 0 for v in ui["reruns"]["while_training_s"].values())
    assert ui["server"]["rss_after_health_mb"] > 0 and ui["server"]["tensorflow_mapped"] == []

    command = sections["command"]
    assert command["wall_s"]["probed"]["median"] > 0 and command["ratio"]["median"] > 0
    long = sections["long"]["rows"]
    assert long["probed"]["records"] > 0 and long["probed"]["ratio_total"]["median"] > 0
    scale = sections["scale"]
    assert all(r["peak_rss_mb"]["probed"] > 0 and r["records"] > 0 for r in scale["presets"].values())
    assert scale["diagnose_page"]["rerun_s"] > 0

    store = sections["store"]
    assert all(r["bytes_per_record"] > 0 for rows in store["per_record"].values() for r in rows)
    assert all(r["bytes"] > 0 and r["records"] > 0 for r in store["per_run"])
    assert all(d["total_s"] > 0 for d in store["diagnose_load"].values())
    assert all(d["first_render_s"] > 0 for d in store["diagnose_page"].values())


@pytest.mark.parametrize(("records", "population_every", "kinds"), [(16, 4, (11, 4, 1)), (8, 4, (5, 2, 1)), (5, 1, (0, 4, 1)), (1, 4, (0, 0, 1))])
def test_the_probe_cpu_estimate_counts_each_kind_of_record(records, population_every, kinds):
    """Light records, records with the training-mode population (every k-th), and the last one,
    as `BNProbe` makes them: the counts behind the "summed from the pieces" figure of `python -m bench` (docs/performance.md)."""
    cpu = {SETUP_PIECE: 1000.0, "snapshot (in the training loop)": 1.0, **dict(zip(RECORD_PIECES, (10.0, 100.0, 10_000.0), strict=True))}
    estimate = probe_cpu_estimate({"cpu_ms": cpu}, records, population_every)
    light, population, last = kinds
    assert estimate["total_ms"] == 1000 + records + 10 * light + 100 * population + 10_000 * last


def test_the_real_models_table_keeps_the_cases_not_measured_again():
    from bench.real_models import HEADER, merged_rows

    documented = "\n".join(
        [
            HEADER,
            "| MobileNetV2 | 52 | 224² | 100 × 16 | old |",
            "| seed model | 3 | 224² | 50 × 32 | kept |",
            "| MobileNetV2 | 52 | 96² | 100 × 16 | kept too |",
        ]
    )
    rows = merged_rows(documented, ["| ResNet50 | 53 | 224² | 150 × 16 | new |", "| MobileNetV2 | 52 | 224² | 100 × 16 | again |"])
    assert rows == [
        "| MobileNetV2 | 52 | 224² | 100 × 16 | again |",
        "| seed model | 3 | 224² | 50 × 32 | kept |",
        "| MobileNetV2 | 52 | 96² | 100 × 16 | kept too |",
        "| ResNet50 | 53 | 224² | 150 × 16 | new |",  # beside the 50-step run, not in its place
    ]
