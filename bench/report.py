"""Results as a Markdown table per workload, the targets as measured ratios, and one PNG chart
per workload (matplotlib, imported only when charts are drawn)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["charts", "markdown", "targets"]

OURS = "trio-djws"
CHANNELS = ["channels-daphne", "channels-uvicorn", "channels-hypercorn"]

_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "echo": [
        ("rate", "round trips/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("lost", "lost"),
        ("rates_all_runs", "every run"),
    ],
    "pipelined": [("rate", "messages/s"), ("lost", "lost"), ("rates_all_runs", "every run")],
    "http": [
        ("rate", "requests/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("errors", "errors"),
        ("lost", "lost"),
    ],
    "broadcast": [
        ("receivers", "receivers"),
        ("rate_param", "R msg/s"),
        ("offered_per_s", "offered/s"),
        ("deliveries_per_s", "deliveries/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("lost", "lost"),
        ("out_of_order", "out of order"),
        ("pending", "late (undelivered at drain end)"),
        ("closed", "close codes"),
    ],
    "idle": [
        ("connections", "connections"),
        ("handshakes_per_s", "handshakes/s"),
        ("handshakes_per_cpu_s", "handshakes per server CPU-s"),
        ("rss_per_connection_kib", "RSS KiB/conn"),
        ("echo_p99_ms", "echo p99 ms (50 clients)"),
        ("echo_rate", "echo round trips/s"),
        ("dropped_while_held", "dropped"),
    ],
    "storm": [
        ("clients", "clients"),
        ("missed", "missed each"),
        ("recovered", "recovered"),
        ("all_recovered_s", "all recovered s"),
        ("p50_recovered_s", "p50 s"),
        ("server_cpu_s", "server CPU s"),
        ("lost", "lost"),
        ("out_of_order", "out of order or twice"),
    ],
    "chatroom": [
        ("db", "database"),
        ("users", "users"),
        ("messages_per_s", "messages/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("lost", "lost"),
    ],
}
_CPU = [
    ("per_server_cpu_s", "per server CPU-s"),
    ("server_cpu_pct", "server CPU %"),
    ("client_cpu_pct", "client CPU %"),
    ("loadavg", "load"),
]


def _kind(workload: str) -> str:
    if workload.startswith("broadcast"):
        return "broadcast"
    if workload.startswith("chatroom"):
        return "chatroom"
    if workload.startswith("storm"):
        return "storm"
    return workload


def _value(record: dict[str, Any], key: str) -> str:
    if key == "handshakes_per_cpu_s":
        value = _handshakes_per_cpu(record)
    elif key == "rate_param":
        value = record["params"].get("rate", record.get("rate"))
    elif key == "db":
        value = record["params"].get("db")
    elif key in ("server_cpu_pct", "client_cpu_pct") and record["workload"] == "idle":
        value = record.get(f"handshake_{key}")
    else:
        value = record.get(key)
    if isinstance(value, list):
        return " ".join(f"{v:,.0f}" if isinstance(v, float) else str(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def _handshakes_per_cpu(record: dict[str, Any]) -> float | None:
    cpu = record.get("handshake_server_cpu_pct")
    rate = record.get("handshakes_per_s")
    if not cpu or not isinstance(rate, int | float):
        return None
    return round(rate / (cpu / 100), 1)


def _best(records: list[dict[str, Any]], workload: str, key: str, servers: list[str], **match: Any):
    found = [
        r
        for r in records
        if r["workload"] == workload
        and r["server"] in servers
        and isinstance(r.get(key), int | float)
        and all(r["params"].get(k) == v or r.get(k) == v for k, v in match.items())
    ]
    return max(found, key=lambda r: r[key]) if found else None


def targets(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The issue's targets as (target, measured, verdict) rows, from one run's records."""
    rows: list[tuple[str, str, str]] = []

    def get(server: str, workload: str, key: str, **match: Any) -> float | None:
        r = _best(records, workload, key, [server], **match)
        return None if r is None else float(r[key])

    def ratio(label: str, ours: float | None, theirs: float | None, need: float) -> None:
        if ours is None or theirs is None or theirs == 0:
            rows.append((label, "not measured", "-"))
            return
        value = ours / theirs
        verdict = "met" if value >= need else "not met"
        rows.append((label, f"{ours:,.0f} vs {theirs:,.0f} = {value:.2f}x", verdict))

    ratio(
        "echo: framework overhead small (issue: about 0.94 x the bare ASGI app on Hypercorn "
        "trio), per server CPU-second",
        get(OURS, "echo", "per_server_cpu_s"),
        get("bare-hypercorn-trio", "echo", "per_server_cpu_s"),
        0.94,
    )
    for other in ("channels-daphne", "channels-hypercorn"):
        ratio(
            f"echo: {OURS} ahead of {other} (≥ 1x)",
            get(OURS, "echo", "rate"),
            get(other, "echo", "rate"),
            1.0,
        )
        ratio(
            f"echo, per server CPU-second: {OURS} ahead of {other} (≥ 1x)",
            get(OURS, "echo", "per_server_cpu_s"),
            get(other, "echo", "per_server_cpu_s"),
            1.0,
        )
    best = _best(records, "broadcast", "deliveries_per_s", CHANNELS, receivers=1000, rate=50)
    ratio(
        "broadcast 1,000 x R=50: deliveries/s ≥ 3 x best Channels"
        + (f" ({best['server']})" if best else ""),
        get(OURS, "broadcast", "deliveries_per_s", receivers=1000, rate=50),
        None if best is None else float(best["deliveries_per_s"]),
        3.0,
    )
    for r in records:
        if r["workload"] == "idle":
            r.setdefault("handshakes_per_cpu_s", _handshakes_per_cpu(r))
    best = _best(records, "broadcast", "per_server_cpu_s", CHANNELS, receivers=1000, rate=50)
    ratio(
        "broadcast 1,000 x R=50, per server CPU-second: ≥ 3 x best Channels"
        + (f" ({best['server']})" if best else ""),
        get(OURS, "broadcast", "per_server_cpu_s", receivers=1000, rate=50),
        None if best is None else float(best["per_server_cpu_s"]),
        3.0,
    )
    lost = [
        r for r in records if r["server"] == OURS and r["workload"] == "broadcast" and "lost" in r
    ]
    if lost:
        total = sum(r["lost"] for r in lost)
        rows.append(("broadcast: 0 lost (trio-djws, every run)", f"{total} lost", _ok(total == 0)))
    p99 = get(OURS, "broadcast", "p99_ms", receivers=100, rate=5)
    rows.append(
        (
            "broadcast 100 x R=5: p99 < 50 ms",
            _fmt(p99, "ms"),
            _ok(p99 is not None and p99 < 50, p99 is not None),
        )
    )
    p99 = get(OURS, "broadcast", "p99_ms", receivers=1000, rate=1)
    rows.append(
        (
            "broadcast 1,000 x R=1: p99 < 400 ms",
            _fmt(p99, "ms"),
            _ok(p99 is not None and p99 < 400, p99 is not None),
        )
    )
    ours = get(OURS, "idle", "rss_per_connection_kib", connections=10000)
    theirs = [get(s, "idle", "rss_per_connection_kib", connections=10000) for s in CHANNELS]
    known = [t for t in theirs if t is not None]
    rows.append(
        (
            "idle 10k: RSS/conn below Channels' (aim ≤ 25 KiB)",
            f"{_fmt(ours, 'KiB')} vs Channels min {_fmt(min(known) if known else None, 'KiB')}",
            _ok(ours is not None and bool(known) and ours < min(known), ours is not None),
        )
    )
    best = _best(records, "idle", "handshakes_per_s", CHANNELS, connections=10000)
    ratio(
        "handshakes/s ≥ 2 x Channels (best, 10k run)",
        get(OURS, "idle", "handshakes_per_s", connections=10000),
        None if best is None else float(best["handshakes_per_s"]),
        2.0,
    )
    for count in (5000, 10000):
        best = _best(records, "idle", "handshakes_per_cpu_s", CHANNELS, connections=count)
        ratio(
            f"handshakes per server CPU-second ({count:,} run) ≥ 2 x best Channels"
            + (f" ({best['server']})" if best else ""),
            get(OURS, "idle", "handshakes_per_cpu_s", connections=count),
            None if best is None else float(best["handshakes_per_cpu_s"]),
            2.0,
        )
    p99 = get(OURS, "idle", "echo_p99_ms", connections=10000)
    rows.append(
        (
            "10,000 idle held + 50 clients echo: p99 < 50 ms",
            _fmt(p99, "ms"),
            _ok(p99 is not None and p99 < 50, p99 is not None),
        )
    )
    ratio(
        "broadcast-1000 with group history vs without, same run (≥ 0.8x deliveries/s)",
        get(OURS, "broadcast-history-on", "deliveries_per_s", receivers=1000),
        get(OURS, "broadcast-history-off", "deliveries_per_s", receivers=1000),
        0.8,
    )
    history = [r for r in records if r["workload"].startswith("broadcast-history") and "lost" in r]
    if history:
        total = sum(r["lost"] + r.get("out_of_order", 0) for r in history)
        rows.append(
            (
                "broadcast with history: 0 lost, order kept",
                f"{total} lost or out of order",
                _ok(total == 0),
            )
        )
    storm = _best(records, "storm", "recovered", [OURS])
    if storm is not None:
        rows.append(
            (
                f"reconnect storm: {storm['clients']:,} clients rejoin with {storm['missed']} "
                "missed each: all recovered, 0 lost",
                f"{storm['recovered']:,} recovered in {storm['all_recovered_s']} s, "
                f"{storm['server_cpu_s']} server CPU-s, {storm['lost']} lost",
                _ok(storm["recovered"] == storm["clients"] and storm["lost"] == 0),
            )
        )
    standalone = "trio-djws-standalone-websockets"
    ratio(
        "standalone (websockets engine): echo ≥ 2 x Channels on uvicorn",
        get(standalone, "echo", "rate"),
        get("channels-uvicorn", "echo", "rate"),
        2.0,
    )
    best = _best(records, "broadcast", "deliveries_per_s", CHANNELS, receivers=1000, rate=50)
    ratio(
        "standalone (websockets engine): broadcast-1000 ≥ 5 x Channels",
        get(standalone, "broadcast", "deliveries_per_s", receivers=1000, rate=50),
        None if best is None else float(best["deliveries_per_s"]),
        5.0,
    )
    _main_path_targets(records, rows, get, ratio)
    _metrics_targets(rows, get, ratio)
    return rows


