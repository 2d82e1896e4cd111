"""The worker's own account of its consumers: lag per group and partition, and whether
it is stuck.

Every `interval` seconds a thread asks Kafka, as any outside tool would, for each of the
worker's consumer groups' committed offsets and the end offsets (read_committed) of its
input partitions:

    lag = end offset - committed offset        triggers_consumer_lag{group,topic,partition}

A group is **stalled** when its committed offsets have not moved for `stall_seconds`
while its lag grew: records keep arriving and nobody takes them (Faust's recovery has
been seen to stall like this; so does a loop stuck behind a transaction that never
ends). The worker's `/healthz` then answers 503, so an orchestrator restarts it; it
answers 200 again as soon as the group moves. A group with nothing to read is never
stalled, however long it idles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaException
from confluent_kafka import TopicPartition as Partition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from processor.config import Settings
from processor.kafka.clients import common_config
from processor.metrics import CONSUMER_LAG, CONSUMER_STALLED
from processor.worker.dispatcher_process import merged

log = logging.getLogger(__name__)
CALL_TIMEOUT_SECONDS = 10.0


@dataclass
class GroupProgress:
    """What the monitor remembers of one group between samples."""

    committed: int = -1
    """The sum of its committed offsets at the last sample."""
    moved_at: float = field(default_factory=time.monotonic)
    lag_when_moved: int = 0
    lag: int = 0

    def stalled(self, now: float, stall_seconds: float) -> bool:
        return now - self.moved_at >= stall_seconds and self.lag > self.lag_when_moved


class ConsumerHealth:
    def __init__(
        self,
        settings: Settings,
        groups: dict[str, list[str]],
        interval_seconds: float,
        stall_seconds: float,
    ) -> None:
        self.settings = settings
        self.groups = groups
        """Each consumer group of the worker and the topics it reads."""
        self.interval = interval_seconds
        self.stall_seconds = stall_seconds
        self.progress = {group: GroupProgress() for group in groups}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer-health", daemon=True)
        self._labels: set[tuple[str, str, str]] = set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        admin = AdminClient(common_config(self.settings))
        while not self._stopping.wait(self.interval):
            try:
                self.sample(admin, time.monotonic())
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer lag: Kafka did not answer (%s); trying again", exc)

    def sample(self, admin: AdminClient, now: float) -> None:
        """Read every group's committed and end offsets; update the lag and progress."""
        partitions = self._partitions(admin)
        ends = self._offsets(admin, partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        earliest = self._offsets(admin, partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        seen: set[tuple[str, str, str]] = set()
        for group, topics in self.groups.items():
            mine = [tp for tp in partitions if tp.topic in topics]
            committed = self._committed(admin, group, mine)
            total_lag, total_committed = 0, 0
            for tp in mine:
                key = (tp.topic, tp.partition)
                position = committed.get(key, -1)
                start = earliest.get(key, 0)
                lag = max(0, ends.get(key, 0) - max(position, start))
                labels = (group, tp.topic, str(tp.partition))
                CONSUMER_LAG.labels(*labels).set(lag)
                seen.add(labels)
                total_lag += lag
                total_committed += max(position, 0)
            self.observe(group, total_committed, total_lag, now)
        for group, progress in self.progress.items():
            CONSUMER_STALLED.labels(group).set(int(progress.stalled(now, self.stall_seconds)))
        for gone in self._labels - seen:
            CONSUMER_LAG.remove(*gone)
        self._labels = seen

    def observe(self, group: str, committed: int, lag: int, now: float) -> None:
        """One sample of a group: the sum of its committed offsets, and its lag."""
        progress = self.progress[group]
        if committed != progress.committed:
            progress.committed, progress.moved_at = committed, now
            progress.lag_when_moved = lag
        elif lag < progress.lag_when_moved:
            progress.lag_when_moved = lag  # the lag went down: not stuck
        progress.lag = lag

    def health(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """Whether no group is stalled, and each group's lag and seconds since it moved."""
        now = time.monotonic() if now is None else now
        report = {
            group: {
                "lag": p.lag,
                "seconds_since_progress": round(now - p.moved_at, 1),
                "stalled": p.stalled(now, self.stall_seconds),
            }
            for group, p in self.progress.items()
        }
        return not any(g["stalled"] for g in report.values()), report

    def _partitions(self, admin: AdminClient) -> list[Partition]:
        wanted = {topic for topics in self.groups.values() for topic in topics}
        metadata = admin.list_topics(timeout=CALL_TIMEOUT_SECONDS).topics
        return [
            Partition(topic, partition)
            for topic in sorted(wanted)
            if topic in metadata and metadata[topic].error is None
            for partition in sorted(metadata[topic].partitions)
        ]

    @staticmethod
    def _offsets(
        admin: AdminClient, partitions: list[Partition], spec: OffsetSpec
    ) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        futures = admin.list_offsets(
            {tp: spec for tp in partitions},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=CALL_TIMEOUT_SECONDS,
        )
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    @staticmethod
    def _committed(
        admin: AdminClient, group: str, partitions: list[Partition]
    ) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        request = ConsumerGroupTopicPartitions(group, partitions)
        futures = admin.list_consumer_group_offsets([request], request_timeout=CALL_TIMEOUT_SECONDS)
        answer = futures[group].result()
        return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions}


def serve_metrics_and_health(
    health: ConsumerHealth,
    host: str,
    port: int,
    ready: Callable[[], bool],
    more_metrics: Callable[[], Iterable[Metric]] | None = None,
) -> ThreadingHTTPServer:
    """The worker's HTTP endpoint: `/metrics` (Prometheus; with `more_metrics`, those of
    its dispatcher's process too), `/healthz` (200, or 503 while a consumer group is
    stalled; JSON with each group's lag either way) and `/readyz` (200 once `ready()`:
    definitions loaded and both loops consuming)."""

    def page() -> bytes:
        if more_metrics is None:
            return generate_latest()
        families = merged(REGISTRY.collect(), more_metrics())

        class Families:
            def collect(self) -> Iterable[Metric]:
                return families

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Families())
        return generate_latest(registry)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, page(), CONTENT_TYPE_LATEST)
            elif path == "/readyz":
                up = ready()
                said = orjson.dumps({"status": "ready" if up else "starting"})
                self._answer(200 if up else 503, said, "application/json")
            elif path == "/healthz":
                healthy, groups = health.health()
                body = {"status": "ok" if healthy else "stalled", "groups": groups}
                self._answer(200 if healthy else 503, orjson.dumps(body), "application/json")
            else:
                missing = b'{"error": "try /metrics, /healthz or /readyz"}'
                self._answer(404, missing, "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes and probes every few seconds: not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
