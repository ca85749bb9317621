"""`python -m bench.own_models [--seeds 0 1 2]`: the own-model bank (tests/test_own_models.py) over
several seeds, through the user's path (`bnviz.Probe` in a plain `fit`, `bnviz inspect` of a saved
model), printing the Markdown table of docs/own-models.md, "What bnviz diagnoses in your own model" (`--docs` writes it there):
per scenario the test accuracy in inference mode / after PreciseBN on training images / with the test
set's batch statistics, and the verdict per seed against the cause it was built for."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.docs import write_generated
from bench.util import quiet_tensorflow


def _scenarios(digits: dict) -> list[tuple[str, str, str, Callable]]:
    """(name, how it is built, the right cause, run(home, seed) -> (data, findings))."""
    from bnviz.store import Store
    from bnviz.tf.inspect import inspect_model
    from tests import test_own_models as bank

    def probe(**kwargs):
        return lambda home, seed: bank.probe_run(home, digits, seed=seed, **kwargs)[1:3]

    def inspect(momentum, epochs, late=None, test_scale=None):
        def run(home, seed):
            model = bank.trained_and_saved(home, digits, momentum, epochs, late, seed)
            images = bank.save_images(home / "images", *digits["train"])
            test = bank.save_images(home / "test", digits["test"][0] * test_scale, digits["test"][1]) if test_scale else None
            return bank.inspected(home, inspect_model(Store(home / "home"), model, images, test))

        return run

    def fine_tune(mode):
        return lambda home, seed: bank.fine_tune_run(home, digits, mode, seed)[2:4]

    return [
        ("Probe, all data", "m = 0.99, 3 epochs (66 steps, mᵗ = 0.52)", "stale_initial_values", probe(momentum=0.99, epochs=3)),
        ("Probe, no train_data", "the same, validation and test data only", "stale_initial_values", probe(momentum=0.99, epochs=3, splits=("val", "test"))),
        ("Probe, test_data only", "the same, test data only", "stale_initial_values", probe(momentum=0.99, epochs=3, splits=("test",))),
        ("Probe, good momentum", "m = 0.8, 3 epochs", "healthy", probe(momentum=0.8, epochs=3)),
        ("Probe, test-only shift", "m = 0.8, test images × 0.5", "test_shift", probe(momentum=0.8, epochs=3, test_scale=0.5)),
        ("Probe, no BN", "the model without its BN layers", "healthy", probe(momentum=0.99, epochs=2, bn=False)),
        (
            "Probe, fine-tuned end to end",
            "pretrained base, BN trainable, batch 4, 107 steps on bright digits 6–9",
            "overwritten_in_fine_tuning",
            fine_tune("end_to_end"),
        ),
        ("Probe, frozen base", "the same, base.trainable = False", "healthy", fine_tune("frozen")),
        (
            "Probe, base(x, training=False)",
            "the same, base trainable but called with training=False",
            "overwritten_in_fine_tuning",
            fine_tune("training_false"),
        ),
        ("inspect, short run", "saved after m = 0.99, 3 epochs, no step count", "stale_initial_values", inspect(0.99, 3)),
        ("inspect, learning-rate jump", "20 epochs, then 2 at Adam lr 0.05", "statistics_off", inspect(0.99, 20, late=0.05)),
        ("inspect, test-only shift", "m = 0.8, --test images × 0.5", "test_shift", inspect(0.8, 3, test_scale=0.5)),
    ]


def _cells(data) -> str:
    nan = float("nan")
    final, recal = data.evaluations["final"].accuracies(), data.evaluations.get("recalibrated")
    after = recal.accuracies().get("test", nan) if recal else nan
    return " / ".join("–" if value != value else f"{value:.2f}" for value in (final.get("test", nan), after, final.get("test_batchstats", nan)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/own-models.md (between its markers)")
    parser.add_argument("--only", nargs="*", default=[], help="run only the scenarios whose name contains one of these texts (not with --docs)")
    args = parser.parse_args(argv)
    if args.docs and args.only:
        parser.error("--docs writes the whole table: leave out --only")
    quiet_tensorflow()
    from tests.test_own_models import load_digits_splits

    digits, rows, right, total, started = load_digits_splits(), [], 0, 0, time.perf_counter()
    for name, how, cause, run in (row for row in _scenarios(digits) if not args.only or any(text in row[0] for text in args.only)):
        cells, verdicts = [], []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="bnviz-own-") as home:
                data, findings = run(Path(home), seed)
                cells.append(_cells(data))
                verdicts.append(findings[0].cause)
                right, total = right + (findings[0].cause == cause), total + 1
        marks = ", ".join(f"`{v}`" + ("" if v == cause else " ✗") for v in verdicts)
        rows.append(f"| {name} | {how} | {cells[0]} | {marks} |")
        print(rows[-1], flush=True)
    print(f"\n{right} of {total} verdicts name the built cause ({time.perf_counter() - started:.0f} s, seeds {' '.join(map(str, args.seeds))}).\n")
    header = "| Scenario | How it is built | Test accuracy: inference / recalibrated / batch statistics (first seed) | Verdict per seed |\n|---|---|---|---|"
    table = "\n".join([header, *rows])
    print(table)
    if args.docs:
        print(f"wrote {write_generated('own-models.md', 'bench.own_models', table)}")


if __name__ == "__main__":
    main()
