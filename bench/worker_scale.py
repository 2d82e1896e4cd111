"""A worker with a lot of state, on the local broker: window keys and schedules.

Two measurements, each against a baseline taken in the same run:

- **window state**: 1M keys of window state (the Error Handler's rule grouped by
  `data.host`, one pending event per host, as the window evaluator itself computes
  them) are written to `trigger-window-state`; then a worker is started and timed until
  its event matcher has restored the state of the partitions it was assigned, and its
  resident memory and data directory size are read; then it is restarted and timed
  again. Baseline: the same worker and trigger with an empty state topic.
- **scheduler lateness**: 100k schedule triggers (hourly, at a random minute and
  second) in a running worker; lateness = the command's append time on `agent-runs`
  (LogAppendTime) minus the fire's scheduled second, over OBSERVE_SECONDS, from
  SETTLE_SECONDS after the worker is Ready, and apart over the SETTLE_SECONDS right
  after Ready. Baseline:
  1k schedules that fire every minute, which makes about as many fires per second
  (28 vs 17), so the difference is the number of schedules.

    .venv/bin/python bench/worker_scale.py [--keys 1000000] [--schedules 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from event_path import BOOTSTRAP, ERROR_HANDLER, ROOT, TRIGGERS, Run, percentiles, rss_bytes

from processor import topics
from processor.definitions.loader import load_paths
from processor.definitions.registry import Registry
from processor.matching.events import Matched
from processor.matching.state import encode
from processor.matching.stateful import evaluate
from processor.worker.event_matcher import partition_of

OBSERVE_SECONDS = 60
SETTLE_SECONDS = 30
WINDOW_TRIGGER = "bench-windows"
RESTORED = "window state of partitions"
"""The event matcher's log line once it restored the window state it was assigned."""


