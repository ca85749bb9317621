"""The scenario bank (tests/scenarios.py): every regime trained for real, its raw numbers checked
against what it claims to be, and the diagnosis held to name its cause and blame no other."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bnviz.data import digits, from_folder
from bnviz.diagnose import CAUSES
from tests.scenarios import DARKEN, SCENARIOS, SIZE, Outcome, Scenario, failed_claims, run_by_name, write_folder

pytestmark = pytest.mark.slow  # the whole bank trains, one regime per test
NOT_BUILDABLE = {
    "pending": "a run without a final evaluation, not a regime",
    "dropout_before_bn": "the model template puts Dropout after the last BN layer only",
    "insufficient_evidence": "bnviz's own runs have every split; tests/test_own_models.py builds it through bnviz.Probe",
    "overwritten_in_fine_tuning": "bnviz's own runs start fresh; tests/test_own_models.py fine-tunes a pretrained model through bnviz.Probe",
    "statistics_off": "named for saved models only (no step count); tests/test_own_models.py builds it through bnviz inspect",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Scenario], Outcome]]:
    """Each scenario trained once (seed 0) for all the tests that read it, in one fresh process: the
    runs then see TensorFlow as `python -m bench.scenarios` does (default threads, no state left by
    other tests), and the lag recipe's drift, which is chaotic at lr 0.1, takes the measured course."""
    cache: dict[str, Outcome] = {}
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:

        def get(scenario: Scenario) -> Outcome:
            if scenario.name not in cache:
                cache[scenario.name] = pool.submit(run_by_name, scenario.name, tmp_path_factory.mktemp(scenario.cause), 0).result()
            return cache[scenario.name]

        yield get


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.cause)
def test_scenario_is_what_it_claims(scenario: Scenario, trained: Callable[[Scenario], Outcome]) -> None:
    outcome = trained(scenario)
    assert failed_claims(scenario, outcome) == [], f"{scenario.name}: {outcome.data.evaluations}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.cause)
def test_verdict_names_the_cause_and_blames_no_other(scenario: Scenario, trained: Callable[[Scenario], Outcome]) -> None:
    outcome = trained(scenario)
    assert outcome.verdict.key == "verdict"
    assert outcome.verdict.cause == scenario.cause, f"{outcome.verdict.title}: {outcome.verdict.detail}"
    assert outcome.blamed() == []


def test_bank_covers_every_cause_it_can_build() -> None:
    assert sorted(s.cause for s in SCENARIOS) == sorted(set(CAUSES) - set(NOT_BUILDABLE))


def test_written_folder_loads_as_its_splits_with_the_test_images_alone_darkened(tmp_path: Path) -> None:
    data = digits(SIZE, seed=0)
    root = write_folder(tmp_path / "d", {"train": (data.x_train, data.y_train), "test": (data.x_test * DARKEN, data.y_test)}, data.class_names)
    loaded = from_folder(root, SIZE, seed=0)
    assert len(loaded.y_train) + len(loaded.y_val) == len(data.y_train) and len(loaded.y_test) == len(data.y_test)
    assert np.bincount(loaded.y_test).tolist() == np.bincount(data.y_test).tolist()
    assert loaded.x_test.mean() == pytest.approx(DARKEN * data.x_test.mean(), rel=0.01)
    assert np.concatenate([loaded.x_train, loaded.x_val]).mean() == pytest.approx(data.x_train.mean(), rel=0.01)


def test_bench_table_shows_each_scenarios_numbers_and_verdict(trained: Callable[[Scenario], Outcome]) -> None:
    from bench.scenarios import readme_table

    results = [(scenario, 0, trained(scenario)) for scenario in SCENARIOS]
    lines = readme_table(results).splitlines()
    assert len(lines) == 2 + len(SCENARIOS)
    for line, (scenario, _, outcome) in zip(lines[2:], results, strict=True):
        name, how, accuracies, verdict = (cell.strip() for cell in line.strip("|").split("|"))
        assert (name, how) == (scenario.name, scenario.how)
        shown = [float(x) for x in accuracies.split(" / ")]
        assert shown == pytest.approx([outcome.accuracy("test", mode) for mode in ("inference", "recalibrated", "batchstats")], abs=0.005)
        assert verdict.startswith(f"`{outcome.verdict.cause}`: ")
