"""docs/PERFORMANCE.md and its plots (docs/perf/*.png) from the JSON under bench/results/.

The measured part is generated; the notification runs (docs/perf/notifications.md) and the analysis (what
the profiles showed, what was changed: docs/perf/analysis.md) are kept by hand and included as they are.

    .venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BENCH = Path(__file__).resolve().parent
SERIES = (
    ("ingest", "edge + signal + PostgreSQL", "tab:red"),
    ("floor_http", "floor: bare Litestar route", "tab:blue"),
    ("floor_pg", "floor: bare asyncpg insert", "tab:green"),
)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _ms(value: float) -> str:
    return f"{value:,.1f} ms"


def plot_burst(samples: dict[str, Any], out: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.2))
    for key, label, colour in SERIES:
        points = samples.get(f"{key}_burst")
        if points:
            axis.scatter(
                [p[0] for p in points], [p[1] for p in points], s=3, alpha=0.5, label=label, color=colour
            )
    axis.axhline(3000, color="black", linestyle="--", linewidth=1, label="TradingView gives up (3 s)")
    axis.set_yscale("log")
    axis.set_xlabel("scheduled send time (s)")
    axis.set_ylabel("latency from scheduled send (ms)")
    axis.set_title("Burst: 3,000 webhooks from 1,000 users within 1 s")
    axis.legend(markerscale=4, fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def plot_steady(samples: dict[str, Any], out: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.2))
    for key, label, colour in SERIES:
        points = samples.get(f"{key}_steady")
        if points:
            ordered = sorted(p[1] for p in points)
            fractions = [(index + 1) / len(ordered) for index in range(len(ordered))]
            axis.plot(ordered, fractions, label=label, color=colour)
    for limit, style in ((10, ":"), (50, "--")):
        axis.axvline(limit, color="black", linestyle=style, linewidth=1, label=f"target {limit} ms")
    axis.set_xscale("log")
    axis.set_xlabel("latency from scheduled send (ms)")
    axis.set_ylabel("share of requests")
    axis.set_title("Steady 300 webhooks/s: latency distribution")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def plot_capacity(result: dict[str, Any], out: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.2))
    for key, label, colour in SERIES:
        steps = result.get(key, {}).get("capacity", {}).get("steps", [])
        if steps:
            axis.plot(
                [s["rate"] for s in steps],
                [s["p99_ms"] for s in steps],
                marker="o",
                label=label,
                color=colour,
            )
    axis.axhline(100, color="black", linestyle="--", linewidth=1, label="p99 limit 100 ms")
    axis.axvline(1000, color="grey", linestyle=":", linewidth=1, label="target 1,000/s")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate (webhooks/s, open loop)")
    axis.set_ylabel("p99 latency (ms)")
    axis.set_title("Capacity: p99 against offered rate")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def plot_cpu(result: dict[str, Any], out: Path) -> None:
    steady = result["ingest"]["steady"]["cpu_ms_per_request"]
    parts = [
        (name, steady[name]) for name in ("loadgen", "edge", "signal", "postgres_backends") if name in steady
    ]
    floor = result["floor_http"]["steady"]["cpu_ms_per_request"]
    figure, axis = plt.subplots(figsize=(8, 3.6))
    left = 0.0
    colours = ("tab:grey", "tab:blue", "tab:red", "tab:green")
    for (name, value), colour in zip(parts, colours, strict=False):
        axis.barh(["ingest"], [value], left=left, color=colour, label=name)
        left += value
    left = 0.0
    for name, colour in (("loadgen", "tab:grey"), ("floor_http", "tab:cyan")):
        if name in floor:
            axis.barh(["floor: bare route"], [floor[name]], left=left, color=colour, label=f"{name} (floor)")
            left += floor[name]
    axis.axvline(2.0, color="black", linestyle="--", linewidth=1, label="2 cores / 1,000 per s")
    axis.set_xlabel("CPU ms per request (steady 300/s)")
    axis.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def _ingest_section(result: dict[str, Any], docs: Path) -> list[str]:
    ours, http, pg = result["ingest"], result["floor_http"], result["floor_pg"]
    burst, steady, capacity = ours["burst"], ours["steady"], ours["capacity"]
    burst_ok_2xx = burst["errors"] == 0 and burst["max_ms"] < 3000
    accepted = burst["statuses"].get("200", 0)
    queued = burst["statuses"].get("202", 0)
    lines = [
        "## Webhook ingest (bench/bench_ingest.py)",
        "",
        f"Command: `{result['command']}` · commit `{result['git']['commit'][:10]}`"
        f" ({result['git']['dirty_paths']} paths of others uncommitted in the tree) · {result['started_at']}",
        f"Machine: {result['machine']['cores']} cores ({result['machine']['cpu']}),"
        f" {result['machine']['memory_gib']} GiB, Python {result['machine']['python']}."
        f" Load average at start {result['load_average_at_start']}, at end {result['load_average_at_end']}"
        " (the machine may be shared with other engineers' work: the load average says how busy it was).",
        f"Settings: {json.dumps(result['settings'])}",
        "",
        "| scenario | target | measured | floor: bare route | floor: bare insert | ratio to bare route"
        " | result |",
        "|---|---|---|---|---|---|---|",
        f"| burst: all answered 2xx within 3 s | 3,000 of 3,000 | {burst['ok']:,} 2xx"
        f" ({accepted:,} stored at once,"
        f" {queued:,} spooled 202), slowest {_ms(burst['max_ms'])} | slowest {_ms(http['burst']['max_ms'])} |"
        f" slowest {_ms(pg['burst']['max_ms'])} | | {_mark(burst_ok_2xx)} |",
        f"| burst: zero lost | every 2xx stored | {burst['lost']} of {burst['ok']:,} 2xx missing;"
        f" {burst['rows_stored']:,} rows ({burst['stored_without_2xx']} of them for requests the client had"
        f" given up on) | | | | {_mark(burst['lost'] == 0)} |",
        f"| burst p99 | < 1,500 ms | {_ms(burst['p99_ms'])} | {_ms(http['burst']['p99_ms'])} |"
        f" {_ms(pg['burst']['p99_ms'])} | {burst['p99_ms'] / max(http['burst']['p99_ms'], 1e-9):.1f}x |"
        f" {_mark(burst['p99_ms'] < 1500)} |",
        f"| steady 300/s p50 | < 10 ms | {_ms(steady['p50_ms'])} | {_ms(http['steady']['p50_ms'])} |"
        f" {_ms(pg['steady']['p50_ms'])} | {steady['p50_ms'] / max(http['steady']['p50_ms'], 1e-9):.1f}x |"
        f" {_mark(steady['p50_ms'] < 10)} |",
        f"| steady 300/s p99 | < 50 ms | {_ms(steady['p99_ms'])} | {_ms(http['steady']['p99_ms'])} |"
        f" {_ms(pg['steady']['p99_ms'])} | {steady['p99_ms'] / max(http['steady']['p99_ms'], 1e-9):.1f}x |"
        f" {_mark(steady['p99_ms'] < 50)} |",
        f"| steady errors | 0 | {steady['errors']} | {http['steady']['errors']} |"
        f" {pg['steady']['errors']} | |"
        f" {_mark(steady['errors'] == 0)} |",
        f"| capacity (p99 < 100 ms) | >= 1,000/s | {capacity['capacity_rate']:,}/s |"
        f" {http['capacity']['capacity_rate']:,}/s | {pg['capacity']['capacity_rate']:,}/s |"
        f" {capacity['capacity_rate'] / max(http['capacity']['capacity_rate'], 1):.2f} |"
        f" {_mark(capacity['capacity_rate'] >= 1000)} |",
        "",
        f"Bare-insert floor, one insert after another: p50 {_ms(pg['sequential']['p50_ms'])},"
        f" {pg['sequential']['achieved_rate']:,}/s (each insert is its own commit and WAL flush).",
        "",
        "CPU per request at steady 300/s (ms; from the processes' CPU time over the run):"
        f" `{json.dumps(steady['cpu_ms_per_request'])}`;"
        f" bare route: `{json.dumps(http['steady']['cpu_ms_per_request'])}`.",
        "",
        "![burst](perf/burst.png)",
        "",
        "![steady](perf/steady.png)",
        "",
        "![capacity](perf/capacity.png)",
        "",
        "![cpu](perf/cpu.png)",
        "",
        "Capacity steps (offered rate -> p50 / p99, errors, load average before the step):",
        "",
    ]
    for key, label, _ in SERIES:
        steps = result[key]["capacity"]["steps"]
        text = ", ".join(
            f"{s['rate']}/s -> {s['p50_ms']:.0f}/{s['p99_ms']:.0f} ms"
            + (f" ({s['errors']} errors)" if s["errors"] else "")
            + f" [load {s['load_average_before'][0]}]"
            for s in steps
        )
        lines.append(f"- {label}: {text}")
    lines.append("")
    samples = _load(BENCH / "results" / "ingest_samples.json") or {}
    plot_burst(samples, docs / "perf" / "burst.png")
    plot_steady(samples, docs / "perf" / "steady.png")
    plot_capacity(result, docs / "perf" / "capacity.png")
    plot_cpu(result, docs / "perf" / "cpu.png")
    return lines


def _other_section(name: str, title: str, envelope: dict[str, Any] | None, targets: str) -> list[str]:
    lines = [f"## {title}", "", f"Targets: {targets}", ""]
    if envelope is None:
        return [
            *lines,
            f"Not measured: bench/results/{name}.json is absent (its benchmark was not present).",
            "",
        ]
    lines.append(
        f"Command: `{envelope['command']}` · commit `{envelope['git']['commit'][:10]}` · load average"
        f" {envelope['load_average_at_start']} -> {envelope.get('load_average_at_end')}"
        f" · status {envelope['status']}"
    )
    lines.append("")
    result = envelope.get("result")
    if envelope["status"] != "ok" or result is None:
        lines += ["```", envelope.get("stderr", "")[-1500:], "```", ""]
        return lines
    body = result["text"] if "text" in result else json.dumps(result, indent=2)
    return [*lines, "```", body, "```", ""]


SCALE_TARGETS = {
    "ingest_ratio": 1.2,
    "list_p99_ms": 20.0,
    "stats_p99_ms": 50.0,
    "replay_events_per_s": 20_000,
}


# The scale runs shown: the full size is run by hand (it takes over an hour), `make bench` runs the small one.
SCALE_RUNS = {
    "scale_full.json": "Full size, run by hand (`--size full`)",
    "scale.json": "The last smaller run (`make bench`'s size, or by hand)",
}


def _scale_section(results: Path, docs: Path) -> list[str]:
    """Empty database against seeded, every figure beside its target, for each run of SCALE_RUNS;
    docs/perf/scale.md's analysis after."""
    lines = ["## Scale: a year of alerts in the database (bench/bench_scale.py)", ""]
    lines.append(
        f"Targets: ingest p99 seeded (and while retention or audit pruning runs) within"
        f" {SCALE_TARGETS['ingest_ratio']}x of empty; ListSignals p99 < {SCALE_TARGETS['list_p99_ms']:g} ms"
        f" for every filter and page {100}; GetUserStats p99 < {SCALE_TARGETS['stats_p99_ms']:g} ms for the"
        f" heaviest user; replay >= {SCALE_TARGETS['replay_events_per_s']:,} events/s; bytes per signal"
        " reported. EXPLAIN (ANALYZE, BUFFERS) of the paths that matter:"
        " [perf/scale-plans.md](perf/scale-plans.md)."
    )
    lines.append("")
    for file_name, title in SCALE_RUNS.items():
        lines += [f"### {title} (bench/results/{file_name})", ""]
        envelope = _load(results / file_name)
        result = envelope.get("result") if envelope else None
        measured = envelope is not None and envelope["status"] == "ok"
        if not measured or not isinstance(result, dict) or "seeded" not in result:
            state = envelope["status"] if envelope else "absent"
            lines += [f"Not measured ({state}).", ""]
        else:
            assert envelope is not None
            lines += _scale_table(envelope, result)
    notes = docs / "perf" / "scale.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return lines


