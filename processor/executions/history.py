"""Execution history: a live view of the compacted `trigger-executions` (the API and the
console), and a one-off read of it (the CLI).

Retention of the live view: per trigger, the newest MAX_PER_TRIGGER executions and none
older than MAX_AGE are served; the topic itself is compacted (one record per execution),
and `read_latest` reads all of it.
"""

from __future__ import annotations

import heapq
import threading
from datetime import UTC, datetime, timedelta

from confluent_kafka import Message
from pydantic import ValidationError

from processor import topics
from processor.config import Settings
from processor.definitions.model import TriggerDocument
from processor.dispatch.state import Failures, run_of_failures
from processor.executions.status import TriggerStatus, trigger_status
from processor.kafka.follower import Follower
from processor.kafka.reader import read_to_end
from processor.messages import ExecutionRecord, ExecutionStatus
from processor.serde import from_json

MAX_PER_TRIGGER = 1000
MAX_AGE = timedelta(days=30)


def read_latest(settings: Settings) -> tuple[dict[str, ExecutionRecord], dict[str, Failures]]:
    """Every execution's latest record by execution id, and each trigger's current run
    of failures (in the order its executions finished, as the dispatcher counts it).
    Raises KafkaUnavailable (a TriggersError) when the topic cannot be read."""
    latest: dict[str, ExecutionRecord] = {}
    for message in read_to_end(settings, topics.topic_name(topics.TRIGGER_EXECUTIONS, settings)):
        value = message.value()
        if value is None:
            continue
        record = from_json(ExecutionRecord, value)
        latest[record.execution_id] = record
    by_trigger: dict[str, list[ExecutionRecord]] = {}
    for record in latest.values():
        by_trigger.setdefault(record.trigger_id, []).append(record)
    return latest, {tid: run_of_failures(records) for tid, records in by_trigger.items()}


Records = list[ExecutionRecord]


class ExecutionsView:
    def __init__(self, settings: Settings) -> None:
        self._by_trigger: dict[str, dict[str, ExecutionRecord]] = {}
        self._lock = threading.Lock()
        self._follower = Follower(
            settings, topics.topic_name(topics.TRIGGER_EXECUTIONS, settings), self._apply
        )
        self.ready = self._follower.ready

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

    def _apply(self, message: Message) -> None:
        value = message.value()
        if value is None:
            return
        try:
            record = from_json(ExecutionRecord, value)
        except ValidationError:
            return
        with self._lock:
            executions = self._by_trigger.setdefault(record.trigger_id, {})
            executions[record.execution_id] = record
            if len(executions) > MAX_PER_TRIGGER * 1.1:
                keep = sorted(executions.values(), key=_newest_first)[:MAX_PER_TRIGGER]
                self._by_trigger[record.trigger_id] = {r.execution_id: r for r in keep}

    def failures(self, trigger_id: str, workspace: str | None = None) -> Failures:
        """The trigger's current run of failures, in the order its executions finished
        (of the newest MAX_PER_TRIGGER), as the dispatcher counts it; only the workspace's
        executions when one is given."""
        with self._lock:
            records = list(self._by_trigger.get(trigger_id, {}).values())
        return run_of_failures(
            [r for r in records if workspace is None or r.workspace_id == workspace]
        )

    def recorded_in(self, trigger_id: str, workspace: str) -> bool:
        """Whether executions of the trigger (a deleted one's too) are recorded in the
        workspace."""
        with self._lock:
            records = list(self._by_trigger.get(trigger_id, {}).values())
        return any(record.workspace_id == workspace for record in records)

    def status(self, document: TriggerDocument, now: datetime | None = None) -> TriggerStatus:
        """The trigger's status from its workspace's executions (`trigger_status`)."""
        trigger_id, workspace = document.trigger_id, document.workspace
        return trigger_status(
            document,
            self.failures(trigger_id, workspace),
            self.list(trigger_id, workspace=workspace),
            now or datetime.now(UTC),
        )

    def get(self, trigger_id: str, execution_id: str) -> ExecutionRecord | None:
        with self._lock:
            return self._by_trigger.get(trigger_id, {}).get(execution_id)

    def list(
        self,
        trigger_id: str,
        status: ExecutionStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        workspace: str | None = None,
    ) -> list[ExecutionRecord]:
        """Newest first, within the retention; only the workspace's when one is given."""
        oldest = datetime.now(UTC) - MAX_AGE
        with self._lock:
            records = list(self._by_trigger.get(trigger_id, {}).values())
        return sorted(
            (
                r
                for r in records
                if r.triggered_at >= oldest
                and (status is None or r.status is status)
                and (since is None or r.triggered_at >= since)
                and (until is None or r.triggered_at < until)
                and (workspace is None or r.workspace_id == workspace)
            ),
            key=_newest_first,
        )[:MAX_PER_TRIGGER]

    def newest(
        self,
        workspace: str,
        status: ExecutionStatus | None = None,
        trigger_id: str | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 50,
    ) -> Records:
        """The workspace's executions of every trigger (deleted ones' too), or of one,
        newest first, within the retention; those after `after` (a `_newest_first` key)
        only. One pass over what is kept, whatever the number of triggers."""
        oldest = datetime.now(UTC) - MAX_AGE
        with self._lock:
            if trigger_id is None:
                records = [r for kept in self._by_trigger.values() for r in kept.values()]
            else:
                records = list(self._by_trigger.get(trigger_id, {}).values())
        return heapq.nsmallest(
            limit,
            (
                r
                for r in records
                if r.workspace_id == workspace
                and r.triggered_at >= oldest
                and (status is None or r.status is status)
                and (after is None or _newest_first(r) > after)
            ),
            key=_newest_first,
        )


def _newest_first(record: ExecutionRecord) -> tuple[float, str]:
    return (-record.triggered_at.timestamp(), record.execution_id)
