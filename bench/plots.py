"""Plots for docs/benchmarks.md from the JSON in bench/results/ (whatever is there).

.venv/bin/python bench/plots.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "benchmarks"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def bars(ax: Any, labels: list[str], values: list[float], unit: str) -> None:
    shown = ax.bar(labels, values, color=["#5f6368", "#1a73e8", "#0d652d"][: len(labels)])
    ax.bar_label(shown, labels=[f"{v:,.0f}" for v in values], padding=2)
    ax.set_ylabel(unit)
    ax.spines[["top", "right"]].set_visible(False)


def event_path(data: dict[str, Any]) -> None:
    names = [n for n in ("passthrough", "faust_agent", "quix", "triggers") if n in data]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bars(left, names, [data[n]["throughput_events_per_s"] for n in names], "events/s")
    left.set_title("Throughput, Error Handler rule (one worker)")
    width = 0.38
    xs = range(len(names))
    p50 = [data[n]["latency_ms"]["p50"] for n in names]
    p99 = [data[n]["latency_ms"]["p99"] for n in names]
    right.bar([x - width / 2 for x in xs], p50, width, label="p50", color="#1a73e8")
    right.bar([x + width / 2 for x in xs], p99, width, label="p99", color="#a50e0e")
    right.set_xticks(list(xs), names)
    right.set_ylabel("ms, event produced → command on agent-runs")
    right.set_title("End-to-end latency at 200 events/s")
    right.legend(frameon=False)
    right.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(OUT / "event_path.png", dpi=110)


def scaling(data: dict[str, Any] | None, matching: dict[str, Any] | None) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if matching:
        rows = matching["rows"]
        ax.plot(
            [r["triggers"] for r in rows],
            [1e6 / r["indexed_us"] for r in rows],
            marker="o",
            label="matching alone, indexed (events/s, in-process)",
        )
        ax.plot(
            [r["triggers"] for r in rows],
            [1e6 / r["scan_us"] for r in rows],
            marker="o",
            linestyle="--",
            label="matching alone, linear scan",
        )
    if data and data.get("rows"):
        rows = data["rows"]
        ax.plot(
            [r["other_triggers"] for r in rows],
            [r["throughput_events_per_s"] for r in rows],
            marker="s",
            label="worker end to end (events/s)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("active event triggers")
    ax.set_ylabel("events/s")
    ax.set_title("Throughput against the number of triggers")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(OUT / "scaling.png", dpi=110)


def gateway(data: dict[str, Any]) -> None:
    loads = data["loads"]
    fig, axes = plt.subplots(1, len(loads), figsize=(4.5 * len(loads), 3.6))
    names = ["bare_aiohttp", "gateway_1", "gateway_2"]
    for ax, row in zip(axes, loads, strict=True):
        bars(ax, names, [row[n]["requests_per_s"] for n in names], "requests/s")
        ax.set_title(f"{row['connections']} connections, {row['body_bytes']} B bodies")
    fig.tight_layout()
    fig.savefig(OUT / "gateway.png", dpi=110)


def worker_scale(data: dict[str, Any]) -> None:
    """Recovery and memory with 1M window keys; schedule lateness with 100k schedules."""
    panels = [k for k in ("window_state", "scheduler") if k in data]
    fig, axes = plt.subplots(1, 2 * len(panels), figsize=(4.2 * 2 * len(panels), 3.6))
    axes = list(axes)
    if "window_state" in data:
        state = data["window_state"]
        names = [n for n in ("empty", "seeded", "restarted") if n in state]
        keys = f"{state['seeded']['keys']:,} keys"
        label = {"empty": "no keys", "seeded": keys, "restarted": f"{keys},\nrestarted"}
        labels = [label[n] for n in names]
        ax = axes.pop(0)
        bars(ax, labels, [state[n]["start_to_ready_seconds"] for n in names], "s")
        ax.set_title("Worker start to Ready (restore)")
        ax = axes.pop(0)
        bars(ax, labels, [state[n]["rss_bytes"] / 2**20 for n in names], "MiB")
        ax.set_title("Worker resident memory")
    if "scheduler" in data:
        sched = data["scheduler"]
        names = ["baseline", "many"]
        labels = [f"{sched[n]['schedules']:,} schedules" for n in names]
        for key in ("p50", "p99"):
            ax = axes.pop(0)
            bars(ax, labels, [sched[n]["lateness_ms"][key] for n in names], "ms")
            ax.set_title(f"Schedule fire lateness, {key}")
    fig.tight_layout()
    fig.savefig(OUT / "worker_scale.png", dpi=110)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if (data := load("event_path")) is not None:
        event_path(data)
    scaling(load("scaling"), load("matching"))
    if (data := load("gateway")) is not None:
        gateway(data)
    if (data := load("worker_scale")) is not None:
        worker_scale(data)
    print(f"plots in {OUT}")


if __name__ == "__main__":
    main()