def _window_trigger_yaml() -> str:
    """The seed's Error Handler, grouped per host (one window per host), every firing run."""
    window = 'window: "5m" # Within 5 minutes'
    text = ERROR_HANDLER.read_text().replace(window, f"{window}\n      group_by: data.host")
    assert "group_by" in text, "the seed's Error Handler changed shape"
    text = text.replace('name: "Error Handler"', f'name: "Error Handler"\n  id: {WINDOW_TRIGGER}')
    # Every firing a command: no runtime finishes runs here, and the default overlap
    # (one at a time, skip the rest) would drop the check's second fire.
    return text + "  overlap: allow_all\n"


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _seed_changelog(run: Run, keys: int, registry: Registry) -> float:
    """`keys` window states on the table's changelog, as the evaluator writes them;
    returns the seconds it took to compute and write them."""
    changelog = run.topic(topics.WINDOW_STATE)
    partitions = run.settings.topic_partitions
    producer = Producer(
        {"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "compression.type": "lz4"}
    )
    started = time.monotonic()
    now = time.time()
    for i in range(keys):
        host = f"host-{i:07d}"
        event = {"type": "error.database", "source": "system", "id": f"e{i}"}
        match = Matched(
            WINDOW_TRIGGER,
            host,
            "event",
            f"system/e{i}",
            now,
            None,
            {**event, "data": {"severity": "high", "host": host}},
        )
        state = evaluate(registry, None, match, now).state
        assert state is not None
        raw_key = match.key()
        while True:
            try:
                producer.produce(
                    changelog,
                    key=raw_key,
                    value=encode(state, None),
                    partition=partition_of(raw_key, partitions),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(300)
    return time.monotonic() - started


def _check_state(run: Run, host: str) -> None:
    """The worker has the seeded state: 4 more events for `host` make its 5th and fire."""
    data = {"severity": "high", "host": host}
    for n in range(4):
        event = {"type": "error.db", "source": "system", "id": f"{host}-c{n}", "data": data}
        run.producer.produce(run.topic(topics.EVENTS), value=orjson.dumps(event))
    run.producer.flush(30)
    [(_, command)] = run.collect(1, 60)
    assert command["input"]["window"]["count"] == 5, command


def window_state(keys: int) -> dict[str, Any]:
    rows = {}
    for name, count in (("empty", 0), ("seeded", keys)):
        run = Run(f"windows-{name}")
        try:
            definition = run.workdir / "t.yaml"
            definition.write_text(_window_trigger_yaml())
            subprocess.run(
                [TRIGGERS, "apply", "-f", str(run.workdir / "t.yaml")],
                env=run.env,
                check=True,
                capture_output=True,
            )
            registry = Registry()
            for located in load_paths([definition]):
                registry.put(located.document)
            seed_seconds = _seed_changelog(run, count, registry) if count else 0.0
            started = time.monotonic()
            run.start([TRIGGERS, "worker"], RESTORED, "worker.log")
            ready = time.monotonic() - started
            assert run.process is not None
            if count:
                _check_state(run, "host-0000000")
            time.sleep(5)  # settle: RocksDB flushes its memtables
            rows[name] = {
                "keys": count,
                "seed_seconds": round(seed_seconds, 1),
                "start_to_ready_seconds": round(ready, 2),
                "rss_bytes": rss_bytes(run.process.pid),
                "rocksdb_bytes": _du(run.workdir / "data"),
            }
            print(f"window state {name}: {rows[name]}", flush=True)
            if count:  # the same worker restarted: its RocksDB files are still there
                run.process.terminate()
                run.process.wait(60)
                started = time.monotonic()
                run.start([TRIGGERS, "worker"], RESTORED, "worker-restarted.log")
                ready = time.monotonic() - started
                _check_state(run, "host-0000001")
                time.sleep(5)
                rows["restarted"] = {
                    "keys": count,
                    "start_to_ready_seconds": round(ready, 2),
                    "rss_bytes": rss_bytes(run.process.pid),
                    "rocksdb_bytes": _du(run.workdir / "data"),
                }
                print(f"window state restarted: {rows['restarted']}", flush=True)
        finally:
            run.stop()
    empty, seeded = rows["empty"], rows["seeded"]
    per_million = 1_000_000 / keys
    return {
        **rows,
        "recovery_seconds_per_1m_keys": round(
            (seeded["start_to_ready_seconds"] - empty["start_to_ready_seconds"]) * per_million, 1
        ),
        "ready_ratio_seeded_vs_empty": round(
            seeded["start_to_ready_seconds"] / empty["start_to_ready_seconds"], 2
        ),
        "ready_ratio_restarted_vs_empty": round(
            rows["restarted"]["start_to_ready_seconds"] / empty["start_to_ready_seconds"], 2
        ),
        "rss_mib_per_1m_keys": round(
            (seeded["rss_bytes"] - empty["rss_bytes"]) * per_million / 2**20, 1
        ),
        "rocksdb_mib_per_1m_keys": round(
            (seeded["rocksdb_bytes"] - empty["rocksdb_bytes"]) * per_million / 2**20, 1
        ),
    }


def _schedules_yaml(count: int, hourly: bool, rng: random.Random) -> str:
    docs = []
    for i in range(count):
        second, minute = rng.randrange(60), rng.randrange(60)
        cron = f"{second} {minute} * * * *" if hourly else f"{second} * * * * *"
        docs.append(
            f"trigger: {{id: s{i}, name: s{i}, type: schedule, overlap: allow_all,"
            f" agent: {{id: a}}, schedule: {{cron: '{cron}'}}}}"
        )
    return "\n---\n".join(docs) + "\n"


def _lateness_ms(late: list[float]) -> dict[str, Any]:
    return {**percentiles(late, 1000, 1), "max": round(max(late) * 1000, 1) if late else None}


def lateness(count: int, hourly: bool, seed: int) -> dict[str, Any]:
    run = Run(f"schedules-{count}")
    try:
        path = run.workdir / "schedules.yaml"
        path.write_text(_schedules_yaml(count, hourly, random.Random(seed)))
        started = time.monotonic()
        subprocess.run([TRIGGERS, "apply", "-f", str(path)], env=run.env, check=True,
                       capture_output=True)  # fmt: skip
        applied = time.monotonic() - started
        started = time.monotonic()
        run.start([TRIGGERS, "worker"], "[^Worker]: Ready", "worker.log")
        ready = time.monotonic() - started
        # Fires of the first SETTLE_SECONDS after Ready are reported apart: that is when
        # start-up work still going on past Ready shows.
        ready_at = time.time()
        after_ready: list[float] = []
        late: list[float] = []
        for appended, command in run.collect(sys.maxsize, SETTLE_SECONDS + OBSERVE_SECONDS):
            scheduled = datetime.fromisoformat(command["cause"]["scheduled_time"]).timestamp()
            if scheduled >= ready_at + SETTLE_SECONDS:
                late.append(appended - scheduled)
            elif scheduled >= ready_at:
                after_ready.append(appended - scheduled)
        row = {
            "schedules": count,
            "cron": "hourly, random minute:second" if hourly else "every minute, random second",
            "apply_seconds": round(applied, 1),
            "start_to_ready_seconds": round(ready, 1),
            "fires_observed": len(late),
            "fires_per_second": round(len(late) / OBSERVE_SECONDS, 1),
            "lateness_ms": _lateness_ms(late),
            "first_seconds_after_ready": {
                "seconds": SETTLE_SECONDS,
                "fires_observed": len(after_ready),
                "lateness_ms": _lateness_ms(after_ready),
            },
        }
        print(f"schedules {count}: {row}", flush=True)
        return row
    finally:
        run.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--only", choices=["windows", "schedules"])
    args = parser.parse_args()
    out = ROOT / "bench" / "results" / "worker_scale.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    results["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.only in (None, "windows"):
        results["window_state"] = window_state(args.keys)
    if args.only in (None, "schedules"):
        baseline = lateness(1_000, hourly=False, seed=3)
        many = lateness(args.schedules, hourly=True, seed=4)
        results["scheduler"] = {
            "baseline": baseline,
            "many": many,
            "p99_ratio_many_vs_baseline": round(
                many["lateness_ms"]["p99"] / baseline["lateness_ms"]["p99"], 2
            )
            if many["lateness_ms"]["p99"] and baseline["lateness_ms"]["p99"]
            else None,
        }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
