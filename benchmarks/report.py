"""Markdown tables from the results dict (as written to results.json).

Run on its own to re-render a saved run: ``python benchmarks/report.py benchmarks/results.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = list[str]
#: "Nearly doubles": the least speed-up from a second worker that still counts.
NEARLY_DOUBLE = 1.8
#: CPU used by other processes during a measurement above which the run is flagged as noisy.
NOISY_CORES = 0.15


def table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def others(m: dict[str, Any]) -> str:
    """CPU others took; /proc tick accounting is good to about 0.1 core, so small negatives
    (our processes charged for a little more than the cores saw) show as zero."""
    return f"{max(m['interfering_cores'], 0.0):.2f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets_table(r: dict[str, Any]) -> str:
    """The issue's targets, each beside what this run measured."""
    tp, lat = r["pinned"]["throughput"], r["pinned"]["latency"]
    chat, stream = tp["chat"], tp["stream"]
    chat_lat, ttft = lat["chat"]["total"], lat["stream"]["ttft"]
    rss = peak_rss_mb(r)
    rows: list[Row] = [
        [
            "Non-stream chat throughput, gateway on 1 core",
            "≥ 2,000 req/s",
            f"{chat['gateway']['rate']:,.0f} req/s",
            f"{chat['mock']['rate']:,.0f} req/s",
            verdict(chat["gateway"]["rate"] >= 2000),
        ],
        [
            "Gateway CPU per non-stream request",
            "≤ 0.5 ms",
            f"{chat['gateway']['gateway_cpu_ms']:.3f} ms",
            f"{chat['mock']['mock_cpu_ms']:.3f} ms (mock's own)",
            verdict(chat["gateway"]["gateway_cpu_ms"] <= 0.5),
        ],
        [
            f"{r['settings']['chunks']}-chunk stream throughput, gateway on 1 core",
            "≥ 1,000 streams/s",
            f"{stream['gateway']['rate']:,.0f} streams/s",
            f"{stream['mock']['rate']:,.0f} streams/s",
            verdict(stream["gateway"]["rate"] >= 1000),
        ],
        [
            "Gateway CPU per stream",
            "≤ 1.0 ms (implied)",
            f"{stream['gateway']['gateway_cpu_ms']:.3f} ms",
            f"{stream['mock']['mock_cpu_ms']:.3f} ms (mock's own)",
            verdict(stream["gateway"]["gateway_cpu_ms"] <= 1.0),
        ],
        [
            "Added latency, non-stream, concurrency 1 (p50)",
            "≤ 0.7 ms",
            f"+{chat_lat['added_p50_ms']:.3f} ms ({chat_lat['gateway_p50_ms']:.3f} ms)",
            f"{chat_lat['mock_p50_ms']:.3f} ms",
            verdict(chat_lat["added_p50_ms"] <= 0.7),
        ],
        [
            "Added time to first token, concurrency 1 (p50)",
            "≤ 1 ms",
            f"+{ttft['added_p50_ms']:.3f} ms ({ttft['gateway_p50_ms']:.3f} ms)",
            f"{ttft['mock_p50_ms']:.3f} ms",
            verdict(ttft["added_p50_ms"] <= 1.0),
        ],
        [
            "Max RSS per gateway process under load",
            "≤ 150 MB",
            f"{rss:.0f} MB",
            "",
            verdict(rss <= 150),
        ],
    ]
    scaling = r.get("scaling")
    if scaling:
        speedup = scaling["projected_speedup"]["chat"]
        rows.append(
            [
                "`--workers 2` vs 1, non-stream (projected to 2 dedicated cores)",
                f"nearly 2x (≥ {NEARLY_DOUBLE}x)",
                f"{speedup:.2f}x (measured on the shared box: "
                f"{scaling['shared_speedup']['chat']:.2f}x)",
                "",
                verdict(speedup >= NEARLY_DOUBLE),
            ]
        )
    return table(["Metric", "Target", "Gateway", "Bare mock", "Verdict"], rows)


