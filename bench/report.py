"""The benchmark's printed report: Markdown tables from the results dictionary (`python -m bench --docs`
writes them into docs/performance.md)."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in cells[1:])])


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _x(row: dict, key: str = "ratio") -> str:
    spread = row.get(key)
    return f"{spread['median']:.2f}×" if spread else "1.00×"


def _records(row: dict) -> str:
    return f"{row['records']} ({row['live_records']:g})" if row["records"] else "–"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def overhead(s: dict) -> str:
    out = [
        f"### Probe overhead: {s['model']}, {s['steps']} steps",
        f"Default probe: {s['default_probe']}. Whole fit after a warm-up fit (Keras's tracing excluded for all). "
        "'× plain' times training (until its last step's hooks); 'until last record' adds the records the probe makes "
        "once training ends; 'after setup' leaves out everything before step 1.",
        "",
    ]
    main = s["main"]
    out.append(
        table(
            [
                "variant",
                "ms/step",
                "× plain",
                "× plain, fastest of each",
                "× plain until last record",
                "× plain after setup",
                "× plain, CPU time",
                "records (in the loop)",
                "ms/record",
            ],
            [
                [
                    name,
                    r["ms_per_step"],
                    _x(r),
                    f"{r.get('ratio_of_fastest', 1.0):.2f}×",
                    _x(r, "ratio_total"),
                    _x(r, "ratio_after_setup"),
                    _x(r, "ratio_cpu"),
                    _records(r),
                    r.get("ms_per_record"),
                ]
                for name, r in main.items()
            ],
        )
    )
    out += ["", "Probe interval (`every`; 0 = geometric default):", ""]
    out.append(
        table(
            ["schedule", "records (in the loop)", "ms/step", "× plain", "× plain until last record", "ms/record"],
            [[n, _records(r), r["ms_per_step"], _x(r), _x(r, "ratio_total"), r.get("ms_per_record")] for n, r in s["intervals"].items()],
        )
    )
    out += ["", "BN layers (conv blocks with BN, geometric schedule):", ""]
    out.append(
        table(
            ["BN layers", "plain ms/step", "probed ms/step", "× plain", "× plain until last record", "ms/record"],
            [
                [n, r["plain"]["ms_per_step"], r["probed"]["ms_per_step"], _x(r["probed"]), _x(r["probed"], "ratio_total"), r["probed"].get("ms_per_record")]
                for n, r in s["bn_layers"].items()
            ],
        )
    )
    out += ["", "Probe batch / population samples (geometric schedule):", ""]
    out.append(
        table(
            ["probe_batch/population", "ms/step", "× plain", "× plain until last record", "ms/record"],
            [[n, r["ms_per_step"], _x(r), _x(r, "ratio_total"), r.get("ms_per_record")] for n, r in s["probe_sizes"].items()],
        )
    )
    b = s["record_breakdown"]
    out += ["", f"One probe record, piece by piece ({b['bn_layers']} BN layers, probe batch {b['probe_batch']}, population {b['population_samples']}):", ""]
    out.append(table(["piece", "ms", "CPU ms"], [[name, ms, b["cpu_ms"][name]] for name, ms in b["ms"].items()]))
    c = s["probe_cpu_estimate"]
    parts = "; ".join(f"{name} {ms:.0f}" for name, ms in c["pieces_ms"].items())
    out += [
        "",
        f"The default probe's CPU on this run, summed from the pieces: {c['total_ms']:.0f} ms ({parts}) against "
        f"{c['plain_cpu_ms']:.0f} ms for the plain fit: ×{1 + c['total_ms'] / c['plain_cpu_ms']:.2f} plain CPU.",
    ]
    e = s["population_error"]
    out += [
        "",
        f"Population sample size against {e['reference_images']:,} training images (bn preset after one epoch; every "
        "channel of every BN layer; mean error in reference SDs, variance error relative; the error bar a record "
        "carries is iid_mean_sd/√batches):",
        "",
    ]
    out.append(
        table(
            ["images", "mean error/sd, median", "max", "variance error, median", "max", "error bar/sd, median"],
            [
                [n, r["mean_err_sd"]["median"], r["mean_err_sd"]["max"], r["var_err_rel"]["median"], r["var_err_rel"]["max"], r["error_bar_sd"]["median"]]
                for n, r in e["sizes"].items()
            ],
        )
    )
    return "\n".join(out)


def story(s: dict) -> str:
    out = [f"### Classroom story: `{s['command']}`", ""]
    rows = []
    for r in s["runs"]:
        p = r["phases_s"]
        rows.append(
            [
                r["preset"],
                r["steps"],
                r["seconds"],
                p["data"],
                p["build"],
                p["train_steps"],
                p["probe"],
                p["recorder"],
                p["evaluate"],
                p["save"],
                _pct(r["test"]),
                _pct(r["test_batchstats"]),
            ]
        )
    t = s["phase_totals_s"]
    rows.append(
        [
            "all four",
            sum(r["steps"] for r in s["runs"]),
            sum(r["seconds"] for r in s["runs"]),
            t["data"],
            t["build"],
            t["train_steps"],
            t["probe"],
            t["recorder"],
            t["evaluate"],
            t["save"],
            "",
            "",
        ]
    )
    out.append(table(["preset", "steps", "run s", "data", "build", "train steps", "probe", "recorder", "evaluate", "save", "test", "test (batch stats)"], rows))
    c = s["collapse"]
    out += [
        "",
        f"Story in-process {s['story_s']:.1f} s; whole command (Python start + TensorFlow import) {s.get('process_s', 0):.1f} s "
        f"(target ≤ {s['target_s']} s). bn: test {_pct(c['bn_test'])} inference vs {_pct(c['bn_test_batchstats'])} "
        f"batch statistics; final: test {_pct(c['final_test'])}.",
    ]
    return "\n".join(out)


def ui(s: dict) -> str:
    f = s["first_render"]
    out = [
        "### Dashboard",
        "",
        f"First AppTest run in a fresh process (imports): {f['cold_process_first_run_s']:.2f} s; "
        f"app frame per session: {f['app_frame_s']['median']:.2f} s. First render of each page (data cache cleared):",
        "",
    ]
    out.append(table(["page", "first render s"], [[p, v["median"]] for p, v in f["pages_s"].items()]))
    out.append(f"(of which the Story page's eager one-file HTML report: {f['story_html_report_s']:.2f} s)")
    r = s["reruns"]
    out += [
        "",
        f"Page reruns while a worker trains ({r['run']}; {r['training_steps_during_reruns']} steps trained meanwhile), target ≤ {s['rerun_target_s']} s:",
        "",
    ]
    out.append(
        table(["page", "rerun s while training", "rerun s idle"], [[p, v["median"], r["idle_s"][p]["median"]] for p, v in r["while_training_s"].items()])
    )
    m = s["server"]
    mapped = "none" if not m["tensorflow_mapped"] else ", ".join(m["tensorflow_mapped"][:2])
    pages = ""
    if "rss_after_pages_mb" in m:
        pages = f"after a browser opened {len(m['pages_opened'])} pages RSS {m['rss_after_pages_mb']:.0f} MB; "
    out += [
        "",
        f"`streamlit run app.py` server: healthy after {m['start_to_healthy_s']:.1f} s, RSS {m['rss_after_health_mb']:.0f} MB; "
        f"{pages}TensorFlow files mapped: {mapped}.",
    ]
    return "\n".join(out)


def store(s: dict) -> str:
    out = ["### Run store (SQLite)", ""]
    rows = []
    for kind, items in s["per_record"].items():
        for r in items:
            rows.append([kind, r["layers"], "/".join(map(str, r["channels"])), r["bins"], r["bytes_per_record"], r["payload_per_record"]])
    out.append(table(["varied", "BN layers", "channels", "bins", "bytes/record", "payload bytes"], rows))
    out += ["", f"A step row (loss, accuracy): {s['bytes_per_step_row']:.0f} bytes. Whole runs (bn preset, 38 steps/epoch):", ""]
    out.append(
        table(
            ["steps", "schedule", "probe records", "KB", "write s"],
            [[r["steps"], r["schedule"], r["records"], r["bytes"] / 1024, r["write_s"]] for r in s["per_run"]],
        )
    )
    out += ["", f"Diagnose for a {s['long_run_steps']:,}-step run (seconds; page = AppTest first render and rerun):", ""]
    names = list(s["diagnose_load"])
    pieces = list(next(iter(s["diagnose_load"].values()))["seconds"])
    rows = [[p, *(s["diagnose_load"][n]["seconds"][p] for n in names)] for p in pieces]
    rows.append(["sum", *(s["diagnose_load"][n]["total_s"] for n in names)])
    rows.append(["figure JSON KB", *(s["diagnose_load"][n]["figure_json_bytes"] / 1024 for n in names)])
    rows.append(["page first render", *(s["diagnose_page"][n]["first_render_s"] for n in names)])
    rows.append(["page rerun", *(s["diagnose_page"][n]["rerun_s"] for n in names)])
    out.append(table(["piece", *(f"{n} ({s['diagnose_load'][n]['probe_records']} records)" for n in names)], rows))
    return "\n".join(out)


def threads(s: dict) -> str:
    return "\n".join(
        [
            "### TensorFlow threads (intra/inter; 0 = TensorFlow's default), plain fit",
            "",
            table(["threads", "ms/step"], [[n, r["ms_per_step"]["median"]] for n, r in s["threads"].items()]),
        ]
    )


def command(s: dict) -> str:
    w, c = s["wall_s"], s["cpu_s"]
    return "\n".join(
        [
            f"### Whole command: `{s['command']}` with and without `--no-probe` ({s['reps']} alternating pairs)",
            "",
            table(
                ["variant", "wall s", "CPU s", "× --no-probe wall", "× --no-probe CPU"],
                [
                    ["--no-probe", w["no probe"]["median"], c["no probe"]["median"], "1.00×", "1.00×"],
                    ["probed", w["probed"]["median"], c["probed"]["median"], _x(s), _x(s, "ratio_cpu")],
                ],
            ),
        ]
    )


def long(s: dict) -> str:
    rows = s["rows"]
    return "\n".join(
        [
            f"### A long run: {s['steps']:,} steps ({s['reps']} alternating pairs)",
            "",
            table(
                ["variant", "ms/step", "× plain (training)", "× plain until last record", "records (in the loop)", "ms/record"],
                [[n, r["ms_per_step"], _x(r), _x(r, "ratio_total"), _records(r), r.get("ms_per_record")] for n, r in rows.items()],
            ),
        ]
    )


def scale(s: dict) -> str:
    rows = []
    for preset, r in s["presets"].items():
        rows.append(
            [
                preset,
                r["steps"],
                r["ms_per_step"]["plain"],
                r["ms_per_step"]["probed"],
                _x(r),
                _x(r, "ratio_total"),
                f"{r['records']} ({r['live_records']:g})",
                r["peak_rss_mb"]["plain"],
                r["peak_rss_mb"]["probed"],
                r["data_mb"],
            ]
        )
    d = s["diagnose_page"]
    return "\n".join(
        [
            f"### The seed's scale: {s['input_size']}×{s['input_size']}, batch 32, each fit in its own process",
            "",
            table(
                [
                    "preset",
                    "steps",
                    "plain ms/step",
                    "probed ms/step",
                    "× plain (training)",
                    "× plain until last record",
                    "records (in the loop)",
                    "peak RSS MB plain",
                    "peak RSS MB probed",
                    "training images MB",
                ],
                rows,
            ),
            "",
            f"Diagnose page on the probed run (AppTest): first render {d['first_render_s']:.2f} s, rerun {d['rerun_s']:.2f} s.",
        ]
    )


RENDERERS = {"overhead": overhead, "story": story, "ui": ui, "store": store, "threads": threads, "command": command, "long": long, "scale": scale}


def render(results: dict) -> str:
    meta = results["meta"]
    parts = [
        f"## bnviz benchmark ({'quick smoke run, not measurements' if meta['quick'] else 'measurements'})",
        f"`{meta['command']}` · {meta['cpus']} CPUs · Python {meta['python']} · reps {meta['reps']}, "
        f"sweep reps {meta['sweep_reps']} · load average {meta['load_average_start'][0]} → {meta['load_average_end'][0]} · "
        f"{meta['seconds']:.0f} s",
    ]
    for name, section in results["sections"].items():
        if "error" in section:
            parts.append(f"### {name}: FAILED\n\n```\n{section['error'][-1500:]}\n```")
            continue
        parts.append(
            RENDERERS[name](section) + f"\n\n(section process {section['process_s']:.0f} s, load {section['load_before'][0]} → {section['load_after'][0]})"
        )
    return "\n\n".join(parts)
