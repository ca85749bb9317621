"""`python -m bench.lag_chapter [--seeds 0 1 2 3]`: the Story's lag chapter (bnviz.story.LAG_RECIPE) over
several seeds, through the real path (`execute_run`, `diagnose`), printed as the Markdown table docs/story.md
shows (`--docs` writes it there): per seed and momentum, mᵗ, the trail (drift per step × m/(1 − m)), how far the moving mean ended
from the population, test accuracy in inference mode, with batch statistics and after PreciseBN, and the
verdict. The chapter holds when every m = 0.99 run is named lag and every m = 0.8 twin healthy."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.docs import write_generated
from bench.util import quiet_tensorflow

HEADER = (
    "| seed | m | mᵗ | trail (SDs) | moving mean off (SDs) | test: inference / batch stats / PreciseBN | fit | verdict | s |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def run_pair(seed: int, home: Path) -> list[tuple[dict, str, float]]:
    """The chapter's two runs at `seed`: each run's mechanism row, its verdict's cause and its seconds."""
    from bnviz.diagnose import diagnose
    from bnviz.store import Store
    from bnviz.story import lag_configs, mechanism_row
    from bnviz.tf.train import execute_run

    store, out = Store(home), []
    for config in lag_configs(seed=seed):
        result = execute_run(store, store.create_run(config))
        data = store.load_run(result.run_id)
        row = mechanism_row(data) | {"batch stats": data.evaluations["final"].accuracy_of("test_batchstats"), "fit": data.evaluations["final"].fit_accuracy}
        out.append((row, diagnose(data)[0].cause, result.seconds))
    return out


def table_row(seed: int, row: dict, cause: str, seconds: float) -> str:
    return (
        f"| {seed} | {row['momentum m']:g} | {row['initial values left, mᵗ']:.2g} | {row['trail: drift × m/(1 − m) (SDs)']:.2f} | "
        f"{row['moving mean off (SDs)']:.2f} | {row['test (inference)']:.2f} / {row['batch stats']:.2f} / {row['test (PreciseBN)']:.2f} | "
        f"{row['fit']:.2f} | `{cause}` | {seconds:.0f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/story.md (between its markers)")
    args = parser.parse_args(argv)
    quiet_tensorflow()
    started, held, rows = time.perf_counter(), 0, [HEADER]
    print(HEADER, flush=True)
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="bnviz-lag-") as home:
            pair = run_pair(seed, Path(home))
        for row, cause, seconds in pair:
            rows.append(table_row(seed, row, cause, seconds))
            print(rows[-1], flush=True)
        held += [cause for _, cause, _ in pair] == ["lag", "healthy"]
    print(
        f"\nThe pattern (m = 0.99: lag, m = 0.8: healthy) held in {held} of {len(args.seeds)} seeds; "
        f"{time.perf_counter() - started:.0f} s for {2 * len(args.seeds)} runs."
    )
    if args.docs:
        table = "\n".join(rows)
        print(f"wrote {write_generated('story.md', 'bench.lag_chapter', table)}")


if __name__ == "__main__":
    main()
