"""Mutation testing of the code that computes numbers: `python -m bench.mutation`.

mutmut (configured in pyproject.toml, `[tool.mutmut]`) plants one small change at a time (an operator,
a constant, a comparison) in the functions below and runs the fast reference tests that reach them
(tests/test_stats.py, tests/test_reference.py without its training-loop tests). A mutant the tests
miss "survives": each survivor is listed with its diff, to be killed by a test or explained as
equivalent (docs/testing.md; `--docs` writes the summary there). Too slow for every CI run (minutes on 2 cores); run it after changing
the maths. Results: bench/results/mutation.json, mutmut's log in bench/results/mutation.log.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from bench.docs import fenced, write_generated

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGETS = (
    "bnviz.stats.*",  # EMA theory, recovered batch moments and their error bound, schedules, histograms, gaps
    "bnviz.tf.recalibrate.x_recalibrate__*",  # PreciseBN (not recalibrate_job, the job plumbing around it)
    "bnviz.tf.probe.x_population_moments*",  # the probe's moment functions, not its callback plumbing
    "bnviz.tf.probe.x_batch_moments*",
    "bnviz.tf.probe.x_pooled_moments*",
    "bnviz.tf.probe.xǁStatelessForwardǁ_input_moments*",
    "bnviz.tf.probe.xǁStatelessForwardǁinput_moments*",
    "bnviz.diagnose.*",  # the verdict, its thresholds and every finding's figures
)
KILLED = ("killed", "timeout")  # a mutant that makes the tests hang is caught too (mutmut's own score counts it)


def mutmut(*args: str, log: Path | None = None) -> str:
    """Run mutmut in the repository root; its progress spinner goes to `log`, not the terminal."""
    with open(log or Path("/dev/null"), "a") as sink:
        done = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, stdout=subprocess.PIPE if log is None else sink, stderr=sink, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} exited with {done.returncode}; see {log}")
    return done.stdout or ""


def statuses(targets: tuple[str, ...]) -> dict[str, str]:
    """Every targeted mutant's status, from `mutmut results --all true` ("    name: status")."""
    lines = (line.strip().rsplit(": ", 1) for line in mutmut("results", "--all", "true").splitlines() if ": " in line)
    return {name: status for name, status in lines if any(fnmatch.fnmatch(name, t) for t in targets)}


