"""Command line: `python -m bnviz COMMAND ...`; every command takes `--json`.

Bad arguments print one line to stderr and exit with code 2, never a traceback; they are checked
before TensorFlow is imported, so no TensorFlow log line comes before that line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from bnviz.config import FILTERS_RANGE, SETTING, SETTINGS, ConfigError, RunConfig, Setting, validate, with_filters, with_settings
from bnviz.data import BUILTIN_DATASETS, DataError
from bnviz.executors import ray_address
from bnviz.jobs import recalibration_run
from bnviz.presets import PRESETS, SEED_RESULTS, preset_config
from bnviz.records import Evaluation, RunStatus
from bnviz.shapes import param_counts, param_totals
from bnviz.store import Store, StoreError

USAGE_ERRORS = (ConfigError, StoreError, DataError)


class UsageError(Exception):
    """A bad argument: printed as one line, exit code 2."""


def _emit(args: argparse.Namespace, payload: object, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


def _table(rows: list[list[object]], header: list[str]) -> str:
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else "–"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --- commands that need no TensorFlow ---------------------------------------------------------
def cmd_presets(args: argparse.Namespace) -> None:
    rows = [{"preset": name, **param_counts(build(), args.input_size), "seed_train_val_test": SEED_RESULTS[name]} for name, build in PRESETS.items()]
    text = _table(
        [[r["preset"], r["total"], r["trainable"], r["non_trainable"], " / ".join(f"{v:g}" for v in r["seed_train_val_test"])] for r in rows],
        ["preset", "params", "trainable", "non-trainable", "seed train/val/test"],
    )
    _emit(args, {"input_size": args.input_size, "presets": rows}, f"Presets at {args.input_size}×{args.input_size}×3:\n{text}")


def cmd_list(args: argparse.Namespace) -> None:
    runs = Store(args.home).list_runs()
    rows = [{"id": r.id, "name": r.name, "preset": r.preset, "status": r.status, "momentum": r.bn_momentum, "created": r.created} for r in runs]
    text = _table([[r["id"], r["name"], r["status"], r["momentum"]] for r in rows], ["id", "name", "status", "momentum"]) if rows else "No runs yet."
    _emit(args, {"runs": rows}, text)


def cmd_show(args: argparse.Namespace) -> None:
    store = Store(args.home)
    run = store.get_run(args.run)
    evaluations, progress = store.evaluations(run.id), store.progress(run.id)
    payload = {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "error": run.error,
        "config": json.loads(run.config.to_json()),
        "progress": {**asdict(progress), "fraction": progress.fraction},
        "evaluations": {name: ev.to_dict() for name, ev in evaluations.items()},
        "model_path": run.model_path,
    }
    lines = [f"{run.label}: {run.status}" + (f" ({run.error})" if run.error else "")]
    if "final" in evaluations:
        lines.append(accuracy_table([(run.name or run.id, evaluations["final"])]))
    _emit(args, payload, "\n".join(lines))


def accuracy_table(rows: list[tuple[str, Evaluation]]) -> str:
    """Seed-style table: what fit reported, then train / val / test in inference mode (what evaluate
    gives) beside batch-statistics mode."""
    keys = ("fit", "train", "val", "test", "train_batchstats", "val_batchstats", "test_batchstats")
    body = [[name, *(ev.accuracy_of(k) for k in keys)] for name, ev in rows]
    modes = [f"{s} (evaluate)" for s in ("train", "val", "test")] + [f"{s} (batch stats)" for s in ("train", "val", "test")]
    return _table(body, ["model", "train (fit)", *modes])


# --- commands that train ------------------------------------------------------------------------
def _train_config(args: argparse.Namespace) -> RunConfig:
    """The run's config: `--config FILE.json` or the preset, then every setting flag given."""
    config = _config_file(args.config) if args.config else preset_config(args.preset)
    given = {s.name: value for s in SETTINGS if (value := getattr(args, s.name, None)) is not None}
    config = with_settings(config, **given)
    if args.filters:
        config = config.replace(arch=with_filters(config.arch, args.filters))
    if args.raw_pixels:
        config = with_settings(config, rescale=1.0)
    if args.dataset:
        config = config.replace(dataset=_dataset_spec(args.dataset))
    return validate(config.replace(name=args.name or config.name))


