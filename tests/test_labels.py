"""Run names that read once and tell runs apart, and the pair Compare opens on."""

from __future__ import annotations

from bnviz.config import RunConfig
from bnviz.labels import pair_of_interest, unique_labels
from bnviz.presets import preset_config
from bnviz.records import Run


def _run(run_id: str, name: str = "", created: float = 0.0, parent: str | None = None, status: str = "done", **changes) -> Run:
    config: RunConfig = preset_config("bn").replace(name=name, **changes)
    return Run(run_id, name, "bn", config, status, created, 0.0, 1.0, 1.0, None, None, 1, 1, False, None, parent, None, {})


def test_a_name_that_says_its_momentum_is_not_repeated_and_has_no_id():
    assert _run("r1", "bn m=0.99 b=32").label == "bn m=0.99 b=32"
    assert _run("r2", "mine").label == "mine m=0.99"
    assert _run("r3").label == "bn m=0.99"


def test_same_labels_gain_what_differs_else_their_order():
    runs = [
        _run("a", "bn m=0.99 b=32", 1.0, seed=0),
        _run("b", "bn m=0.99 b=32", 2.0, seed=1),
        _run("c", created=4.0),
        _run("d", created=3.0),
        _run("e", "other"),
    ]
    labels = unique_labels(runs)
    assert labels == {"a": "bn m=0.99 b=32 seed=0", "b": "bn m=0.99 b=32 seed=1", "c": "bn m=0.99 #2", "d": "bn m=0.99 #1", "e": "other m=0.99"}
    assert len(set(labels.values())) == len(runs)


def test_compare_opens_on_the_newest_run_and_its_parent_or_seed_twin():
    parent = _run("p", created=1.0)
    child = _run("c", created=3.0, parent="p", batch_size=16)
    assert pair_of_interest([child, _run("x", created=2.0), parent]) == ["c", "p"]
    twin = [_run("n", created=3.0, seed=2), _run("o", created=2.0, batch_size=64), _run("t", created=1.0, seed=5)]
    assert pair_of_interest(twin) == ["n", "t"]
    assert pair_of_interest([_run("n", created=3.0), _run("o", created=2.0, batch_size=64)]) == ["n", "o"]
    assert pair_of_interest([_run("q", status="queued"), _run("d", created=1.0)])[0] == "d"
    assert pair_of_interest([]) == []