def _scale_table(envelope: dict[str, Any], result: dict[str, Any]) -> list[str]:
    empty, seeded, seed = result["empty"], result["seeded"], result["seed"]
    ratio = SCALE_TARGETS["ingest_ratio"]
    base = empty["ingest"]["p99_ms"]
    lines = [
        f"Command: `{envelope['command']}` · commit `{envelope['git']['commit'][:10]}` · load average"
        f" {envelope['load_average_at_start']} -> {envelope.get('load_average_at_end')} · seeded"
        f" {seed['signals']:,} signals, {seed['events']:,} events for {seed['users']} users (heaviest"
        f" {seed['heavy_signals']:,}) in {seed['seconds']} s",
        "",
        "| figure | empty | seeded | target | result |",
        "|---|---|---|---|---|",
    ]

    def ingest_row(title: str, figures: dict[str, Any]) -> str:
        p99 = figures["p99_ms"]
        return (
            f"| {title} p50 / p99 | {_ms(empty['ingest']['p50_ms'])} / {_ms(base)} |"
            f" {_ms(figures['p50_ms'])} / {_ms(p99)} | p99 <= {ratio}x empty ({_ms(base * ratio)}) |"
            f" {_mark(p99 <= base * ratio)} ({p99 / base:.2f}x) |"
        )

    lines.append(ingest_row("ingest 300/s", seeded["ingest"]))
    for who in ("heavy", "light"):
        for name, figures in seeded[f"list_{who}"].items():
            before = empty[f"list_{who}"].get(name)
            shown = f"{_ms(before['p50_ms'])} / {_ms(before['p99_ms'])}" if before else "-"
            p99 = figures["p99_ms"]
            lines.append(
                f"| ListSignals {who} user, {name} p50 / p99 | {shown} |"
                f" {_ms(figures['p50_ms'])} / {_ms(p99)} | p99 < {_ms(SCALE_TARGETS['list_p99_ms'])} |"
                f" {_mark(p99 < SCALE_TARGETS['list_p99_ms'])} |"
            )
    stats_before, stats = empty["stats_heavy"], seeded["stats_heavy"]
    lines.append(
        f"| GetUserStats heaviest user p50 / p99 | {_ms(stats_before['p50_ms'])} /"
        f" {_ms(stats_before['p99_ms'])} | {_ms(stats['p50_ms'])} / {_ms(stats['p99_ms'])} |"
        f" p99 < {_ms(SCALE_TARGETS['stats_p99_ms'])} |"
        f" {_mark(stats['p99_ms'] < SCALE_TARGETS['stats_p99_ms'])} |"
    )
    for key, how in (("replay_heavy", "batched"), ("replay_heavy_single", "one event per message")):
        replay = seeded.get(key, {})
        if replay.get("events"):
            cpu = replay.get("cpu_ms_per_1000_events", {})
            roles = [role for role in ("signal", "storage", "client") if role in cpu]
            spent = ", ".join(f"{role} {cpu[role]:g}" for role in roles)
            target = SCALE_TARGETS["replay_events_per_s"]
            # Results from before batching and CPU figures carry neither.
            shown = f", {how}" if "messages" in replay else ""
            shown += f" (CPU ms per 1,000 events: {spent})" if spent else ""
            lines.append(
                f"| SubscribeSignals replay of {replay['events']:,} events{shown} | - |"
                f" {replay['events_per_s']:,}/s | >= {target:,}/s |"
                f" {_mark(replay['events_per_s'] >= SCALE_TARGETS['replay_events_per_s'])} |"
            )
    for name, title in (("audit_prune", "audit prune"), ("retention", "retention")):
        job = result.get(name)
        if not job:
            continue
        done = ""
        if "screenshots" in job:
            done = f", {job['screenshots']:,} screenshots ({job['per_second']:,}/s)"
        title_with_duration = f"ingest during {title} ({job['duration_s']} s{done})"
        lines.append(ingest_row(title_with_duration, job["ingest_meanwhile"]))
    size = result["bytes"]
    tables = ", ".join(
        f"{table} {figures['table_bytes_per_signal']:g} + {figures['index_bytes_per_signal']:g}"
        for table, figures in size["tables"].items()
        if figures["table_bytes_per_signal"] + figures["index_bytes_per_signal"] >= 1
    )
    lines += [
        "",
        f"Bytes per signal: {size['bytes_per_signal']:g} (table + indexes: {tables}).",
    ]
    backup = result.get("backup")
    if backup:
        lines.append(
            f"pg_dump (custom format) {backup['dump_s']} s, {backup['dump_bytes'] / 2**20:.0f} MiB;"
            f" pg_restore (2 jobs) {backup['restore_s']} s."
        )
    return [*lines, *_ingest_windows(result), ""]


