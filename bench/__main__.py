"""`python -m bench`: run the benchmark sections (see bench/__init__.py), print the tables and write
bench/results/latest.json. Each section runs in a fresh Python process."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.docs import write_generated
from bench.util import ROOT, load_average

SECTIONS = ("story", "ui", "store", "command", "overhead", "long", "scale", "threads")  # the short ones first
DEFAULT_SECTIONS = SECTIONS[:-1]  # threads (TensorFlow's thread settings, ~3 min) only when named
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.json"


def run_section(name: str, args: argparse.Namespace) -> dict:
    """Runs inside the section's own process."""
    if name in ("overhead", "threads"):
        from bench import overhead

        return overhead.run(args.quick, args.reps, args.sweep_reps) if name == "overhead" else overhead.threads_section(args.quick, args.sweep_reps)
    if name in ("command", "long", "scale"):
        from bench import endtoend

        return endtoend.run(name, args.quick, {"command": args.sweep_reps, "long": args.sweep_reps - 1, "scale": 1}[name])
    if name == "story":
        from bench import story

        return story.run(args.quick, args.story_reps)
    if name == "ui":
        from bench import ui

        return ui.run(args.quick, args.reps)
    from bench import storage

    return storage.run(args.quick, args.reps)


def spawn(name: str, args: argparse.Namespace) -> dict:
    """Run section `name` in a fresh process; its result plus the process wall time and the load."""
    with tempfile.TemporaryDirectory(prefix="bnviz-bench-") as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [
            sys.executable,
            "-m",
            "bench",
            "--section",
            name,
            "--section-out",
            str(out),
            "--reps",
            str(args.reps),
            "--sweep-reps",
            str(args.sweep_reps),
            "--story-reps",
            str(args.story_reps),
        ] + (["--quick"] if args.quick else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        before = load_average()
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0 or not out.exists():
            return {"error": (done.stderr or done.stdout)[-4000:], "process_s": wall, "load_before": before, "load_after": load_average()}
        result = json.loads(out.read_text())
    return {**result, "process_s": wall, "load_before": before, "load_after": load_average()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one repetition (numbers are not measurements)")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions of the main comparisons (default 5)")
    parser.add_argument(
        "--sweep-reps",
        type=int,
        default=3,
        help="alternating repetitions of each sweep point and of the whole command (default 3; the long run gets one less, 224² one)",
    )
    parser.add_argument("--story-reps", type=int, default=1, help="runs of the whole story; the median is reported (default 1)")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but threads)")
    parser.add_argument("--jobs", type=int, default=0, help="sections run at once (default 1; 2 with --quick, whose numbers are not measurements anyway)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file (default bench/results/latest.json)")
    parser.add_argument("--docs", action="store_true", help="also write the tables into docs/performance.md (between its markers)")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--section-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.sweep_reps, args.story_reps = 1, 1, 1
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or min(args.reps, args.sweep_reps, args.story_reps) < 1:
        parser.error(f"sections must be among {', '.join(SECTIONS)} and repetitions >= 1. Received: --sections={args.sections}")
    args.chosen = chosen
    args.jobs = args.jobs or (2 if args.quick else 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.section:
        args.section_out.write_text(json.dumps(run_section(args.section, args), default=float))
        return 0
    started = time.perf_counter()
    results = {
        "meta": {
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "quick": args.quick,
            "reps": args.reps,
            "sweep_reps": args.sweep_reps,
            "story_reps": args.story_reps,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_start": load_average(),
        },
        "sections": {},
    }
    print(f"[bench] sections: {', '.join(args.chosen)} ({args.jobs} at a time)", file=sys.stderr, flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = dict(zip(args.chosen, pool.map(lambda name: spawn(name, args), args.chosen), strict=True))
    results["sections"] = {name: done[name] for name in args.chosen}
    results["meta"]["seconds"] = time.perf_counter() - started
    results["meta"]["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))
    print(report.render(results))
    print(f"\nJSON: {args.out}")
    if args.docs:
        print(f"wrote {write_generated('performance.md', 'bench', report.render(results))}")
    failed = [n for n, s in results["sections"].items() if "error" in s]
    for name in failed:
        print(f"\n[bench] section {name} failed:\n{results['sections'][name]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
