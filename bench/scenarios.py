"""`python -m bench.scenarios [--seeds 0 1 2] [--only CAUSE ...]`: train every scenario of the bank (tests/scenarios.py)
through the real path (store, `execute_run`, `diagnose`) and print the Markdown table of docs/diagnoses.md
(`--docs` writes it there): how each scenario is built, its measured test accuracy in inference
mode, after recalibration (PreciseBN on training batches) and with batch statistics on test batches,
and the verdict. Before it, a per-seed table, a row as each run ends: the numbers, the verdict, the
causes other findings blame, the claims the raw numbers did not bear out and the training time.
TensorFlow loads after `quiet_tensorflow`, so tests.scenarios is imported inside `main`."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.docs import write_generated
from bench.util import quiet_tensorflow

if TYPE_CHECKING:
    from tests.scenarios import Outcome, Scenario


def _cells(outcome: Outcome) -> str:
    """inference / recalibrated / batch statistics on the test split."""
    return " / ".join(f"{outcome.accuracy('test', mode):.2f}" for mode in ("inference", "recalibrated", "batchstats"))


def _verdict(scenario: Scenario, outcome: Outcome) -> str:
    mark = "" if outcome.verdict.cause == scenario.cause else f" ✗ expected `{scenario.cause}`"
    return f"`{outcome.verdict.cause}`: {outcome.verdict.title.removeprefix('Verdict: ')}{mark}"


def readme_table(results: list[tuple[Scenario, int, Outcome]]) -> str:
    """One row per scenario, from its first seed: what the README shows."""
    rows = ["| Scenario | How it is built | Test accuracy: inference / recalibrated / batch statistics | Verdict |", "|---|---|---|---|"]
    seen = set()
    for scenario, _, outcome in results:
        if scenario.name not in seen:
            seen.add(scenario.name)
            rows.append(f"| {scenario.name} | {scenario.how} | {_cells(outcome)} | {_verdict(scenario, outcome)} |")
    return "\n".join(rows)


SEED_HEADER = (
    "| Scenario | Seed | Test: inference / recalibrated / batch stats | Val | Train: inference / fit | Verdict | Other causes blamed "
    "| Failed claims | s |\n|---|---|---|---|---|---|---|---|---|"
)


def seed_row(scenario: Scenario, seed: int, outcome: Outcome) -> str:
    """One scenario and seed, as SEED_HEADER names the columns."""
    from tests.scenarios import failed_claims

    failed = "; ".join(failed_claims(scenario, outcome)) or "none"
    return (
        f"| {scenario.name} | {seed} | {_cells(outcome)} | {outcome.accuracy('val'):.2f} | "
        f"{outcome.accuracy('train'):.2f} / {outcome.accuracy('train', 'fit'):.2f} | {_verdict(scenario, outcome)} | "
        f"{', '.join(outcome.blamed()) or 'none'} | {failed} | {outcome.seconds:.1f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None, help="scenario causes to run (default: all)")
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/diagnoses.md (between its markers)")
    args = parser.parse_args(argv)
    quiet_tensorflow()
    from tests.scenarios import SCENARIOS, run

    chosen = [s for s in SCENARIOS if args.only is None or s.cause in args.only]
    results, start, cpu = [], time.perf_counter(), time.process_time()
    print(SEED_HEADER, flush=True)  # rows as the runs end, so a long bench shows its progress
    for seed in args.seeds:
        for scenario in chosen:
            with tempfile.TemporaryDirectory(prefix="bnviz-scenario-") as home:
                results.append((scenario, seed, run(scenario, Path(home), seed)))
            print(seed_row(*results[-1]), flush=True)
    print(
        f"\n{readme_table(results)}\n\nTotal {time.perf_counter() - start:.0f} s wall, "
        f"{time.process_time() - cpu:.0f} s CPU (all threads) for {len(results)} runs."
    )
    if args.docs:
        print(f"wrote {write_generated('diagnoses.md', 'bench.scenarios', readme_table(results))}")


if __name__ == "__main__":
    main()