def _ingest_windows(result: dict[str, Any]) -> list[str]:
    """What PostgreSQL did in each ingest window (runs that recorded it): its slow seconds and their
    checkpointer states, its checkpoints, WAL and full-page images."""
    windows = {
        "empty": result["empty"]["ingest"],
        "seeded": result["seeded"]["ingest"],
        **{
            f"during {name.replace('_', ' ')}": result[name]["ingest_meanwhile"]
            for name in ("audit_prune", "retention")
            if name in result
        },
    }
    if not all("server" in figures for figures in windows.values()):
        return []
    settle = result.get("settle")
    lines = [
        "",
        "Ingest windows, what PostgreSQL did meanwhile"
        + (f" (the seed was followed by a CHECKPOINT of {settle['checkpoint_s']} s)" if settle else "")
        + ":",
    ]
    for title, figures in windows.items():
        server = figures["server"]
        slow = server["timeline"]["slow_seconds"]
        states = ", ".join(
            f"{state} {counts['slow_seconds']} of {counts['seconds']}"
            for state, counts in server["timeline"]["by_checkpointer_state"].items()
        )
        lines.append(
            f"- {title}: {len(slow)} seconds with an answer over 50 ms (by checkpointer state: {states});"
            f" checkpoints begun {server['checkpoints']}, {server['wal_mb']:g} MB of WAL,"
            f" {server['fpi_share']:.1%} of its records full-page images."
        )
    return lines