def _config_file(path: str) -> RunConfig:
    """A RunConfig from a JSON file (the Runs page's download, or `bnviz show --json`'s "config")."""
    try:
        return RunConfig.from_json(Path(path).expanduser().read_text())
    except OSError as exc:
        raise UsageError(f"Cannot read the config file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"The config file {path} is not JSON: {exc}") from None


def _writable_folder(path: Path, flag: str) -> None:
    """UsageError unless `path` is (or can be made) a folder this process can write in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise UsageError(f"{flag} must be a folder you can write in. Received: {path} ({exc.strerror or exc})") from None


def _dataset_spec(spec: str) -> str:
    if spec in BUILTIN_DATASETS:
        return spec
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise UsageError(f"Data folder not found: {spec}")
    return str(path.resolve())


def _run_in_process(store: Store, config: RunConfig, quiet: bool, sweep: str | None = None):
    """Train in this process with a progress bar; the run is marked running at once so that a
    dashboard's job manager never picks it up."""
    from tqdm import tqdm

    from bnviz.tf.train import execute_run

    run_id = store.create_run(config, status=RunStatus.RUNNING, sweep=sweep)
    store.start(run_id, os.getpid(), 0, 0, {})
    bar = tqdm(desc=config.name or run_id, unit="step", disable=quiet, file=sys.stderr)

    def on_step(step: int, logs: dict) -> None:
        if bar.total is None:
            bar.total = store.get_run(run_id).total_steps
        bar.update(1)
        bar.set_postfix(epoch=logs["epoch"], loss=f"{logs['loss']:.3f}", acc=f"{logs['accuracy']:.3f}")

    try:
        return execute_run(store, run_id, on_step)
    except BaseException as exc:
        store.finish(run_id, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        bar.close()


def _run_all(store: Store, configs: list[RunConfig], args: argparse.Namespace, sweep: str | None = None) -> list:
    """Train `configs` in this process one after another, or with `--ray ADDRESS` all at once on
    that cluster (this process drives it; the runs land in the same store)."""
    address = ray_address(args.ray or "")
    if not address:
        return [_run_in_process(store, c, args.json, sweep=sweep) for c in configs]
    from bnviz.rayexec import connect, run_queued

    connect(address)  # a refused token fails here, before any run is queued
    ids = [store.create_run(c, sweep=sweep) for c in configs]
    run_queued(store, address)
    while any(store.get_run(i).status.active for i in ids):  # a dashboard's worker may have taken some
        time.sleep(0.5)
    return [_stored_result(store, i) for i in ids]


def _stored_result(store: Store, run_id: str):
    """A finished run's RunResult, read back from the store."""
    from bnviz.tf.train import RunResult

    run = store.get_run(run_id)
    seconds = run.info.get("seconds") or ((run.finished or 0) - (run.started or run.finished or 0))
    return RunResult(
        run_id,
        run.status,
        run.info.get("steps") or store.progress(run_id).step or 0,
        seconds,
        run.model_path,
        store.evaluations(run_id).get("final"),
        run.error,
    )


def _result_payload(result) -> dict:
    evaluation = result.evaluation.to_dict() if result.evaluation else {}
    return {
        "run_id": result.run_id,
        "status": result.status,
        "model_path": result.model_path,
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "accuracy": evaluation.get("accuracy", {}),
        "loss": evaluation.get("loss", {}),
        "error": result.error,
    }


def cmd_train(args: argparse.Namespace) -> None:
    config = _train_config(args)
    from bnviz.jobs import check_memory

    check_memory(config)
    (result,) = _run_all(Store(args.home), [config], args)
    payload = _result_payload(result)
    text = f"Run {result.run_id}: {result.status} after {result.steps} steps in {result.seconds:.1f} s"
    if result.evaluation:
        text += "\n" + accuracy_table([(config.name, result.evaluation)]) + f"\nModel: {result.model_path}"
    elif result.error:
        text += f"\n{result.error}"
    _emit(args, payload, text)
    if result.status != RunStatus.DONE:
        sys.exit(1)


def cmd_story(args: argparse.Namespace) -> None:
    from bnviz.story import CHAPTERS, chapter_configs, mechanisms_frame, new_story_id, story_key, story_sections

    store, started, story = Store(args.home), time.monotonic(), new_story_id()
    overrides = {k: getattr(args, k) for k in ("epochs", "input_size", "seed") if getattr(args, k) is not None}
    names = args.chapters or [c.preset for c in CHAPTERS] + (["raw"] if args.raw_pixels else [])
    configs = chapter_configs(names, dataset=_dataset_spec(args.dataset or "synthetic"), **overrides)
    results = _run_all(store, configs, args, sweep=story)
    datas = {story_key(d.run): d for d in (store.load_run(r.run_id) for r in results)}
    keys = list(datas)
    wall = time.monotonic() - started
    payload = {
        "story": story,
        "seconds": round(wall, 1),
        "runs": [{"preset": k, "seed": SEED_RESULTS.get(k), **_result_payload(r)} for k, r in zip(keys, results, strict=True)],
    }
    table = accuracy_table([(k, r.evaluation) for k, r in zip(keys, results, strict=True) if r.evaluation])
    seed = "\n".join(f"  {c.preset}: " + " / ".join(f"{v:g}" for v in SEED_RESULTS[c.preset]) for c in CHAPTERS)
    chapters = "\n\n".join(f"{title}\n{text}" for title, text in story_sections(datas, names))
    recap = mechanisms_frame(datas)
    recap_text = f"\n\nTwo mechanisms, one symptom:\n{recap.to_string(float_format=lambda v: f'{v:.3g}')}" if len(recap) else ""
    _emit(args, payload, f"{table}\n\nThe seed notebook (train / val / test):\n{seed}\n\n{chapters}{recap_text}\n\nWall time: {wall:.1f} s")


def cmd_diagnose(args: argparse.Namespace) -> None:
    from bnviz.diagnose import as_text, diagnose

    store = Store(args.home)
    findings = diagnose(store.load_run(store.get_run(args.run).id))
    _emit(args, {"run_id": args.run, "findings": [asdict(f) for f in findings]}, as_text(findings))


def cmd_recalibrate(args: argparse.Namespace) -> None:
    recalibration_run(Store(args.home), args.run, args.batches, args.calibrate_on, args.save)  # before TensorFlow loads
    from bnviz.tf.recalibrate import recalibrate

    result = recalibrate(Store(args.home), args.run, args.batches, save=args.save, calibrate_on=args.calibrate_on)
    after = result["after"]
    transductive = after.calibrated_on != "train"
    label = f"after PreciseBN on {after.calibrated_on}" + (" (transductive)" if transductive else "")
    rows = [(name, ev) for name, ev in (("before (moving statistics)", result["before"]), (label, after)) if ev]
    saved = f"\nSaved the recalibrated model to {args.save}" if args.save else ""
    warning = (
        f"\nTransductive: calibrated on the {after.calibrated_on} images and scored on them, so its {after.calibrated_on} figures are no "
        "evidence that the weights are fine."
        if transductive
        else ""
    )
    payload = {"run_id": args.run, **{k: ev.to_dict() if ev else None for k, ev in result.items()}, "saved": args.save, "transductive": transductive}
    _emit(
        args,
        payload,
        f"Recalibrated {args.run} over {after.batches} batches ({after.samples} {after.calibrated_on} images):\n{accuracy_table(rows)}{warning}{saved}",
    )


def cmd_inspect(args: argparse.Namespace) -> None:
    for flag, path in (("model", args.model), ("--data", args.data), ("--test", args.test)):
        if path is not None and not Path(path).expanduser().exists():
            raise UsageError(f"{flag}: no such file or folder. Received: {path}")
    from bnviz.diagnose import as_text, diagnose
    from bnviz.tf.inspect import inspect_model

    store = Store(args.home)
    run_id = inspect_model(
        store,
        args.model,
        args.data,
        args.test,
        args.name,
        args.batch_size,
        steps=args.steps,
        progress=lambda text: None if args.json else print(text + " …", file=sys.stderr),
    )
    data = store.load_run(run_id)
    findings = diagnose(data)
    payload = {
        "run_id": run_id,
        "model_path": data.run.model_path,
        "evaluation": data.evaluations["final"].to_dict(),
        "bn_layers": data.run.info["bn_layers"],
        "findings": [asdict(f) for f in findings],
    }
    table = accuracy_table([(data.run.name, data.evaluations["final"])])
    _emit(
        args,
        payload,
        f"Run {run_id} ({len(data.run.info['bn_layers'])} BN layers)\n{table}\n\n{as_text(findings)}\n\n"
        f"Recalibrate: bnviz recalibrate {run_id} --save fixed.keras",
    )


def cmd_sweep(args: argparse.Namespace) -> None:
    store, started = Store(args.home), time.monotonic()
    base = _train_config(args)
    sweep = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    grid = [(m, b) for b in args.batch_sizes or [base.batch_size] for m in args.momenta]
    configs = [validate(base.with_momentum(m).replace(batch_size=b, name=f"{base.preset} m={m:g} b={b}")) for m, b in grid]
    if args.queue:
        ids = [store.create_run(c, sweep=sweep) for c in configs]
        if args.ray:  # no dashboard needed: a Ray driver in the background trains them
            from bnviz.jobs import JobManager

            JobManager(store, ray_address=ray_address(args.ray)).pump()
        results = [(m, b, i, None) for (m, b), i in zip(grid, ids, strict=True)]
    else:
        results = [(m, b, r.run_id, r.evaluation) for (m, b), r in zip(grid, _run_all(store, configs, args, sweep=sweep), strict=True)]
    payload = {
        "sweep": sweep,
        "seconds": round(time.monotonic() - started, 1),
        "runs": [{"momentum": m, "batch_size": b, "run_id": r, "accuracy": ev.accuracies() if ev else None} for m, b, r, ev in results],
    }
    rows = [[m, b, r, *((ev.accuracy_of(k) if ev else "queued") for k in ("test", "test_batchstats"))] for m, b, r, ev in results]
    _emit(args, payload, f"Sweep {sweep}:\n" + _table(rows, ["momentum", "batch", "run", "test", "test (batch stats)"]))


def cmd_tensorboard(args: argparse.Namespace) -> None:
    store = Store(args.home)
    data = store.load_run(store.get_run(args.run).id)
    _writable_folder(Path(args.logdir), "--logdir")
    from bnviz.tf.tbexport import write_events

    folder = write_events(data, Path(args.logdir))
    _emit(args, {"run_id": args.run, "logdir": str(folder)}, f"Wrote TensorBoard events to {folder}\nView: tensorboard --logdir {args.logdir}")


def cmd_summary(args: argparse.Namespace) -> None:
    config = validate(preset_config(args.preset, input_size=args.input_size))
    from bnviz.tf.models import build_model, layer_rows

    model = build_model(config.arch, config.input_size)
    rows = layer_rows(model)
    counts = param_totals((r["trainable"], r["non_trainable"]) for r in rows)
    payload = {"preset": args.preset, "input_size": args.input_size, "layers": rows, **counts}
    table = [[r["name"], r["type"], "×".join(map(str, r["output_shape"])), r["trainable"] + r["non_trainable"]] for r in rows]
    text = _table(table, ["layer", "type", "output", "params"])
    _emit(args, payload, f"{text}\nTotal params: {counts['total']:,}  Trainable: {counts['trainable']:,}  Non-trainable: {counts['non_trainable']:,}")


def cmd_gc(args: argparse.Namespace) -> None:
    """Remove uploads no run or active job uses once they are older than the retention period."""
    from bnviz.uploads import collect

    report = collect(Store(args.home), days=args.days, dry_run=args.dry_run)
    _emit(args, report.to_dict(), report.text())


def _gc_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    parser.add_argument("--days", type=float, default=None, help="retention in days (default: $BNVIZ_UPLOAD_RETENTION_DAYS, else 7)")


def cmd_doctor(args: argparse.Namespace) -> None:
    """SQLite's integrity check of the store; with --recover, a new store holding every readable row.
    Exits 1 when the check finds problems. The store file is opened read-only."""
    from bnviz.doctor import integrity, recover
    from bnviz.store import home_folder

    path = home_folder(args.home) / "runs.sqlite"
    if not path.is_file():
        raise UsageError(f"No run store at {path}; choose its folder with --home or BNVIZ_HOME.")
    problems = [] if (found := integrity(path)) == ["ok"] else found
    copied = recover(path, home_folder(args.recover)) if args.recover else []
    lines = [f"{path}: " + (f"{len(problems)} problem(s) found by SQLite's integrity check:" if problems else "SQLite's integrity check found no problem.")]
    lines += [f"  {p}" for p in problems]
    if copied:
        rows = [[c.table, c.copied, c.unreadable if c.readable_schema else "table unreadable"] for c in copied]
        lines += [_table(rows, ["table", "rows copied", "unreadable ids"]), f"New store in {home_folder(args.recover)}; {path} is unchanged."]
    elif problems:
        lines.append("Copy what is still readable into a new store: bnviz doctor --recover NEW_FOLDER")
    payload = {"path": str(path), "ok": not problems, "problems": problems, "recovered": [asdict(c) for c in copied]}
    _emit(args, payload, "\n".join(lines))
    if problems:
        sys.exit(1)


# --- argument parsing ---------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--home", default=None, help="run store folder (default: $BNVIZ_HOME or ./bnviz-runs)")


def _setting_options(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> None:
    """A flag for each setting of bnviz.config.SETTINGS (or of `names`), with its type, choices,
    range and help; absent flags stay None and leave the config as it is."""
    for s in SETTINGS:
        if (names is None or s.name in names) and s.name not in skip:
            text = f"{s.label}; {s.help}" if s.help else s.label
            if s.kind is bool:
                parser.add_argument(s.flag, dest=s.name, action=argparse.BooleanOptionalAction, help=text)
            elif s.choices:
                parser.add_argument(s.flag, dest=s.name, choices=s.choices, help=text)
            else:
                parser.add_argument(s.flag, dest=s.name, type=_value_of(s), help=f"{text} ({s.range_text}; default {s.default:g})")
    parser.add_argument("--dataset", help="synthetic | digits | a folder of class sub-folders (default: synthetic)")


def _training_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Every setting, plus where the config starts from and the shorthands."""
    _setting_options(parser, skip=skip)
    parser.add_argument("--config", help="start from this RunConfig JSON file (the Runs page downloads one per run)")
    parser.add_argument("--preset", default="bn", help="start from this seed model when there is no --config")
    parser.add_argument("--name", default="")
    filters = _list_of(_whole_number("filters", *FILTERS_RANGE))
    parser.add_argument("--filters", type=filters, help="filters per conv block, comma-separated (1 to 6 blocks), e.g. 16,32,16")
    parser.add_argument("--raw-pixels", action="store_true", help="feed raw 0-255 pixels, as the seed notebook did (--rescale 1)")


def _value_of(setting: Setting) -> Callable[[str], Any]:
    """An argparse type for `setting`: its kind, range-checked by bnviz.config.SETTINGS."""

    def parse(text: str) -> Any:
        try:
            value = setting.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{setting.name} must be {'a whole number' if setting.kind is int else 'a number'}. Received: {setting.name}={text!r}"
            ) from None
        problem = setting.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def _whole_number(name: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number in [low, high] that is not a setting (filters, steps)."""
    return _value_of(Setting(name, (), int, name, low=low, high=high))


def _list_of(item: Callable[[str], Any]) -> Callable[[str], list]:
    """An argparse type for a comma-separated list of `item`s: at least one."""

    def parse(text: str) -> list:
        values = [item(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected one or more comma-separated values, e.g. 16,32. Received: {text!r}")
        return values

    return parse


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line pointing at --help (argparse prints the whole
    usage first), with exit code 2; subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bnviz", description="See why a BatchNormalization model trains to 0.99 and tests at 0.46.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable, str]] = {
        "presets": (cmd_presets, "the seed's four models with parameter counts"),
        "summary": (cmd_summary, "layer table and parameter counts of a preset"),
        "train": (cmd_train, "train one run, store it and print its accuracy in both BN modes"),
        "story": (cmd_story, "train the four seed models and print the seed-style table"),
        "list": (cmd_list, "list stored runs"),
        "show": (cmd_show, "show one stored run"),
        "diagnose": (cmd_diagnose, "explain in plain words why a run's test accuracy collapsed (or did not)"),
        "recalibrate": (cmd_recalibrate, "PreciseBN: recompute the BN statistics of a finished run, no retraining"),
        "inspect": (cmd_inspect, "post-mortem of a saved .keras model on an image folder or zip: both BN modes, every BN layer, a diagnosis"),
        "sweep": (cmd_sweep, "train a grid of momentum (and batch size) values"),
        "tensorboard": (cmd_tensorboard, "write a run's probe data as TensorBoard event files"),
        "gc": (cmd_gc, "remove uploads no run or active job uses that are older than the retention period"),
        "doctor": (cmd_doctor, "check the run store for damage (read-only); --recover copies what is readable into a new store"),
    }
    for name, (handler, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        _common(p)
    for name in ("presets", "summary"):
        sub.choices[name].add_argument("--input-size", type=_value_of(SETTING["input_size"]), default=224)
    sub.choices["summary"].add_argument("--preset", required=True)
    _training_options(sub.choices["train"])
    for name in ("train", "story", "sweep"):
        sub.choices[name].add_argument(
            "--ray",
            metavar="ADDRESS",
            help="train on the Ray cluster at ADDRESS (auto, host:port or ray://host:port) "
            "instead of in this process; runs land in the same store (pip install -r requirements-ray.txt)",
        )
    _setting_options(sub.choices["story"], names=("epochs", "input_size", "seed"))
    sub.choices["story"].add_argument(
        "--chapters",
        nargs="+",
        metavar="CHAPTER",
        help="train and print these chapters only: initial, more-layers, bn, final, raw, lag (default: the first four; lag is the long-run mechanism)",
    )
    sub.choices["story"].add_argument(
        "--raw-pixels", action="store_true", help="also train more-layers and bn on raw 0-255 pixels, as the seed notebook fed them (the Story's chapter 5)"
    )
    for name in ("show", "diagnose", "recalibrate", "tensorboard"):
        sub.choices[name].add_argument("run")
    sub.choices["recalibrate"].add_argument("--batches", type=_whole_number("batches", 1), default=50, help="training batches to average over")
    sub.choices["recalibrate"].add_argument("--save", help="also write the recalibrated model to this .keras file")
    sub.choices["recalibrate"].add_argument(
        "--calibrate-on",
        default="train",
        choices=("train", "val", "test"),
        help="the split whose images PreciseBN averages over (train; val or test score transductively)",
    )
    sub.choices["tensorboard"].add_argument("--logdir", required=True)
    sub.choices["doctor"].add_argument("--recover", metavar="FOLDER", help="copy every readable row into a new store in FOLDER (it must hold none yet)")
    inspect = sub.choices["inspect"]
    inspect.add_argument("model", help="a .keras file (loaded in safe mode: no Lambda or custom code runs)")
    inspect.add_argument("--data", required=True, help="a folder of class sub-folders, or a zip of one")
    inspect.add_argument("--test", help="a separate test folder or zip with the same classes")
    inspect.add_argument("--name", default="")
    batch_size, steps = _value_of(SETTING["batch_size"]), _whole_number("steps", 1)
    inspect.add_argument("--batch-size", type=batch_size, default=32, help="the batch size the model trained with (batch statistics depend on it)")
    inspect.add_argument("--steps", type=steps, default=None, help="how many training steps the model took, if you know (weighs the initial values)")
    sweep = sub.choices["sweep"]
    momenta, batch_sizes = _list_of(_value_of(SETTING["momentum"])), _list_of(batch_size)
    sweep.add_argument("--momentum", dest="momenta", type=momenta, required=True, help="comma-separated, e.g. 0.5,0.8,0.9,0.99")
    sweep.add_argument("--batch-size", dest="batch_sizes", type=batch_sizes, help="comma-separated, e.g. 16,32,64")
    sweep.add_argument(
        "--queue", action="store_true", help="queue for the dashboard's workers instead of training here (with --ray: for a Ray driver in the background)"
    )
    _training_options(sweep, skip=("momentum", "batch_size"))
    _gc_options(sub.choices["gc"])
    return parser


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below rather than at exit
    except BrokenPipeError:  # `bnviz list | head`: the reader has gone; Python's documented recipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (UsageError, *USAGE_ERRORS) as exc:
        print(f"bnviz {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"bnviz {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