def peak_rss_mb(r: dict[str, Any]) -> float:
    """The largest peak RSS of any serving gateway process in any configuration."""
    configs = [r["pinned"]["rss"]]
    if r.get("scaling"):
        configs += [r["scaling"][name]["rss"] for name in ("w1", "w2")]
    return max(float(p["under_load_mb"]) for rss in configs for p in rss if p["role"] == "worker")


def throughput_table(r: dict[str, Any]) -> str:
    rows = []
    for kind, runs in r["pinned"]["throughput"].items():
        for side in ("mock", "gateway"):
            rows.append(throughput_row(f"{kind} → {side}", runs[side], gateway=side == "gateway"))
    return table(THROUGHPUT_HEADER, rows)


THROUGHPUT_HEADER = [
    "Load",
    "Rate /s",
    "Errors",
    "Client p50 / p99 ms",
    "Gateway CPU ms/req",
    "Gateway cores",
    "Mock CPU ms/req",
    "Mock cores",
    "wrk cores",
    "Others in the way (cores)",
]


def throughput_row(label: str, t: dict[str, Any], *, gateway: bool) -> Row:
    dash = "—"
    return [
        label,
        f"{t['rate']:,.0f}",
        str(t["errors"]),
        f"{t['client_p50_ms']:.2f} / {t['client_p99_ms']:.2f}",
        f"{t['gateway_cpu_ms']:.3f}" if gateway else dash,
        f"{t['gateway_cores']:.2f}" if gateway else dash,
        f"{t['mock_cpu_ms']:.3f}",
        f"{t['mock_cores']:.2f}",
        f"{t['wrk_cores']:.2f}",
        others(t),
    ]


def latency_table(r: dict[str, Any]) -> str:
    rows = []
    for kind, metrics in r["pinned"]["latency"].items():
        for metric, m in metrics.items():
            label = f"{kind} {'first content chunk' if metric == 'ttft' else 'whole response'}"
            rows.append(
                [
                    label,
                    str(m["pairs"]),
                    f"{m['mock_p50_ms']:.3f} / {m['mock_p90_ms']:.3f} / {m['mock_p99_ms']:.3f}",
                    f"{m['gateway_p50_ms']:.3f} / {m['gateway_p90_ms']:.3f} / "
                    f"{m['gateway_p99_ms']:.3f}",
                    f"+{m['added_p50_ms']:.3f} / +{m['added_p90_ms']:.3f} / "
                    f"+{m['added_p99_ms']:.3f}",
                    others(m),
                    f"{m.get('loop_wait_us_per_request', float('nan')):.0f}",
                ]
            )
    header = [
        "Request",
        "Pairs",
        "Mock p50/p90/p99 ms",
        "Gateway p50/p90/p99 ms",
        "Added ms",
        "Others in the way (cores)",
        "Gateway waited for CPU (µs/req)",
    ]
    return table(header, rows)


def scaling_table(r: dict[str, Any]) -> str:
    s = r["scaling"]
    rows = []
    for name in ("w1", "w2"):
        for kind in ("chat", "stream"):
            t = s[name][kind]
            shares = " / ".join(f"{share:.0%}" for share in t["worker_shares"])
            rows.append(
                [
                    f"--workers {name[1]}, {kind}",
                    f"{t['rate']:,.0f}",
                    f"{t['gateway_cores']:.2f}",
                    f"{t['rate'] / max(t['gateway_cores'], 1e-9):,.0f}",
                    shares,
                    f"{t['mock_cores'] + t['wrk_cores']:.2f}",
                    others(t),
                ]
            )
    header = [
        "Gateway (all on cores 0,1)",
        "Rate /s",
        "Gateway cores",
        "Rate per gateway core",
        "CPU split by worker",
        "Mock + wrk cores",
        "Others in the way (cores)",
    ]
    summary = ", ".join(
        f"{kind}: measured {s['shared_speedup'][kind]:.2f}x, per-core efficiency "
        f"{s['efficiency'][kind]:.0%}, projected {s['projected_speedup'][kind]:.2f}x"
        for kind in ("chat", "stream")
    )
    return table(header, rows) + f"\n\n`--workers 2` over `--workers 1`: {summary}."