def _profile_section(profile: dict[str, Any] | None) -> list[str]:
    lines = ["## Where the time goes (bench/profile_ingest.py)", ""]
    if profile is None:
        return [*lines, "Not measured: bench/results/profile_summary.json is absent.", ""]
    lines += [
        f"Command: `{profile['command']}` · load average {profile.get('load_average')} ·"
        f" {profile['rate']}/s for {profile['seconds']} s · answers {profile['statuses']} ·"
        f" p50 {_ms(profile['p50_ms'])}, p99 {_ms(profile['p99_ms'])}",
        "",
        f"CPU ms per request: `{json.dumps(profile['cpu_ms_per_request'])}` (machine_busy counts every"
        " process on the machine, other engineers' too).",
        "",
        "Share of py-spy samples (GIL held, so CPU rather than waiting) per phase; a sample counts for the"
        " first phase, in this order, found in its stack. `Runner.run` alone is the event loop's own C code:"
        " socket I/O and gRPC core.",
        "",
        "| process | phase | share |",
        "|---|---|---|",
    ]
    for process, shares in profile["phase_percent"].items():
        for phase, share in shares.items():
            lines.append(f"| {process} | `{phase}` | {share} % |")
    return [*lines, ""]


def write_report(results: Path, docs: Path) -> Path:
    (docs / "perf").mkdir(parents=True, exist_ok=True)
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (bench/run_all.py, then bench/report.py) from bench/results/*.json;"
        " every figure there carries its commit, machine, load average, settings and command.",
        "Everything runs on this one machine: load generator, edge, signal service, PostgreSQL and Redis.",
        "Latencies are open loop: counted from each request's scheduled send time, so queueing is included.",
        "",
    ]
    ingest = _load(results / "ingest.json")
    if ingest:
        lines += _ingest_section(ingest, docs)
    lines += _profile_section(_load(results / "profile_summary.json"))
    lines += _other_section(
        "pinned",
        "The peers' set-up: load generator and server on one core each (bench/bench_pinned.py)",
        _load(results / "pinned.json"),
        "stretch: ahead of fabston/TradingView-Webhook-Bot (burst p99 190 ms, ~2,600/s closed loop, no"
        " persistence) and robswc/tradingview-webhooks-bot (~700/s) on the same pinning, every alert stored",
    )
    lines += _other_section(
        "capture",
        "Capture (bench/bench_capture.py)",
        _load(results / "capture.json"),
        ">= 60 captures/minute per worker process; worker plus Chromium under 700 MB;"
        " premium wait under one capture time plus 1 s with 500 free jobs ahead",
    )
    lines += _other_section(
        "capture_premium_wait",
        "Premium wait behind a free backlog (bench/bench_capture.py --parts premium-wait)",
        _load(results / "capture_premium_wait.json"),
        "a premium job's wait under one capture time plus 1 s with 500 free jobs queued ahead",
    )
    lines += _other_section(
        "stream",
        "Live stream (bench/bench_stream.py)",
        _load(results / "stream.json"),
        "commit-to-subscriber p99 < 50 ms with 100 subscribers; < 64 KiB per idle subscriber at 1,000",
    )
    lines += _scale_section(results, docs)
    for name, title in (
        ("parser", "Parser (bench/bench_parser.py)"),
        ("storage", "Storage (bench/bench_storage.py)"),
    ):
        lines += _other_section(name, title, _load(results / f"{name}.json"), "none (reference figures)")
    # Kept by hand: the notification runs (bench/bench_notify.py) and the analysis.
    for kept in ("notifications.md", "analysis.md"):
        path = docs / "perf" / kept
        if path.exists():
            lines += [path.read_text().rstrip(), ""]
    out = docs / "PERFORMANCE.md"
    out.write_text("\n".join(lines))
    return out


if __name__ == "__main__":
    print(write_report(BENCH / "results", BENCH.parent / "docs"))