def mutant_diffs(names: Iterable[str]) -> dict[str, str]:
    """The changed lines of each mutant, read from the mutated sources mutmut wrote (mutants/<module>.py
    holds every mutant of a function beside its original): one parse per module instead of one
    `mutmut show` process per mutant, which took most of an hour for the 2,545 mutants of diagnose.py."""
    bodies: dict[str, dict[str, list[str]]] = {}
    diffs = {}
    for name in names:
        module, function = name.split(".x", 1)[0], "x" + name.split(".x", 1)[1]
        if module not in bodies:
            bodies[module] = _function_bodies(ROOT / "mutants" / (module.replace(".", "/") + ".py"))
        original, mutated = bodies[module].get(function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"), bodies[module].get(function)
        lines = difflib.unified_diff(original or [], mutated or [], lineterm="", n=0)
        diffs[name] = "\n".join(line for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    return diffs


def _function_bodies(path: Path) -> dict[str, list[str]]:
    """Each mutmut function of a mutated source by name, its lines without the `def` line (whose name differs)."""
    source = path.read_text()
    lines = source.splitlines()
    return {
        node.name: lines[node.lineno : node.end_lineno]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name
    }


STRING = re.compile(r"""(?P<q>["'])(?:\\.|(?!(?P=q)).)*(?P=q)""")  # one string literal, f-string parts included


def text_only(change: str) -> bool:
    """Does a mutant change only the words of a message (string literals holding a space), not a
    number, a decision or a key such as "warning" that code compares against?"""
    removed = [line[1:] for line in change.splitlines() if line.startswith("-")]
    added = [line[1:] for line in change.splitlines() if line.startswith("+")]
    if len(removed) != len(added):
        return False
    for before, after in zip(removed, added, strict=True):
        if STRING.sub('""', before) != STRING.sub('""', after):
            return False
        literals = zip((m.group() for m in STRING.finditer(before)), (m.group() for m in STRING.finditer(after)), strict=False)
        if any(old != new and " " not in old for old, new in literals):
            return False
    return True


def summary(found: dict[str, str], seconds: float) -> dict:
    """Counts, the kill rate over all mutants and over those that change a number or a decision (a
    message's text is read by people, not tested word by word), and every survivor's diff."""
    counts: dict[str, int] = {}
    for status in found.values():
        counts[status] = counts.get(status, 0) + 1
    killed = sum(counts.get(s, 0) for s in KILLED)
    diffs = mutant_diffs(found)
    survivors = {name: {"status": found[name], "diff": diffs[name]} for name in sorted(n for n, s in found.items() if s not in KILLED)}
    text = sorted(name for name, survivor in survivors.items() if text_only(survivor["diff"]))
    texts_total = len(text) + sum(1 for n, s in found.items() if s in KILLED and text_only(diffs[n]))
    decisive = len(found) - texts_total
    timeouts = sorted(n for n, s in found.items() if s == "timeout")  # on a loaded machine a killing test can time out too: retest them
    return {
        "seconds": round(seconds),
        "mutants": len(found),
        "killed": killed,
        "kill_rate": round(killed / max(1, len(found)), 3),
        "decisive_mutants": decisive,
        "decisive_kill_rate": round((decisive - (len(survivors) - len(text))) / max(1, decisive), 4),
        "counts": counts,
        "text_survivors": text,
        "survivors": survivors,
        "timeouts": timeouts,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2: this machine's cores)")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="mutant name patterns (default: the maths)")
    parser.add_argument("--survivors", action="store_true", help="retest every mutant not yet killed (after adding tests)")
    parser.add_argument("--report", action="store_true", help="only summarise the verdicts mutmut has stored so far")
    parser.add_argument("--docs", action="store_true", help="also write the summary into docs/testing.md (between its markers)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "mutation.log"
    started = time.monotonic()
    if args.survivors or args.report:
        previous = json.loads((RESULTS / "mutation.json").read_text()) if (RESULTS / "mutation.json").exists() else {"seconds": 0}
        if args.survivors:
            retest = [name for name, status in statuses(tuple(args.targets)).items() if status != "killed"]
            mutmut("run", "--max-children", str(args.max_children), *retest, log=log)
        started -= previous["seconds"]  # the time of the whole run, survivors retested included
    else:
        log.unlink(missing_ok=True)
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)  # a fresh run: mutmut would otherwise reuse old verdicts
        mutmut("run", "--max-children", str(args.max_children), *args.targets, log=log)
    elapsed = previous["seconds"] if args.report else time.monotonic() - started  # a report reads verdicts; its own time is not the run's
    result = summary(statuses(tuple(args.targets)), elapsed)
    (RESULTS / "mutation.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    took = f" in {result['seconds']} s" if result["seconds"] else " (run time not recorded)"
    lines = [
        f"{result['killed']} of {result['mutants']} mutants killed ({result['kill_rate']:.1%}){took}; {result['counts']}; "
        f"of the {result['decisive_mutants']} that change a number or a decision, {result['decisive_kill_rate']:.1%} killed"
    ]
    for name, survivor in result["survivors"].items():
        kind = "message text" if name in result["text_survivors"] else "NUMBER OR DECISION"
        lines.append(f"\n{survivor['status']} ({kind}): {name}\n{survivor['diff']}")
    text = "\n".join(lines)
    print(text)
    if args.docs:
        print(f"wrote {write_generated('testing.md', 'bench.mutation', fenced(text))}")


if __name__ == "__main__":
    main()
