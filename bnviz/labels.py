"""Run labels that read once and tell runs apart, the pair of runs Compare opens on, and
`md_literal`, the one way a user's string (a name, an error, a file or layer name) enters Markdown."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from bnviz.config import RunConfig
from bnviz.records import Run, RunStatus

# Every ASCII punctuation character, each of which CommonMark lets a backslash make literal. Links,
# images and raw HTML start with one of them ([ ! <), as do GitHub's autolinks (the ':' of https://,
# the '.' of www., the '@' of an e-mail address), Streamlit's directives (:red[...], :material/...:),
# its LaTeX ($) and emphasis, headings, lists and tables.
MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def md_literal(text: object) -> str:
    """`text` as Markdown that shows it exactly as typed: every ASCII punctuation character
    backslash-escaped, so a run named `[Log in](https://…)` or `![x](http://host/beacon.png)` stays
    text in st.markdown, captions, alerts, titles and widget or expander labels (not in option
    lists or code spans, which Streamlit shows literally already)."""
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text))


def _leaves(value: object, path: str = "") -> dict[str, object]:
    """A nested dict's leaves by their last key ('seed', 'momentum'), for telling configs apart."""
    if not isinstance(value, dict):
        return {path: value}
    return {k: v for key, item in value.items() for k, v in _leaves(item, key).items()}


def _without(config: RunConfig, *names: str) -> dict:
    leaves = _leaves(dataclasses.asdict(config))
    return {k: v for k, v in leaves.items() if k not in names}


def pair_of_interest(runs: Sequence[Run]) -> list[str]:
    """Ids of the newest done run and the run it is best compared with: its parent (a what-if copy's
    original), else a run identical but for the seed, else the next newest done run (runs come
    newest first). Fewer ids when there are fewer runs."""
    done = [r for r in runs if r.status == RunStatus.DONE] or list(runs)
    if not done:
        return []
    last, ids = done[0], {r.id for r in runs}
    if last.parent in ids:
        return [last.id, last.parent]
    same = _without(last.config, "name", "seed")
    twin = next((r for r in done[1:] if _without(r.config, "name", "seed") == same), None)
    return [last.id, twin.id] if twin else [r.id for r in done[:2]]


def unique_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run id → label, unique among `runs`: runs sharing a label gain the settings that differ between
    them ('bn m=0.99 seed=1'), else their order of creation ('bn m=0.99 #2'). Ids stay out of labels."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    labels = {}
    for label, group in groups.items():
        if len(group) == 1:
            labels[group[0].id] = label
            continue
        leaves = [_leaves(dataclasses.asdict(r.config)) for r in group]
        differ = [k for k in leaves[0] if k != "name" and len({repr(leaf.get(k)) for leaf in leaves}) > 1][:2]
        for run, leaf in zip(group, leaves, strict=True):
            labels[run.id] = label + "".join(f" {k}={leaf[k]:g}" if isinstance(leaf[k], float) else f" {k}={leaf[k]}" for k in differ)
    for group in groups.values():
        clash = [r for r in group if sum(labels[r.id] == labels[o.id] for o in group) > 1]
        for n, run in enumerate(sorted(clash, key=lambda r: r.created), start=1):
            labels[run.id] += f" #{n}"
    return labels
