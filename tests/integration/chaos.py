"""Exactly-once firing under SIGKILL, after Kafka's own StreamsEosTest.

Two workers process a stream of events against threshold triggers (and one stateless
trigger) while a killer SIGKILLs one of them at random moments and restarts it, so
partitions move between them (rebalances) again and again. Then an offline verifier:

- reads `agent-runs` with read_committed: every expected execution id exactly once,
  nothing unexpected;
- checks that no transaction is left open (read_committed reaches the high watermark);
- compares the window table's final state with a replay of the same input through the
  same pure evaluator in this process (the oracle): same count for every window key.

`make chaos` runs the full version (100k events); `tests/integration/test_chaos.py`
runs a short one inside `make test`.

    python -m tests.integration.chaos --events 100000 --kills 6
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from processor import topics
from processor.definitions.loader import load_paths
from processor.definitions.registry import Registry
from processor.kafka.admin import create_topics, wait_for_broker
from processor.matching.decode import decode_event
from processor.matching.events import match_event
from processor.matching.state import KeyState, StateKey, WindowState, committed_states
from processor.matching.stateful import evaluate
from processor.matching.windows import window_count
from tests.integration.kafka import Pipeline

TRIGGERS = """
trigger:
  id: chaos-errors
  name: Errors per host
  type: event
  overlap: allow_all
  event:
    pattern: "error.*"
    condition:
      severity: ">= high"
      count_threshold: 5
      window: 60s
      group_by: data.host
  agent: {id: responder}
---
trigger:
  id: chaos-bursts
  name: Bursts per host
  type: event
  overlap: allow_all
  event:
    pattern: "*"
    condition: {count_threshold: 20, window: 30s, group_by: data.host}
  agent: {id: scaler}
---
trigger:
  id: chaos-critical
  name: Critical, at once
  type: event
  overlap: allow_all
  event:
    pattern: "error.*"
    condition: {severity: critical}
  agent: {id: pager}
"""
SEVERITIES = ["low", "medium", "high", "high", "critical"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_events(count: int, hosts: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: keyed by host, so each host's events keep their order."""
    rng = random.Random(seed)
    clock = dict.fromkeys(range(hosts), 0.0)
    events = []
    for n in range(count):
        host = rng.randrange(hosts)
        clock[host] += rng.uniform(0.5, 8.0)
        kind = "error.db" if rng.random() < 0.7 else "deploy.done"
        event = {
            "specversion": "1.0",
            "type": kind,
            "source": "chaos",
            "id": f"e{n}",
            "time": (T0 + timedelta(seconds=clock[host])).isoformat(),
            "data": {"host": f"h{host}", "severity": rng.choice(SEVERITIES)},
        }
        events.append((f"h{host}".encode(), orjson.dumps(event)))
    return events


def oracle(
    registry: Registry, events: list[tuple[bytes, bytes]]
) -> tuple[set[str], dict[str, int]]:
    """Expected execution ids and window counts: the input replayed once, in order."""
    states: dict[StateKey, KeyState] = {}
    expected: set[str] = set()
    for _, value in events:
        event = decode_event(value, [], topic="oracle", partition=0, offset=0, timestamp_ms=None)
        for match in match_event(registry, event):
            if match.fire is not None:
                expected.add(match.fire.execution_id)
            if match.window is None:
                continue
            key = StateKey(match.window.trigger_id, match.window.group)
            evaluation = evaluate(registry, states.get(key), match.window, time.time())
            if evaluation.state is not None:
                states[key] = evaluation.state
            expected.update(fire.execution_id for fire in evaluation.fires)
    return expected, window_counts(registry, states)


def window_counts(registry: Registry, states: dict[StateKey, KeyState]) -> dict[str, int]:
    """The count of each threshold window key, by its key as text."""
    counts = {}
    for key, state in states.items():
        threshold = registry.condition(key.trigger_id).threshold
        if threshold is not None and isinstance(state, WindowState):
            counts[str(key)] = window_count(state, threshold)
    return counts


@dataclass
class Killer:
    """SIGKILLs a random worker every few seconds and starts a replacement."""

    pipeline: Pipeline
    kills: int
    seed: int
    log: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    workers: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    min_gap: float = 4.0
    max_gap: float = 12.0
    split: bool = False
    """Workers without the dispatcher, and `triggers dispatcher` processes in the slots
    whose name starts with `dispatcher`."""

    def start_worker(self, slot: str) -> None:
        """A worker in `slot`; a replacement restarts on the same disk (its local copy of
        the window state, half-written when it was killed, is read back with the tail)."""
        self.generation += 1
        name = f"{slot}-{self.generation}"
        env = {"TRIGGERS_DATA_DIR": str(self.pipeline.workdir / f"data-{slot}")}
        command = "dispatcher" if slot.startswith("dispatcher") else "worker"
        if self.split and command == "worker":
            env["TRIGGERS_WORKER_DISPATCHER"] = "false"
        self.workers[slot] = (name, self.pipeline.start(command, name=name, extra_env=env))

    def run(self) -> None:
        rng = random.Random(self.seed)
        for _ in range(self.kills):
            time.sleep(rng.uniform(self.min_gap, self.max_gap))
            slot = sorted(self.workers)[len(self.log) % len(self.workers)]  # each in turn
            name, process = self.workers[slot]
            self.pipeline.stop(process, signal.SIGKILL)
            self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL {name}")
            time.sleep(rng.uniform(0.5, 3))
            self.start_worker(slot)
        self.done.set()


