"""`python -m bench.pages_at_scale`: the Diagnose, Compare and Export pages on a run with 52 BN layers
(a real MobileNetV2 recorded with `bnviz.Probe`, tests/many_layers.py): the first render of each page
in a new AppTest session and the median of 5 reruns (`at.run()` again, as a widget change or a poll
reruns it). `--profile PAGE` prints where one rerun of that page spends its time (cProfile); `--home
DIR` keeps the recorded run there and reuses it next time."""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

from bench.util import ROOT, median, timed
from bnviz.records import RunData

RERUNS = 5
PAGES = ("diagnose", "compare", "export")


def open_page(page: str, run_id: str) -> tuple[object, float]:
    """A new AppTest session on `page` opened on the run; the seconds the page's first render took."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update({"diagnose": {"run": run_id}, "compare": {"runs": run_id}}.get(page, {}))
    at.run()
    start = time.perf_counter()
    at.switch_page(f"pages/{page}.py").run()
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].message}")
    return at, time.perf_counter() - start


def profiled(at: object) -> None:
    """Print the cProfile of one rerun of `at`. The script runs on Streamlit's script thread, where a
    profiler started here sees nothing: wrap the function that thread executes the page with."""
    from streamlit.runtime.scriptrunner import script_runner

    profile, plain = cProfile.Profile(), script_runner.exec_func_with_error_handling
    script_runner.exec_func_with_error_handling = lambda *a, **k: profile.runcall(plain, *a, **k)
    try:
        at.run()
    finally:
        script_runner.exec_func_with_error_handling = plain
    pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


def recorded(home: Path) -> RunData:
    """The run in `home`, recorded there first if it holds none."""
    from bnviz.store import Store
    from tests.many_layers import many_layer_run

    runs = Store(home).list_runs()
    start = time.perf_counter()
    data = Store(home).load_run(runs[0].id) if runs else many_layer_run(home)
    took = f"recorded in {time.perf_counter() - start:.0f} s" if not runs else f"recorded before, in {home}"
    print(f"MobileNetV2 (α 0.35, 32 px): {len(data.layers)} BN layers, {len(data.probes)} probe records, {took}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=PAGES, help="print the cProfile of one rerun of this page")
    parser.add_argument("--home", type=Path, help="record the run into this folder, or reuse the one recorded there (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bnviz-pages-", ignore_cleanup_errors=True) as temporary:
        home = args.home or Path(temporary)
        data = recorded(home)
        os.environ["BNVIZ_HOME"] = str(home)
        print(f"{'page':<10} {'first render s':>15} {'rerun s (median of ' + str(RERUNS) + ')':>26}")
        for page in PAGES:
            at, first = open_page(page, data.run.id)
            print(f"{page:<10} {first:>15.3f} {median(timed(at.run, RERUNS)):>26.3f}")
            if page == args.profile:
                profiled(at)


if __name__ == "__main__":
    main()