def _metrics_targets(
    rows: list[tuple[str, str, str]],
    get: Callable[..., float | None],
    ratio: Callable[[str, float | None, float | None, float], None],
) -> None:
    # The Prometheus metrics on (--metrics-bind) against off, same run: >= 0.9 x.
    for on, off, label in (
        ("trio-djws-metrics", OURS, "serve"),
        (
            "trio-djws-standalone-websockets-metrics",
            "trio-djws-standalone-websockets",
            "websockets engine",
        ),
    ):
        ratio(
            f"{label}, metrics on: echo ≥ 0.9 x off",
            get(on, "echo", "rate"),
            get(off, "echo", "rate"),
            0.9,
        )
        ratio(
            f"{label}, metrics on: echo per server CPU-second ≥ 0.9 x off",
            get(on, "echo", "per_server_cpu_s"),
            get(off, "echo", "per_server_cpu_s"),
            0.9,
        )
        ratio(
            f"{label}, metrics on: broadcast-1000 at R=50 ≥ 0.9 x off",
            get(on, "broadcast", "deliveries_per_s", receivers=1000, rate=50),
            get(off, "broadcast", "deliveries_per_s", receivers=1000, rate=50),
            0.9,
        )
        ratio(
            f"{label}, metrics on: broadcast-1000 at R=50 per server CPU-second ≥ 0.9 x off",
            get(on, "broadcast", "per_server_cpu_s", receivers=1000, rate=50),
            get(off, "broadcast", "per_server_cpu_s", receivers=1000, rate=50),
            0.9,
        )


