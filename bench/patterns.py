"""CPU of pattern state in process, without a broker: a busy sequence key, and the tick.

Two costs a platform team's sequence triggers meet and the errors mix never shows:

- `sequence_*_us`: one key of a `followed_by` trigger with 1,000 As waiting (a user who
  fails to log in all day), per A and per B, through the worker's window cache
  (`WindowPartitions.observe`); `absence_a_us`: an A of a `not_followed_by` key with
  1,000 As waiting (each event sets the key's next deadline).
- `tick_*_ms`: the worker checks absence and debounce deadlines once a second, inside
  its loop (events wait meanwhile). With `--keys` keys of a `not_followed_by` trigger
  waiting (an order not yet paid, keyed by order id): what a new owner's restore of
  them costs in process (`restore_ms`, the records already read), what its first tick
  costs and what each one after it costs when nothing is due.

    .venv/bin/python bench/patterns.py [--keys 200000] [--baseline DIR]

`--baseline DIR` runs the same measurements, in the same run, on the code of DIR (a
checkout of another commit, e.g. `git worktree add /tmp/old <commit>`), and gives each
figure as a ratio to it. Writes bench/results/patterns.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

AS_WAITING = 1_000
EVENTS = 20_000


def measure(keys: int) -> dict[str, float]:
    """This process's code (its sys.path) on the two cases."""
    from processor.definitions.loader import parse_document
    from processor.definitions.registry import Registry
    from processor.matching.events import Matched
    from processor.matching.window_state import WindowPartitions
    from processor.messages import WindowMatch
    from processor.worker.event_matcher import collection_paused

    def registry_of(event: dict[str, Any]) -> tuple[Registry, str]:
        registry = Registry()
        raw = {"name": "p", "type": "event", "event": event, "agent": {"id": "a"}}
        document = parse_document(raw, "bench").resolved("default")
        registry.put(document)
        return registry, document.trigger_id

    def matched(trigger_id: str, group: str, role: str, key: str, at: float) -> Matched:
        summary = {"id": key, "type": "login.failed", "source": "idp", "data": {"user": group}}
        return Matched.of(
            WindowMatch(
                trigger_id=trigger_id, group=group, role=role, event_key=key, time=at, event=summary
            )
        )

    out: dict[str, float] = {}
    registry, trigger_id = registry_of(
        {
            "pattern": "login.failed",
            "followed_by": {"pattern": "login.succeeded", "within": "24h", "key": "data.user"},
        }
    )
    windows = WindowPartitions()
    now = time.time()
    for i in range(AS_WAITING):  # the As waiting when the timed part begins
        windows.observe(registry, 0, matched(trigger_id, "u", "first", f"idp\x1fw{i}", now), now)
    spent = {"first": 0.0, "second": 0.0}
    clock = time.perf_counter
    for i in range(EVENTS):  # an A, then a B that pairs with the oldest: 1,000 wait
        for match in (
            matched(trigger_id, "u", "first", f"idp\x1fa{i}", now + 1 + i * 0.01),
            matched(trigger_id, "u", "second", f"idp\x1fb{i}", now + 2 + i * 0.01),
        ):
            started = clock()
            windows.observe(registry, 0, match, now)
            spent[match.role] += clock() - started
    out["sequence_a_us"] = spent["first"] / EVENTS * 1e6
    out["sequence_b_us"] = spent["second"] / EVENTS * 1e6
    out["fires"] = windows.take_outcomes()["fired"]

    registry, trigger_id = registry_of(
        {
            "pattern": "login.failed",
            "not_followed_by": {"pattern": "login.succeeded", "within": "24h", "key": "data.user"},
        }
    )
    windows = WindowPartitions()
    for i in range(AS_WAITING):
        windows.observe(registry, 0, matched(trigger_id, "u", "first", f"idp\x1fw{i}", now), now)
    started = clock()
    for i in range(EVENTS):  # each pushes the oldest out: 1,000 wait
        match = matched(trigger_id, "u", "first", f"idp\x1fa{i}", now + 1 + i * 0.01)
        windows.observe(registry, 0, match, now)
    out["absence_a_us"] = (clock() - started) / EVENTS * 1e6

    registry, trigger_id = registry_of(
        {
            "pattern": "order.created",
            "not_followed_by": {"pattern": "order.paid", "within": "1h", "key": "data.order"},
        }
    )
    windows = WindowPartitions()
    for i in range(keys):
        group = f"order-{i}"
        at = now - i * 3300 / keys  # orders of the last 55 minutes: none due yet
        windows.observe(registry, i % 6, matched(trigger_id, group, "first", group, at), now)
    records, _ = windows.changelog()
    started = time.perf_counter()
    with collection_paused():  # as the worker restores
        restored = WindowPartitions()  # as a new owner has it
        for partition, key, value in records:
            restored.load(partition, key, value)
        restored.restored(list(range(6)), now)
    out["restore_ms"] = (time.perf_counter() - started) * 1e3
    ticks = []
    for n in range(6):
        started = time.perf_counter()
        fires = restored.expire(registry, now + n)
        ticks.append((time.perf_counter() - started) * 1e3)
        assert fires == [], "nothing is due yet"
    out["tick_first_ms"] = ticks[0]
    out["tick_ms"] = statistics.median(ticks[1:])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--baseline", help="a checkout of other code to measure beside this")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.keys)))
        return 0
    runs: dict[str, dict[str, float]] = {}
    trees = {"current": ROOT} | ({"baseline": Path(args.baseline)} if args.baseline else {})
    for name, tree in trees.items():
        found = subprocess.run(
            [sys.executable, __file__, "--measure-only", "--keys", str(args.keys)],
            env={**os.environ, "PYTHONPATH": str(tree)},
            check=True,
            capture_output=True,
            text=True,
        )
        runs[name] = json.loads(found.stdout)
    results: dict[str, Any] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "keys": args.keys,
        "as_waiting": AS_WAITING,
        **runs,
    }
    if "baseline" in runs:
        results["current_over_baseline"] = {
            figure: round(value / runs["baseline"][figure], 4)
            for figure, value in runs["current"].items()
        }
    out = ROOT / "bench" / "results" / "patterns.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
