"""Prometheus metrics, named once. Every component exposes them on `/metrics`."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

OTHER_TRIGGERS = "_other"


class TriggerLabels:
    """The `trigger_id` label of a series: the trigger's id for the triggers named in
    TRIGGERS_METRICS_TRIGGER_IDS and for the first TRIGGERS_METRICS_TRIGGER_LABEL_LIMIT
    others a process counts, `_other` for the rest. 100k triggers must not mean 100k
    series per metric."""

    def __init__(self, limit: int = 100, named: frozenset[str] = frozenset()) -> None:
        self.limit = limit
        self.named = named
        self._labelled: set[str] = set()
        self._lock = threading.Lock()

    def configure(self, limit: int, named: list[str]) -> None:
        with self._lock:
            self.limit, self.named = limit, frozenset(named)

    def __call__(self, trigger_id: str) -> str:
        if trigger_id in self._labelled or trigger_id in self.named:
            return trigger_id
        with self._lock:
            if len(self._labelled) < self.limit:
                self._labelled.add(trigger_id)
                return trigger_id
        return OTHER_TRIGGERS


trigger_label = TriggerLabels()


def observe_all(histogram: Histogram, amounts: Iterable[float]) -> None:
    """`histogram.observe` for each amount, one update per bucket: a batch's latencies at
    once. Per fire, `observe` was 6.7% of the dispatcher's time on the broker (in its child
    process every update is an mmap write behind a pid check). Uses the histogram's
    buckets and sum as prometheus_client keeps them; a unit test holds the result to
    `observe`'s."""
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1
        total += amount
    if not any(counts):
        return
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


EVENTS = Counter("triggers_events_total", "Domain events read by the matcher.", ["outcome"])
MATCH_VERDICTS = Counter(
    "triggers_match_verdicts_total",
    "Candidate triggers evaluated against an event, by trigger and verdict.",
    ["trigger_id", "verdict"],
)
WINDOW_OUTCOMES = Counter(
    "triggers_window_outcomes_total",
    "Events seen by the window evaluator, by outcome (counted, fired, duplicate, late, ...).",
    ["outcome"],
)
MATCHES_IN_PLACE = Counter(
    "triggers_window_matches_in_place_total",
    "Window matches applied in the matcher's own transaction (the key's partition is "
    "owned by the same worker) instead of a hop through trigger-matches.",
)
OVERSIZED_STATES = Counter(
    "triggers_window_state_oversized_total",
    "Window states that outgrew the record limit and started afresh (each dead-lettered).",
)
STATE_KEYS = Gauge(
    "triggers_state_keys",
    "Keys (trigger and group) whose window or pattern state this worker holds.",
    multiprocess_mode="livesum",
)
READ_BEHIND = Gauge(
    "triggers_events_read_behind_seconds",
    "How far the worker's reading of its event topics is behind the clock (0 when each "
    "partition is read to its end): absence and debounce deadlines wait that long.",
    multiprocess_mode="livemax",
)
STATE_KEYS_FORGOTTEN = Counter(
    "triggers_state_keys_forgotten_total",
    "Keys whose state was deleted after TRIGGERS_STATE_IDLE_SECONDS (or their trigger's "
    "longer span) with no event.",
)
FIRES = Counter("triggers_fires_total", "Fires written to trigger-fires.", ["cause"])
DEAD_LETTERS = Counter(
    "triggers_dead_letters_total", "Records sent to trigger-dead-letters.", ["component"]
)
REGISTRY_SIZE = Gauge(
    "triggers_registry_triggers",
    "Trigger definitions held by this process.",
    multiprocess_mode="livemax",  # serve --workers: every process holds them all
)
EVENT_TO_FIRE = Histogram(
    "triggers_event_to_fire_seconds",
    "From the event record's timestamp to its fire being written.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DISPATCHED = Counter("triggers_dispatch_commands_total", "Commands written to agent-runs.")
BREAKER_STOPS = Counter(
    "triggers_circuit_breaker_stops_total",
    "Fires skipped because their trigger's circuit breaker was open.",
)
DUPLICATE_FIRES = Counter(
    "triggers_dispatch_duplicate_fires_total", "Fires dropped as already dispatched."
)
TRANSITIONS = Counter(
    "triggers_execution_transitions_total", "Execution records written, by status.", ["status"]
)
FIRE_TO_COMMAND = Histogram(
    "triggers_fire_to_command_seconds",
    "From a fire being written to its command being committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRANSACTION_ABORTS = Counter(
    "triggers_transaction_aborts_total",
    "Transactions aborted and retried, by loop (event-matcher, dispatcher).",
    ["loop"],
)
TRANSACTION_SECONDS = Histogram(
    "triggers_transaction_seconds",
    "One turn of a transactional loop, by loop and step: handle (the batch), commit (on "
    "the loop's helper thread, while the next batch is handled), wait (for that commit, "
    "once the next batch is handled).",
    ["loop", "step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RUNNER_COMMANDS = Counter(
    "triggers_runner_commands_total", "Commands handled by the reference runner.", ["outcome"]
)
HTTP_REQUESTS = Counter(
    "triggers_http_requests_total",
    "HTTP requests served, by route and status.",
    ["route", "status"],
)
HTTP_LATENCY = Histogram(
    "triggers_http_request_seconds",
    "HTTP request handling time, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WEBHOOK_REQUESTS = Counter(
    "triggers_webhook_requests_total",
    "Webhook calls, by trigger and status.",
    ["trigger_id", "status"],
)
WEBHOOK_AUTH_FAILURES = Counter(
    "triggers_webhook_auth_failures_total",
    "Webhook calls refused as unauthentic, by reason.",
    ["reason"],
)
WEBHOOK_LATENCY = Histogram(
    "triggers_webhook_seconds",
    "From receiving a webhook call to answering it (including Kafka's ack).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WEBHOOK_MAPPING_MISSES = Counter(
    "triggers_webhook_mapping_misses_total",
    "input_mapping paths that found nothing in a delivery (mapped to null), by trigger.",
    ["trigger_id"],
)
SCHEDULE_LATENESS = Histogram(
    "triggers_schedule_lateness_seconds",
    "From a schedule's (jittered) fire time to its fire being written.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
SCHEDULER_TICK = Histogram(
    "triggers_scheduler_tick_seconds",
    "Time to handle one scheduler tick (grows with the fires due).",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1),
)

GC_PAUSES = Histogram(
    "triggers_gc_pause_seconds",
    "Python's cyclic garbage collections in the worker, by generation: every thread of "
    "the process waits while one runs.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CONSUMER_LAG = Gauge(
    "triggers_consumer_lag",
    "Records of an input partition not yet committed by a consumer group of the worker.",
    ["group", "topic", "partition"],
    multiprocess_mode="livemax",
)
CONSUMER_STALLED = Gauge(
    "triggers_consumer_stalled",
    "1 while a consumer group of the worker has not moved for TRIGGERS_WORKER_STALL_SECONDS "
    "as its lag grew (its /healthz answers 503), else 0.",
    ["group"],
    multiprocess_mode="livemax",
)
