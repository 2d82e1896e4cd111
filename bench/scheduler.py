"""Scheduler tick cost with many schedules: the due-index against a scan of them all.

100k schedule triggers (cron at a random minute and second, so a few are due each
second) are put in the DueIndex; then one hour of one-second ticks is run, and the
cost per tick is compared, in the same run, with a naive scheduler that asks every
schedule "are you due?" on each tick. Figures are ratios; the machine is shared.

    .venv/bin/python bench/scheduler.py       # or: make bench
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from processor.definitions.model import ScheduleSpec
from processor.matching.schedules import DueIndex, Schedule, first_pending

SCHEDULES = 100_000
TICKS = 600
NAIVE_TICKS = 5
START = 1_798_761_600.0  # 2027-01-01T00:00:00Z


def indexed_cost(size: int, rng: random.Random) -> tuple[float, float]:
    """(us per tick, us per fire) over TICKS one-second ticks with `size` schedules."""
    index = DueIndex()
    for i in range(size):
        index.put(
            Schedule(
                f"t{i}", ScheduleSpec(cron=f"{rng.randrange(60)} {rng.randrange(60)} * * * *")
            ),
            START,
        )
    fires = 0
    started = time.perf_counter()
    for second in range(1, TICKS + 1):
        for _, due in index.pop_due(START + second - 1, START + second):
            fires += len(due)
    elapsed = time.perf_counter() - started
    return elapsed / TICKS * 1e6, elapsed / max(fires, 1) * 1e6


def main() -> None:
    rng = random.Random(11)
    per_size = {size: indexed_cost(size, rng) for size in (10_000, 100_000)}
    for size, (tick_us, fire_us) in per_size.items():
        print(
            f"{size:>7} schedules: {tick_us:8.0f} us/tick, {fire_us:5.0f} us per fire",
            file=sys.stderr,
        )
    schedules = [
        Schedule(f"t{i}", ScheduleSpec(cron=f"{rng.randrange(60)} {rng.randrange(60)} * * * *"))
        for i in range(SCHEDULES)
    ]
    built = time.perf_counter()
    index = DueIndex()
    for schedule in schedules:
        index.put(schedule, START)
    build_seconds = time.perf_counter() - built

    fires = 0
    started = time.perf_counter()
    for second in range(1, TICKS + 1):
        for _, due in index.pop_due(START + second - 1, START + second):
            fires += len(due)
    indexed = (time.perf_counter() - started) / TICKS

    pending = {s.trigger_id: first_pending(s, START) for s in schedules}
    started = time.perf_counter()
    for second in range(1, NAIVE_TICKS + 1):
        tick = START + second
        for schedule in schedules:
            if (due := pending[schedule.trigger_id]) is not None and due <= tick:
                pending[schedule.trigger_id] = first_pending(schedule, tick)
    naive = (time.perf_counter() - started) / NAIVE_TICKS

    result = {
        "schedules": SCHEDULES,
        "ticks": TICKS,
        "fires": fires,
        "fires_per_tick": fires / TICKS,
        "index_build_seconds": build_seconds,
        "indexed_tick_us": indexed * 1e6,
        "naive_scan_tick_us": naive * 1e6,
        "naive_vs_indexed": naive / indexed,
        "us_per_fire_10k_schedules": per_size[10_000][1],
        "us_per_fire_100k_schedules": per_size[100_000][1],
    }
    print(
        f"{SCHEDULES} schedules, {fires / TICKS:.1f} fires/tick: "
        f"indexed {indexed * 1e6:.0f} us/tick, "
        f"naive scan {naive * 1e6:.0f} us/tick ({naive / indexed:.0f}x)",
        file=sys.stderr,
    )
    (Path(__file__).parent / "results" / "scheduler.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
