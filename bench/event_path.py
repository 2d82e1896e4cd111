"""Event path: throughput and end-to-end latency of the seed's Error Handler, side by side
with the raw client and a peer framework, on the local broker, in one run.

Three contenders consume the same events and write one command to `agent-runs` per
firing of the same rule (5 events of type `error.*` from `system`/`agents` with
severity >= high, within 5 minutes; the window resets after a fire):

- **triggers**: one `triggers worker` process, with the Error Handler and N other
  active event triggers (that never match these events);
- **triggers_split**: the same, with the dispatcher in a process of its own
  (`TRIGGERS_WORKER_DISPATCHER=false` and `triggers dispatcher`), so the matchers and
  the dispatcher each have an interpreter;
- **passthrough**: a confluent-kafka consume-count-produce loop, no state store, no
  transactions: the ceiling for any Python consumer on these topics;
- **faust_agent**: the passthrough's loop as a Faust agent (one record per `await`,
  sends through Faust's producer): the framework's own ceiling, nothing of ours;
- **quix**: the same rule in Quix Streams (stateful `apply` on RocksDB, at-least-once),
  in its own virtual environment (it pins an older confluent-kafka).

Each gets its own topics. Two phases per contender:
- latency: events produced at a steady 200/s for 10 s; latency = the command's record
  timestamp minus the timestamp of the event that crossed the threshold (p50, p99);
- throughput: 200,000 events written while the contender is paused (SIGSTOP), then it
  is resumed; events/s = events / (last command's timestamp - the resumption);
- for the worker, latency again at half the throughput it just reached, for 10 s (and at
  other shares of it with `--loads`, e.g. `--loads 0.25 0.5 0.75`), with the cores each
  party used while the events were sent.

Command timestamps are set by the broker at append (`LogAppendTime` on the bench's
`agent-runs` topics), so every contender is timed by the same clock.

All events share one key, so each contender works one partition, as one window needs.
The contenders run in turn, `--rounds` times, after `--warmup` rounds (1 by default) that
are not counted: a broker fresh from its start serves transactions slowly at first
(WARMUP_ROUNDS).

    .venv/bin/python bench/event_path.py [--others 1000] [--only triggers] [--mix sparse]
                                         [--rounds 3] [--warmup 1] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processor import topics  # noqa: E402
from processor.config import Settings  # noqa: E402
from processor.kafka.admin import create_topics  # noqa: E402
from tests.integration.kafka import delete_topics  # noqa: E402

BOOTSTRAP = os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
TRIGGERS = str(ROOT / ".venv" / "bin" / "triggers")
QUIX_PYTHON = ROOT / ".bench" / "quix" / "bin" / "python"
ERROR_HANDLER = ROOT / "examples" / "error-handler.yaml"
LATENCY_RATE, LATENCY_SECONDS, BACKLOG = 200, 10, 200_000
"""The backlog was 20,000 events until the worker's rate made that too short to time: the
passthrough worked through it in 62 ms, about one fetch and one commit, so its figure
said more about start-up than about a rate."""
BACKLOG_SPARSE = 200_000
BACKLOG_SIZE = 0
"""--backlog: events in the throughput phase (0: the mix's default)."""
METRICS_PORT = 9477
SAVE_METRICS = os.environ.get("BENCH_METRICS", "")
"""With BENCH_METRICS=<file>, the worker serves metrics on METRICS_PORT and they are saved
there at the end of its run."""
SAVE_SERIES = os.environ.get("BENCH_SERIES", "")
"""With BENCH_SERIES=<path>, the half-rate phase's samples are written to <path>.<contender>.tsv:
send time (s), event to fire and event to command (ms)."""
HARNESS_NICE = int(os.environ.get("BENCH_HARNESS_NICE", "0"))
"""With BENCH_HARNESS_NICE=<n> (1-19), the bench's own threads (its producer of events,
its readers) run at that niceness and the contenders it starts at 0 (lowering it back
needs CAP_SYS_NICE): what the half-rate tail owes to the load generator sharing the
contender's two cores, where in production the producers are other machines. Off by
default: every published figure is with the harness at the contender's priority."""
NORMAL_PRIORITY = functools.partial(os.setpriority, os.PRIO_PROCESS, 0, 0)
"""Run in a contender's process before its exec, when the harness is niced."""
KEEP_WORKDIRS = bool(os.environ.get("BENCH_KEEP_WORKDIRS"))
"""With BENCH_KEEP_WORKDIRS=1, each contender's directory (its logs, the worker's state)
is left in /tmp after its run; by default it goes with the run's topics (a contender that
does not start raises with its log's tail either way)."""
WARM_EVENTS = int(os.environ.get("BENCH_WARM_EVENTS", "50"))
"""Events before the latency phase (above 50, sent at its rate)."""
HALF_RATE = False
"""Also measure latency under load, at LOADS of the throughput just measured (the worker's
row)."""
LOADS: tuple[float, ...] = (0.5,)
"""--loads: shares of the worker's measured rate to measure latency at (0.5: its
`latency_half_max_ms`)."""


MIX = "errors"
"""`errors`: every event is an error the rule looks at (60% of them high). `sparse`: one
event in 100 is such an error, the others are of 99 other types no trigger matches, as in
a busy domain topic; the backlog ends with 5 high errors, so its last event fires."""


HIGH_SHARE = 0.6
"""The share of error events that are high severity (pass the rule's condition)."""


def error_event(high: bool) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": "error.database",
        "source": "system",
        "id": uuid.uuid4().hex,
        "data": {"severity": "high" if high else "low", "service": "db"},
    }