def _main_path_targets(
    records: list[dict[str, Any]],
    rows: list[tuple[str, str, str]],
    get: Callable[..., float | None],
    ratio: Callable[[str, float | None, float | None, float], None],
) -> None:
    # manage.py serve with WebSocket upgrades on its own engine: its targets, added to rows
    # (ratio() adds to the same list).
    standalone = "trio-djws-standalone-websockets"
    ratio(
        "serve: echo ≥ 2 x Channels on uvicorn",
        get(OURS, "echo", "rate"),
        get("channels-uvicorn", "echo", "rate"),
        2.0,
    )
    ratio(
        "serve: echo ≥ 0.9 x the standalone websockets engine",
        get(OURS, "echo", "rate"),
        get(standalone, "echo", "rate"),
        0.9,
    )
    for other, need in (("channels-uvicorn", 2.0), (standalone, 0.9)):
        ratio(
            f"serve: echo per server CPU-second ≥ {need} x {other}",
            get(OURS, "echo", "per_server_cpu_s"),
            get(other, "echo", "per_server_cpu_s"),
            need,
        )
    best = _best(records, "broadcast", "deliveries_per_s", CHANNELS, receivers=1000, rate=50)
    ratio(
        "serve: broadcast-1000 at R=50 ≥ 10 x best Channels"
        + (f" ({best['server']})" if best else ""),
        get(OURS, "broadcast", "deliveries_per_s", receivers=1000, rate=50),
        None if best is None else float(best["deliveries_per_s"]),
        10.0,
    )
    ours = get(OURS, "idle", "rss_per_connection_kib", connections=5000)
    theirs = get(standalone, "idle", "rss_per_connection_kib", connections=5000)
    rows.append(
        (
            "serve: idle RSS/conn (5k) ≤ the standalone websockets engine's",
            f"{_fmt(ours, 'KiB')} vs {_fmt(theirs, 'KiB')}",
            _ok(ours is not None and theirs is not None and ours <= theirs, ours is not None),
        )
    )
    best = _best(records, "idle", "handshakes_per_s", CHANNELS, connections=5000)
    ratio(
        "serve: handshakes/s at 5,000 held ≥ 3 x best Channels"
        + (f" ({best['server']})" if best else ""),
        get(OURS, "idle", "handshakes_per_s", connections=5000),
        None if best is None else float(best["handshakes_per_s"]),
        3.0,
    )
    ratio(
        "serve: HTTP requests/s within noise of plain Hypercorn (≥ 0.9 x)",
        get(OURS, "http", "rate"),
        get("trio-djws-hypercorn", "http", "rate"),
        0.9,
    )