def read_runs(pipeline: Pipeline) -> tuple[Counter[str], bool]:
    """Execution ids on `agent-runs` (read_committed) and whether the reader reached
    each partition's high watermark (no transaction left open)."""
    topic = pipeline.topic(topics.AGENT_RUNS)
    reader = Consumer(
        {
            "bootstrap.servers": pipeline.bootstrap,
            "group.id": f"verifier-{time.time()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partitions = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
    reader.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen: Counter[str] = Counter()
    pending = set(partitions)
    while pending:
        for message in reader.consume(1000, timeout=5):
            error = message.error()
            if error is None:
                seen[orjson.loads(message.value() or b"{}")["execution_id"]] += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
    closed = True
    for p in partitions:
        tp = TopicPartition(topic, p)
        _, high = reader.get_watermark_offsets(tp, timeout=10)
        [position] = reader.position([tp])
        # the last offset is a commit marker, so a fully read partition is at high
        closed &= position.offset >= high
    reader.close()
    return seen, closed


def prepare(
    pipeline: Pipeline, events: int, hosts: int, seed: int
) -> tuple[Registry, list[tuple[bytes, bytes]], set[str], dict[str, int]]:
    """The triggers applied, the stream, and what the oracle expects of it."""
    triggers_file = pipeline.workdir / "chaos.yaml"
    triggers_file.write_text(TRIGGERS)
    pipeline.cli("apply", "-f", str(triggers_file))
    registry = Registry()
    for located in load_paths([triggers_file]):
        registry.put(located.document.resolved("default"))
    stream = make_events(events, hosts, seed)
    expected, expected_counts = oracle(registry, stream)
    return registry, stream, expected, expected_counts


def produce_over_time(
    pipeline: Pipeline,
    stream: list[tuple[bytes, bytes]],
    chunk: int = 2000,
    pause: float = 0.5,
    between: Any = None,
) -> None:
    """The stream in chunks, `pause` s apart (so what happens meanwhile lands mid-stream);
    `between(n)` runs after chunk n, if given."""
    producer = Producer(
        {"bootstrap.servers": pipeline.bootstrap, "partitioner": "murmur2_random", "linger.ms": 20}
    )
    topic = pipeline.topic(topics.EVENTS)
    for n, start in enumerate(range(0, len(stream), chunk)):
        for key, value in stream[start : start + chunk]:
            producer.produce(topic, value=value, key=key)
            producer.poll(0)
        producer.flush(30)
        if between is not None:
            between(n)
        time.sleep(pause)


def verify(
    pipeline: Pipeline,
    registry: Registry,
    expected: set[str],
    expected_counts: dict[str, int],
    timeout: float,
    out: Any,
) -> dict[str, Any]:
    """Wait for every expected command, then the read_committed verdict and the window
    counts against the oracle."""
    deadline = time.monotonic() + timeout
    while True:
        seen, _ = read_runs(pipeline)
        if expected <= set(seen) or time.monotonic() > deadline:
            break
        print(f"chaos: {len(expected & set(seen))}/{len(expected)} dispatched", file=out)
        time.sleep(10)
    time.sleep(10)  # let any late duplicate land
    seen, closed = read_runs(pipeline)
    counts = window_counts(registry, committed_states(pipeline.settings))
    return {
        "expected_executions": len(expected),
        "dispatched_distinct": len(set(seen)),
        "missing": sorted(expected - set(seen))[:20],
        "missing_count": len(expected - set(seen)),
        "unexpected": sorted(set(seen) - expected)[:20],
        "duplicated": {k: v for k, v in seen.items() if v > 1},
        "transactions_closed": closed,
        "window_keys": len(expected_counts),
        "window_count_mismatches": {
            key: (counts.get(key), want)
            for key, want in expected_counts.items()
            if counts.get(key) != want
        },
    }


def passed(report: dict[str, Any]) -> bool:
    return not (
        report["missing_count"]
        or report["unexpected"]
        or report["duplicated"]
        or report["window_count_mismatches"]
        or not report["transactions_closed"]
    )


def run(
    pipeline: Pipeline,
    events: int,
    kills: int,
    seed: int = 7,
    hosts: int = 50,
    timeout: float = 1800,
    out: Any = sys.stdout,
    split: bool = False,
) -> dict[str, Any]:
    """The whole scenario; returns the report (and asserts nothing). With `split`, two
    workers without the dispatcher and two `triggers dispatcher` processes, all killed
    in turn."""
    registry, stream, expected, expected_counts = prepare(pipeline, events, hosts, seed)
    print(f"chaos: {events} events, {len(expected)} expected executions", file=out)

    # Kills spread over roughly the time the stream takes (about 3 ms an event here).
    spread = max(12.0, events * 0.003 / max(kills, 1))
    killer = Killer(pipeline, kills, seed, min_gap=spread / 2, max_gap=spread * 1.5, split=split)
    killer.start_worker("a")
    killer.start_worker("b")
    if split:
        killer.start_worker("dispatcher-1")
        killer.start_worker("dispatcher-2")
        pipeline.wait_ready(killer.workers["dispatcher-1"][0], "dispatcher started", timeout=120)
    pipeline.wait_ready(killer.workers["a"][0], "[^Worker]: Ready", timeout=120)
    threading.Thread(target=killer.run, daemon=True).start()
    started = time.monotonic()
    produce_over_time(pipeline, stream)
    killer.done.wait(timeout)
    report = {
        "events": events,
        "kills": killer.log,
        "seconds": round(time.monotonic() - started, 1),
        **verify(pipeline, registry, expected, expected_counts, timeout, out),
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode(), file=out)
    return report


def scale_out_and_back(
    pipeline: Pipeline,
    events: int,
    seed: int = 7,
    hosts: int = 50,
    timeout: float = 1800,
    out: Any = sys.stdout,
) -> dict[str, Any]:
    """Under a steady stream, workers go 1 -> 3 -> 1: two start, each stops with SIGTERM
    (as a scale-down or a rolling deploy does), then the last one is SIGKILLed once and
    started again on its disk. Same verdict as the chaos run."""
    registry, stream, expected, expected_counts = prepare(pipeline, events, hosts, seed)
    print(f"scale: {events} events, {len(expected)} expected executions", file=out)
    killer = Killer(pipeline, 0, seed)
    steps: list[str] = []
    chunks = max(1, -(-len(stream) // 500))

    def step(n: int) -> None:
        def note(what: str) -> None:
            steps.append(f"{time.strftime('%H:%M:%S')} after chunk {n + 1}/{chunks}: {what}")

        if n == chunks // 6:
            killer.start_worker("b")
            killer.start_worker("c")
            for slot in ("b", "c"):  # in the group before the next step
                pipeline.wait_ready(killer.workers[slot][0], "[^Worker]: Ready", timeout=120)
            note("start b and c (3 workers)")
        elif n == 2 * chunks // 6:
            pipeline.stop(killer.workers.pop("c")[1], signal.SIGTERM)
            note("SIGTERM c (2 workers)")
        elif n == 3 * chunks // 6:
            pipeline.stop(killer.workers.pop("b")[1], signal.SIGTERM)
            note("SIGTERM b (1 worker)")
        elif n == 4 * chunks // 6:
            pipeline.stop(killer.workers["a"][1], signal.SIGKILL)
            note("SIGKILL a")
            killer.start_worker("a")
            pipeline.wait_ready(killer.workers["a"][0], "[^Worker]: Ready", timeout=120)
            note("start a again on its disk")

    killer.start_worker("a")
    pipeline.wait_ready(killer.workers["a"][0], "[^Worker]: Ready", timeout=120)
    started = time.monotonic()
    # At least a minute of stream, so every step lands while events flow.
    produce_over_time(pipeline, stream, chunk=500, pause=max(1.0, 60 / chunks), between=step)
    report = {
        "events": events,
        "steps": steps,
        "seconds": round(time.monotonic() - started, 1),
        **verify(pipeline, registry, expected, expected_counts, timeout, out),
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode(), file=out)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--report", type=Path, help="Also write the report here (JSON).")
    parser.add_argument(
        "--scale", action="store_true", help="Workers 1 -> 3 -> 1 instead of random kills."
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="Workers without the dispatcher and two `triggers dispatcher` processes.",
    )
    args = parser.parse_args()
    pipeline = Pipeline(bootstrap=args.bootstrap, workdir=Path(tempfile.mkdtemp(prefix="chaos-")))
    wait_for_broker(pipeline.settings, 30)
    create_topics(pipeline.settings)
    try:
        if args.scale:
            report = scale_out_and_back(pipeline, args.events, args.seed)
        else:
            report = run(pipeline, args.events, args.kills, args.seed, split=args.split)
    finally:
        pipeline.stop_all()
    ok = passed(report)
    if ok:
        pipeline.delete_topics()  # a failed run's stay on the broker, to be read
    else:
        print(f"chaos: its topics are kept, prefix {pipeline.prefix}")
    if args.report:
        args.report.write_bytes(orjson.dumps({**report, "pass": ok}, option=orjson.OPT_INDENT_2))
    print("chaos: PASS" if ok else "chaos: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