def events(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    if MIX == "errors":
        return [error_event(rng.random() < HIGH_SHARE) for _ in range(count)]
    out = [
        error_event(rng.random() < HIGH_SHARE)
        if n % 100 == 0
        else {
            "specversion": "1.0",
            "type": f"orders.step{n % 100}",
            "source": "shop",
            "id": uuid.uuid4().hex,
            "data": {"order": n, "amount": rng.randint(1, 500)},
        }
        for n in range(count - 5)
    ]
    return out + [error_event(True) for _ in range(5)]


def expected_fires(batch: list[dict[str, Any]]) -> int:
    return sum(e["data"].get("severity") == "high" for e in batch) // 5


class Run:
    """One contender's topics (by prefix) and process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = f"b{uuid.uuid4().hex[:8]}."
        self.group = f"{self.prefix.rstrip('.')}-peer"
        """A peer's consumer group or app id: its own topics are named after it, and
        deleted with the run's."""
        self.settings = Settings(
            kafka_bootstrap=BOOTSTRAP, topic_prefix=self.prefix, app_id=self.prefix.rstrip(".")
        )
        create_topics(self.settings)
        # Latency is read off the command's record timestamp: let the broker set it at
        # append (Quix Streams, for one, copies the input's timestamp onto its output).
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            self.topic(topics.AGENT_RUNS),
            incremental_configs=[
                ConfigEntry(
                    "message.timestamp.type",
                    "LogAppendTime",
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.env = {
            **os.environ,
            "TRIGGERS_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "TRIGGERS_TOPIC_PREFIX": self.prefix,
            "TRIGGERS_APP_ID": self.prefix.rstrip("."),
            "TRIGGERS_DATA_DIR": str(self.workdir / "data"),
            "TRIGGERS_WORKER_METRICS_PORT": str(METRICS_PORT if SAVE_METRICS else 0),
            "TRIGGERS_LOG_LEVEL": "INFO",  # the start-up marker is logged at INFO
            "BENCH_GROUP": self.group,
            "BENCH_EVENTS_TOPIC": self.topic(topics.EVENTS),
            "BENCH_RUNS_TOPIC": self.topic(topics.AGENT_RUNS),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.helpers: list[subprocess.Popen[bytes]] = []
        """Processes besides the contender (not paused with it)."""
        self.runs = reader("earliest", "read_committed")
        self.runs.subscribe([self.topic(topics.AGENT_RUNS)])
        self.producer = Producer(
            {"bootstrap.servers": BOOTSTRAP, "linger.ms": 5, "partitioner": "murmur2_random"}
        )

    def topic(self, spec: topics.TopicSpec) -> str:
        return topics.topic_name(spec, self.settings)

    def start(
        self,
        command: list[str],
        ready: str,
        log_name: str,
        helper: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        log = open(self.workdir / log_name, "wb")  # noqa: SIM115 - lives with the process
        # In the run's own directory: a worker of an older checkout (--baseline) whose
        # dispatcher child is `python -m processor...` would import this checkout's.
        process = subprocess.Popen(
            command,
            preexec_fn=NORMAL_PRIORITY if HARNESS_NICE else None,
            env={**self.env, **(env or {})},
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if helper:
            self.helpers.append(process)
        else:
            self.process = process
        deadline = time.monotonic() + 180
        while ready not in (self.workdir / log_name).read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.workdir / log_name).read_text(errors="replace")[-3000:])
            time.sleep(0.2)

    def stop(self) -> None:
        for process in [p for p in (self.process, *self.helpers) if p is not None]:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.runs.close()
        self.delete_topics()
        if KEEP_WORKDIRS:
            print(f"{self.name}: its logs and data are in {self.workdir}", file=sys.stderr)
        else:  # a worker's state store: 15-60 MB a run, some 3 GB in a day of runs
            shutil.rmtree(self.workdir, ignore_errors=True)

    def delete_topics(self) -> None:
        """This run's topics go with it: a broker left holding every earlier run's
        partitions (thousands over a `make bench`) answers later runs more slowly."""
        delete_topics(
            BOOTSTRAP, self.prefix, f"changelog__{self.group}", f"repartition__{self.group}"
        )

    def produce(self, batch: list[dict[str, Any]], rate: float | None) -> dict[str, float]:
        """Produce; returns each event's send time (seconds) by id.

        Paced, it sends the events due each millisecond together, encoded beforehand: one
        clock read and at most one sleep per millisecond, not per event. Pacing 26,000
        events/s one by one (a `time.sleep` and two clock reads per event) took 38% of
        a core of this 2-core machine from the contender it measured; this takes 22-24%."""
        topic = self.topic(topics.EVENTS)
        values = [(event["id"], orjson.dumps(event)) for event in batch]
        per_tick = 1 if rate is None else max(1, int(rate / 1000))
        sent: dict[str, float] = {}
        produce, poll = self.producer.produce, self.producer.poll
        start = time.time()
        for at in range(0, len(values), per_tick):
            if rate is not None:
                delay = start + at / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            now = time.time()
            stamp = int(now * 1000)
            for event_id, value in values[at : at + per_tick]:
                sent[event_id] = now
                produce(topic, key=b"errors", value=value, timestamp=stamp)
            poll(0)
        self.producer.flush(60)
        return sent

    def fires_from_now(self) -> Consumer:
        """A reader of the worker's `trigger-fires` from its end on (its records, not
        their transactions: a fire's timestamp is when the matcher produced it)."""
        fires = reader("latest", "read_uncommitted")
        assigned: list[int] = []
        fires.subscribe(
            [self.topic(topics.TRIGGER_FIRES)], on_assign=lambda _c, tps: assigned.extend(tps)
        )
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:
            fires.poll(0.1)
        return fires

    def fire_times(self, fires: Consumer, want: int) -> dict[str, float]:
        """When each fire was produced (its record's timestamp), by crossing event id."""
        try:
            read = read_json(fires, want, 30)
        finally:
            fires.close()
        return {cid: at for at, fire in read if (cid := crossing_id(fire))}

    def collect(self, want: int, timeout: float) -> list[tuple[float, dict[str, Any]]]:
        return read_json(self.runs, want, timeout)

    def arrivals(self, want: int, timeout: float) -> list[tuple[float, bytes]]:
        """The commands' record timestamps and bytes, not parsed (the backlog needs only
        when they came)."""
        return read_records(self.runs, want, timeout)


def reader(offset_reset: str, isolation: str) -> Consumer:
    """A consumer of the bench's own, in a group of its own, that commits nothing."""
    return Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": offset_reset,
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )


def read_json(consumer: Consumer, want: int, timeout: float) -> list[tuple[float, dict[str, Any]]]:
    """Up to `want` records (record timestamp in seconds, JSON value), read for at most
    `timeout` seconds."""
    return [(at, orjson.loads(value)) for at, value in read_records(consumer, want, timeout)]


def read_records(consumer: Consumer, want: int, timeout: float) -> list[tuple[float, bytes]]:
    """Up to `want` records (record timestamp in seconds, value), read for at most
    `timeout` seconds. Not parsed as they come: the harness shares the machine with the
    contender it measures (parsing and keeping the worker's commands as they came took
    0.19 of a core from its backlog), and the times are the records' own."""
    found: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(found) < want and time.monotonic() < deadline:
        for message in consumer.consume(500, timeout=0.5):
            if message.error() is None:
                _, ts = message.timestamp()
                found.append((ts / 1000, message.value() or b"{}"))
            elif message.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(str(message.error()))
    return found


def percentiles(
    values: list[float], scale: float = 1.0, digits: int = 2, also: tuple[int, ...] = ()
) -> dict[str, Any]:
    """p50 and p99 of `values` times `scale` (None when there are none), and the `also`
    percentiles (nearest rank, as p99)."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None}
    ranked = {
        f"p{n}": round(ordered[int(len(ordered) * n / 100) - 1] * scale, digits) for n in also
    }
    return {
        "p50": round(statistics.median(ordered) * scale, digits),
        **ranked,
        "p99": round(ordered[int(len(ordered) * 0.99) - 1] * scale, digits),
        "worst": [round(v * scale, digits) for v in ordered[-5:]],
    }


def stages(
    sent: dict[str, float], commands: list[tuple[float, dict[str, Any]]], fired: dict[str, float]
) -> dict[str, Any]:
    """Where the time between an event and its command goes: until the matcher produced
    the fire (the batch's wait and handling), and from there to the command's append (the
    matcher's commit, the dispatcher's fetch, handling and commit)."""
    to_fire, to_command = [], []
    for at, command in commands:
        cid = crossing_id(command)
        if cid in sent and cid in fired:
            to_fire.append((fired[cid] - sent[cid]) * 1000)
            to_command.append((at - fired[cid]) * 1000)
    return {
        "event_to_fire_ms": percentiles(to_fire),
        "fire_to_command_ms": percentiles(to_command),
        "samples": len(to_fire),
    }


def crossing_id(command: dict[str, Any]) -> str | None:
    cause = command.get("cause") or {}
    return cause.get("event_id") or command.get("event_id")


BROKER_PID = ROOT / "deploy" / "kafka" / ".state" / "kafka.pid"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """A process's resident memory (0 once it is gone)."""
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def rss_mib(run: Run) -> float:
    """The contender's resident memory, its processes and their children, in MiB."""
    roots = (run.process, *run.helpers)
    found = sum(rss_bytes(pid) for root in roots if root for pid in _descendants(root.pid))
    return round(found / 2**20, 1)


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for parent in found:
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                found += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return found


def cpu_now(run: Run) -> dict[str, float]:
    """CPU seconds used so far: by the contender (its processes and their children), by
    this harness, by the local broker (when this machine runs it), and by the machine."""
    contender = [p for root in (run.process, *run.helpers) if root for p in _descendants(root.pid)]
    broker = int(BROKER_PID.read_text()) if BROKER_PID.exists() else None
    busy = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {
        "at": time.monotonic(),
        "contender": sum(_process_seconds(pid) for pid in contender),
        "harness": _process_seconds(os.getpid()),
        "broker": _process_seconds(broker) if broker else 0.0,
        # user + nice + system + irq + softirq: every process's work, ours or not
        "machine": (sum(busy[:3]) + sum(busy[5:7])) / CLOCK_TICKS,
        # what the hypervisor gave to other guests while this one wanted to run
        "steal": busy[7] / CLOCK_TICKS,
    }


def cpu_cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Cores busy on average between two `cpu_now` readings, by whom."""
    elapsed = max(after["at"] - before["at"], 1e-9)
    return {
        name: round((after[name] - before[name]) / elapsed, 2) for name in before if name != "at"
    } | {"machine_cores": os.cpu_count() or 0}


def measure(run: Run, seed: int) -> dict[str, Any]:
    warm = events(WARM_EVENTS, seed)
    run.produce(warm, LATENCY_RATE if WARM_EVENTS > 50 else None)
    run.collect(expected_fires(warm), 120)
    steady = events(LATENCY_RATE * LATENCY_SECONDS, seed + 1)
    cpu_before = cpu_now(run)
    sent = run.produce(steady, LATENCY_RATE)
    cpu_steady = cpu_cores(cpu_before, cpu_now(run))
    commands = run.collect(expected_fires(steady), 120)
    began = min(sent.values())
    timed = sorted(
        ((at - sent[cid]) * 1000, sent[cid] - began)
        for at, c in commands
        if (cid := crossing_id(c)) in sent
    )
    latencies = [ms for ms, _ in timed]
    worst_at = [round(offset, 2) for _, offset in timed[-5:]]
    # Throughput: the contender is paused (SIGSTOP) while the backlog is written, so it
    # then works through a full backlog; timed from its resumption to the last command.
    size = BACKLOG_SIZE or (BACKLOG if MIX == "errors" else BACKLOG_SPARSE)
    backlog = events(size, seed + 2)
    assert run.process is not None
    run.process.send_signal(signal.SIGSTOP)
    try:
        run.produce(backlog, None)
    finally:
        first = time.time()
        cpu_before = cpu_now(run)
        run.process.send_signal(signal.SIGCONT)
    profiler = py_spy(run, "BENCH_PROFILE", 20)
    expected = expected_fires(backlog)
    done = run.arrivals(expected, 600)
    cpu_used = cpu_cores(cpu_before, cpu_now(run))
    if profiler is not None:
        profiler.wait(60)
    last = max(at for at, _ in done) if done else float("nan")
    # A contender that did not finish in time is timed over the share it did (its fires
    # are spread evenly over the backlog), not credited with the whole.
    handled = size * min(1.0, len(done) / max(1, expected))
    found = {
        "latency_ms": {
            **percentiles(latencies),
            "samples": len(latencies),
            "worst_at_s": worst_at,
            "cpu_cores_while_sending": cpu_steady,
        },
        "throughput_events_per_s": round(handled / (last - first), 1) if done else None,
        "fires": {"expected": expected, "seen": len(done)},
        "cpu_cores_backlog": cpu_used,
    }
    if HALF_RATE and done:
        maximum = handled / (last - first)
        loaded = [
            loaded_latency(run, share, maximum, seed + 3 + n) for n, share in enumerate(LOADS)
        ]
        found["latency_at_load"] = loaded
        half = [row for row in loaded if row["share_of_max"] == 0.5]
        if half:
            found["latency_half_max_ms"] = half[0]
    # At the round's end: what the contender holds after all its phases (the worker's
    # dispatcher keeps every execution of the round, as no runtime finishes them).
    found["rss_mib"] = rss_mib(run)
    if SAVE_METRICS and run.name.startswith("triggers"):
        # The worker's own account of the run (transaction and GC times, ...), and the
        # dispatcher process's when it has one.
        saved = Path(SAVE_METRICS)
        if run.name != "triggers":
            saved = saved.with_name(f"{saved.stem}_{run.name}{saved.suffix}")
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics") as answer:
            saved.write_bytes(answer.read())
        if run.helpers:
            with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT + 1}/metrics") as answer:
                saved.with_name(f"{saved.stem}_dispatcher{saved.suffix}").write_bytes(answer.read())
    return found


def py_spy(run: Run, variable: str, seconds: int) -> subprocess.Popen[bytes] | None:
    """py-spy recording the contender for `seconds` into the file the environment variable
    names (raw format, for flamegraph.pl), if it names one: BENCH_PROFILE for the backlog
    phase (which lasts 2-3 s unless --backlog makes it longer), BENCH_PROFILE_HALF for the
    half-rate phase. Its options: BENCH_PROFILE_ARGS, by default --gil (only samples
    holding the GIL); add --subprocesses for the worker's dispatcher process."""
    out = os.environ.get(variable)
    if not out:
        return None
    assert run.process is not None
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(run.process.pid), "--duration", str(seconds),
         "--format", "raw", "--output", out, "--nonblocking",
         *os.environ.get("BENCH_PROFILE_ARGS", "--gil").split()],
    )  # fmt: skip


def loaded_latency(run: Run, share: float, maximum: float, seed: int) -> dict[str, Any]:
    """Latency under load: events at `share` of the rate just measured, for 10 s; where
    the time goes (`stages`) and who used the machine's cores meanwhile."""
    rate = maximum * share
    loaded = events(int(rate * LATENCY_SECONDS), seed)
    fires = run.fires_from_now()
    cpu_before = cpu_now(run)
    spy = py_spy(run, "BENCH_PROFILE_HALF", LATENCY_SECONDS - 2) if share == 0.5 else None
    sent = run.produce(loaded, rate)
    cpu_used = cpu_cores(cpu_before, cpu_now(run))
    if spy is not None:
        spy.wait(60)
    commands = run.collect(expected_fires(loaded), 120)
    under_load = [(at - sent[cid]) * 1000 for at, c in commands if (cid := crossing_id(c)) in sent]
    fired = run.fire_times(fires, len(commands))
    if SAVE_SERIES and share == 0.5:
        # Each sample: sent (s from the phase's start), fire and command times.
        start = min(sent.values())
        Path(SAVE_SERIES).with_suffix(f".{run.name}.tsv").write_text(
            "".join(
                f"{sent[cid] - start:.4f}\t{(fired.get(cid, at) - sent[cid]) * 1000:.1f}"
                f"\t{(at - sent[cid]) * 1000:.1f}\n"
                for at, c in commands
                if (cid := crossing_id(c)) in sent
            )
        )
    return {
        **percentiles(under_load),
        "samples": len(under_load),
        "share_of_max": share,
        "events_per_s": round(rate),
        "stages": stages(sent, commands, fired),
        "cpu_cores_while_sending": cpu_used,
    }


def others(count: int) -> str:
    """`count` active event triggers that never match the benchmark's events."""
    docs = []
    for i in range(count):
        docs.append(
            f"trigger: {{name: other-{i}, type: event, overlap: allow_all, agent: {{id: a}},"
            f" event: {{pattern: 'svc{i}.*', source: [api]}}}}"
        )
    return "\n---\n".join(docs) + "\n"


def run_triggers(
    other_triggers: int, seed: int, split: bool = False, root: Path = ROOT
) -> dict[str, Any]:
    run = Run("triggers_split" if split else "triggers" if root == ROOT else "triggers_baseline")
    triggers = str(root / ".venv" / "bin" / "triggers")
    try:
        # The seed's rule as it is, but every firing becomes a command (no runtime here
        # finishes runs, and the default max_concurrent 1 / skip would drop the rest).
        handler = run.workdir / "error-handler.yaml"
        handler.write_text(ERROR_HANDLER.read_text() + "  overlap: allow_all\n")
        subprocess.run(
            [triggers, "apply", "-f", str(handler)], env=run.env, check=True, capture_output=True
        )
        if other_triggers:
            path = run.workdir / "others.yaml"
            path.write_text(others(other_triggers))
            subprocess.run(
                [triggers, "apply", "-f", str(path)], env=run.env, check=True, capture_output=True
            )
        if split:
            run.env["TRIGGERS_WORKER_DISPATCHER"] = "false"
            run.start(
                [triggers, "dispatcher"],
                "dispatcher started",
                "dispatcher.log",
                helper=True,
                env={"TRIGGERS_WORKER_METRICS_PORT": str(METRICS_PORT + 1 if SAVE_METRICS else 0)},
            )
        run.start([triggers, "worker"], "[^Worker]: Ready", "worker.log")
        global HALF_RATE
        HALF_RATE = MIX == "errors"
        try:
            result = measure(run, seed)
        finally:
            HALF_RATE = False
        result["other_triggers"] = other_triggers
        return result
    finally:
        run.stop()


def scaling(sizes: list[int], seed: int) -> dict[str, Any]:
    """Backlog throughput of one worker against the number of other active triggers."""
    rows = []
    for size in sizes:
        started = time.monotonic()
        result = run_triggers(size, seed)
        rows.append(
            {
                "other_triggers": size,
                "throughput_events_per_s": result["throughput_events_per_s"],
                "latency_ms": result["latency_ms"],
            }
        )
        print(f"scaling {size}: {rows[-1]} ({time.monotonic() - started:.0f}s)", flush=True)
    base = rows[0]["throughput_events_per_s"]
    for row in rows:
        row["throughput_vs_smallest"] = round(row["throughput_events_per_s"] / base, 3)
    return {"rows": rows}


def run_peer(name: str, seed: int) -> dict[str, Any]:
    run = Run(name)
    script = ROOT / "bench" / "peers" / f"{name}.py"
    python = str(QUIX_PYTHON) if name == "quix" else sys.executable
    try:
        extra = ["worker", "--loglevel", "warn"] if name == "faust_agent" else []
        run.start([python, str(script), *extra], "peer ready", f"{name}.log")
        return measure(run, seed)
    finally:
        run.stop()


def summarize(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each contender's row: its round of median throughput, with every round's rate and
    its ratio to the passthrough of the same round (the median of those is the row's
    ratio). Rounds run the contenders in turn, so a neighbour's load or the broker's
    state at one moment weighs on every contender alike."""
    out: dict[str, Any] = {}
    base = [r.get("throughput_events_per_s") for r in rounds.get("passthrough", [])]
    for name, found in rounds.items():
        rates = [r.get("throughput_events_per_s") or 0.0 for r in found]
        by_rate = sorted(found, key=lambda r: r.get("throughput_events_per_s") or 0.0)
        row = dict(by_rate[(len(found) - 1) // 2])
        if len(found) > 1:
            row["rounds_events_per_s"] = rates
        if name != "passthrough" and len(base) == len(found) and all(base):
            ratios = [round(rate / b, 3) for rate, b in zip(rates, base, strict=True)]
            row["throughput_vs_passthrough"] = statistics.median(ratios)
            if len(found) > 1:
                row["rounds_vs_passthrough"] = ratios
        out[name] = row
    return out


MIX_HELP = "errors: every event is one the rule reads; sparse: 1 in 100 (see MIX)"
WARMUP_ROUNDS = 1
"""Rounds every contender runs before the counted ones. A broker fresh from its start
serves transactions slowly for its first minutes (with the worker at 200 events/s it
used 1.1-1.3 cores in the first round, 0.6-0.8 in the second, 0.3-0.6 from the third;
idle, 0.03: most likely the JVM compiling their code as it first runs it), and the
contenders before the worker in a round write no transactions to warm it. Unwarmed, the
worker's first round ran at 63-77k events/s against 85-93k from the third
(bench/results/broker_heap_and_warmup.json). A broker in production is warm."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["triggers", "triggers_split", "passthrough", "faust_agent", "quix"],
        help="run only these contenders",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", choices=["errors", "sparse"], default="errors", help=MIX_HELP)
    parser.add_argument("--backlog", type=int, default=0, help="events in the backlog phase")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the contenders in turn this many times; each row is its median round",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=WARMUP_ROUNDS,
        help=f"rounds run first and not counted (default {WARMUP_ROUNDS}; see WARMUP_ROUNDS)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of the code before a change, with its own .venv: its worker "
        "runs as triggers_baseline in every round",
    )
    parser.add_argument(
        "--loads",
        type=float,
        nargs="+",
        default=[0.5],
        help="shares of the worker's measured rate to measure latency at (default 0.5); "
        "other than the default, results go to <name>_loads.json",
    )
    parser.add_argument(
        "--scaling", type=int, nargs="*", help="Only the worker, with these trigger counts."
    )
    args = parser.parse_args()
    if HARNESS_NICE:  # the one thread so far; those it starts inherit its niceness
        os.setpriority(os.PRIO_PROCESS, 0, HARNESS_NICE)
    global MIX, BACKLOG_SIZE, LOADS
    MIX, BACKLOG_SIZE, LOADS = args.mix, args.backlog, tuple(args.loads)
    if args.scaling:
        found = scaling(args.scaling, args.seed)
        out = ROOT / "bench" / "results" / "scaling.json"
        out.write_text(json.dumps(found, indent=2) + "\n")
        print(f"wrote {out}")
        return 0
    results: dict[str, Any] = {
        "machine": os.uname().nodename,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results["mix"] = MIX
    names = [
        name
        for name in ("passthrough", "faust_agent", "quix", "triggers", "triggers_split")
        if not args.only or name in args.only
    ]
    if args.baseline:
        names.append("triggers_baseline")
    if "quix" in names and not QUIX_PYTHON.exists():
        print("quix: skipped (make bench installs it into .bench/quix)", file=sys.stderr)
        names.remove("quix")
    results["warmup_rounds"] = args.warmup
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_ in range(-args.warmup, args.rounds):
        for name in names:
            started = time.monotonic()
            if name == "triggers_baseline":
                found = run_triggers(args.others, args.seed, root=args.baseline)
            elif name.startswith("triggers"):
                found = run_triggers(args.others, args.seed, split=name == "triggers_split")
            else:
                found = run_peer(name, args.seed)
            took = time.monotonic() - started
            if round_ >= 0:
                rounds[name].append(found)
            label = f"round {round_ + 1}" if round_ >= 0 else "warm-up, not counted"
            print(f"{name} ({label}): {json.dumps(found)} ({took:.0f}s)", flush=True)
    results.update(summarize(rounds))
    name = "event_path" if MIX == "errors" else "event_path_sparse"
    if BACKLOG_SIZE:
        name += f"_backlog{BACKLOG_SIZE}"
    if LOADS != (0.5,):
        name += "_loads"
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