def _ok(flag: bool, measured: bool = True) -> str:
    if not measured:
        return "-"
    return "met" if flag else "not met"


def _fmt(value: float | None, unit: str) -> str:
    return "not measured" if value is None else f"{value:,.1f} {unit}"


def markdown(meta: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The results as Markdown: a table per workload, then the targets."""
    out = [
        f"# Benchmark results ({meta['date']})",
        "",
        f"Command: `{meta['command']}`; {meta['cpus']} cores, server on core 0 and load "
        f"generator on core 1 (taskset), loopback; load average at end {meta['loadavg_at_end']}; "
        f"took {meta['duration_s']} s. Broadcast runs use WEBSOCKET_SEND_QUEUE_SIZE = "
        f"{meta['broadcast_send_queue_size']} (Channels: in-memory layer capacity the same). "
        "CPU is % of one core over the measured phase (idle: over the handshakes).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
    ]
    for note in meta["notes"]:
        out.append(f"- Note: {note}")
    if meta["notes"]:
        out.append("")
    workloads = list(dict.fromkeys(r["workload"] for r in records))
    for workload in workloads:
        rows = [r for r in records if r["workload"] == workload]
        columns = _COLUMNS[_kind(workload)] + _CPU
        if workload.startswith("broadcast-redis"):
            columns = [*columns[:-1], ("redis_cpu_pct", "Redis CPU %"), columns[-1]]
        out.append(f"## {workload}")
        out.append("")
        out.append("| server | " + " | ".join(title for _, title in columns) + " |")
        out.append("|---" * (len(columns) + 1) + "|")
        for r in rows:
            if "error" in r:
                out.append(f"| {r['server']} | error: {str(r['error'])[-200:]!r} |")
                continue
            values = [_value(r, key) for key, _ in columns]
            out.append(f"| {r['server']} | " + " | ".join(values) + " |")
        out.append("")
    if not meta.get("smoke"):
        out += ["## Targets", "", "| target | measured (same run) | verdict |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in targets(records)]
        out.append("")
    return "\n".join(out)


def charts(records: list[dict[str, Any]], out: Path) -> None:
    """One PNG per workload: the headline figure of each server (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plans = {
        "echo": ("echo", "rate", "round trips/s", None),
        "pipelined": ("pipelined", "rate", "messages/s", None),
        "idle": (
            "idle",
            "rss_per_connection_kib",
            "server RSS per connection (KiB)",
            "connections",
        ),
        "handshakes": ("idle", "handshakes_per_s", "handshakes/s (32 in flight)", "connections"),
        "broadcast": ("broadcast", "deliveries_per_s", "deliveries/s", "receivers+rate"),
    }
    for name, (workload, key, label, group) in plans.items():
        rows = [
            r for r in records if r["workload"] == workload and isinstance(r.get(key), int | float)
        ]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(9, 4.5))
        if group is None:
            ax.bar([r["server"] for r in rows], [r[key] for r in rows], color="tab:blue")
        else:
            servers = list(dict.fromkeys(r["server"] for r in rows))

            def group_of(r: dict[str, Any], group: str = group) -> str:
                if group == "receivers+rate":
                    return f"{r['receivers']} x R={r['rate']}"
                return f"{r['params'][group]:,} conns"

            groups = list(dict.fromkeys(group_of(r) for r in rows))
            width = 0.8 / max(len(servers), 1)
            for i, server in enumerate(servers):
                xs, ys = [], []
                for j, g in enumerate(groups):
                    for r in rows:
                        if r["server"] == server and group_of(r) == g:
                            xs.append(j + i * width)
                            ys.append(r[key])
                ax.bar(xs, ys, width, label=server)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups)
            ax.legend(fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(f"{name} (same run; server core 0, client core 1)")
        ax.tick_params(axis="x", labelsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=90)
        plt.close(fig)