def rss_table(r: dict[str, Any]) -> str:
    configs: list[tuple[str, list[dict[str, Any]]]] = [("1 worker, core 0", r["pinned"]["rss"])]
    if r.get("scaling"):
        configs += [
            ("1 worker, cores 0,1", r["scaling"]["w1"]["rss"]),
            ("2 workers, cores 0,1", r["scaling"]["w2"]["rss"]),
        ]
    rows = [
        [config, str(p["pid"]), p["role"], f"{p['under_load_mb']:.1f}", f"{p['peak_mb']:.1f}"]
        for config, procs in configs
        for p in procs
    ]
    header = ["Configuration", "PID", "Role", "Max RSS under load MB", "VmHWM (since start) MB"]
    return table(header, rows)


def usage_line(r: dict[str, Any]) -> str:
    u = r["usage_rows"]
    by_status = ", ".join(f"{status}: {n:,}" for status, n in u["by_status"].items())
    outcome = "all recorded" if u["ok"] else "**rows missing**"
    return (
        f"Usage rows written for the benchmark user: {u['rows']:,} ({by_status}; "
        f"{u['estimated']:,} with estimated tokens) for {u['completed']:,} requests the "
        f"clients completed through the gateway: {outcome}."
    )


def profile_tables(profile: dict[str, Any]) -> str:
    parts = []
    for kind, p in profile.items():
        parts.append(f"#### {kind}: {p['samples']:,} samples")
        parts.append(table(["Self CPU by package", "%"], share_rows(p["self_packages"][:10])))
        parts.append(table(["Self CPU by function", "%"], share_rows(p["self_functions"][:20])))
        parts.append(
            table(["hepai_server function (inclusive)", "%"], share_rows(p["inclusive_own"][:15]))
        )
    return "\n\n".join(parts)


def share_rows(shares: list[list[Any]]) -> list[Row]:
    return [[f"`{name}`", f"{share:.1f}"] for name, share in shares]


def measurements(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measurement that recorded the CPU used by other processes meanwhile."""
    found = [run for runs in r["pinned"]["throughput"].values() for run in runs.values()]
    found += [m for metrics in r["pinned"]["latency"].values() for m in metrics.values()]
    if r.get("scaling"):
        found += [r["scaling"][name][kind] for name in ("w1", "w2") for kind in ("chat", "stream")]
    return found


def patch_warning(r: dict[str, Any]) -> str:
    patches = r["settings"].get("patch")
    if not patches:
        return ""
    return (
        f"> **Patched gateway**: loaded with {', '.join(patches)} from benchmarks/experiments/; "
        "these numbers are a what-if, not the gateway as shipped.\n\n"
    )


def noise_warning(r: dict[str, Any]) -> str:
    """Say so when something else on the machine used CPU during a measurement."""
    noisy = [m for m in measurements(r) if m["interfering_cores"] > NOISY_CORES]
    if not noisy:
        return ""
    worst = max(noisy, key=lambda m: m["interfering_cores"])
    others = ", ".join(f"{name} {cores:.2f}" for name, cores in worst["top_others"].items())
    return (
        f"> **Noisy run**: processes this benchmark did not start used more than "
        f"{NOISY_CORES} cores during {len(noisy)} of {len(measurements(r))} measurements "
        f"(up to {worst['interfering_cores']:.2f} cores, in {worst['label']}; the busiest that "
        f"lived through it: {others or 'none'}). Those numbers may understate the gateway.\n\n"
    )


def render(r: dict[str, Any]) -> str:
    sections: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("Targets", targets_table),
        ("Throughput (gateway pinned to core 0; mock and wrk on core 1)", throughput_table),
        ("Latency at concurrency 1 (alternating pairs)", latency_table),
    ]
    if r.get("scaling"):
        sections.append(("Workers (everything shares cores 0,1)", scaling_table))
    sections.append(("Memory", rss_table))
    text = "\n\n".join(f"### {title}\n\n{render_one(r)}" for title, render_one in sections)
    text = patch_warning(r) + noise_warning(r) + text
    text += "\n\n" + usage_line(r)
    if r.get("profile"):
        text += "\n\n### Gateway CPU profile (py-spy, under load)\n\n" + profile_tables(
            r["profile"]
        )
    return text


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("results.json"))
    print(render(json.loads(path.read_text())))
