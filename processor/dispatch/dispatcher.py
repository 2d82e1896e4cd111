"""The dispatcher: a transactional consume-transform-produce loop (confluent-kafka).

Exactly-once (docs/architecture.md, "Guarantees"): one transaction per batch reads `trigger-fires`,
`agent-run-results` and `dispatch-results`, and writes `agent-runs`, `trigger-executions`,
the state changelog `dispatch-state` and the input offsets (`send_offsets_to_transaction`
with the consumer's group metadata: KIP-447 fencing, so a zombie from before a rebalance
cannot commit). A crash before the commit aborts everything in the batch; the batch is
read again and, because state came back from `dispatch-state` as of the last commit,
yields the same commands once.

    fires ──────────────┐                         ┌─► agent-runs          (key execution id)
    agent-run-results ──┼─► [batch] ─ on_fire ────┼─► trigger-executions  (key execution id)
    dispatch-results ───┘           on_result ────┼─► dispatch-state      (partition = fire's)
       ▲  (results re-keyed by trigger id) ◄──────┼─► dispatch-results    (key trigger id)
                                    expire ───────┴─► events  (on_failure: emit)

State lives on the partition number of the trigger's fires, so whoever owns partition p
of `trigger-fires` restores partition p of `dispatch-state` before it processes anything.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, TopicPartition
from pydantic import ValidationError

from processor import topics
from processor.config import Settings
from processor.deadletters import dead_letter_for
from processor.dispatch.owners import ExecutionOwners
from processor.dispatch.state import (
    DispatchState,
    Effects,
    UnknownExecution,
    bounded,
    expire,
    on_cancel,
    on_fire,
    on_result,
)
from processor.kafka.reader import read_to_end, wait_until_no_open_transactions
from processor.kafka.transactional import TransactionalLoop, Turn
from processor.messages import (
    FIRE_MAX_BYTES,
    CancelRequest,
    ExecutionRecord,
    ExecutionStatus,
    Fire,
    RunResult,
)
from processor.metrics import (
    BREAKER_STOPS,
    DISPATCHED,
    DUPLICATE_FIRES,
    FIRE_TO_COMMAND,
    TRANSITIONS,
    observe_all,
)
from processor.serde import (
    from_json,
    from_json_keeping,
    to_json,
)

log = logging.getLogger(__name__)
COMPONENT = "dispatcher"
BATCH_SIZE = 2000
CANCEL_HEADER = "triggers-cancel"
"""Marks a cancel request among the re-keyed results on `dispatch-results`."""
EXPIRY_INTERVAL_SECONDS = 1.0
RESTORE_WAIT_SECONDS = 10.0
"""How often the wait for a stopped dispatcher's open transaction logs that it waits."""


def state_key(trigger_id: str, execution_id: str) -> bytes:
    """An execution's key on `dispatch-state`."""
    return f"{trigger_id}/{execution_id}".encode()


class Dispatcher(TransactionalLoop):
    """The dispatcher's handling of a batch; the loop itself is TransactionalLoop's."""

    name = COMPONENT
    batch_size = BATCH_SIZE
    periodic_seconds = EXPIRY_INTERVAL_SECONDS

    def __init__(self, settings: Settings) -> None:
        self.fires_topic = topics.topic_name(topics.TRIGGER_FIRES, settings)
        self.results_topic = topics.topic_name(topics.AGENT_RUN_RESULTS, settings)
        self.rekeyed_topic = topics.topic_name(topics.DISPATCH_RESULTS, settings)
        super().__init__(
            settings,
            f"{settings.app_id}-dispatcher",
            [self.fires_topic, self.results_topic, self.rekeyed_topic],
        )
        self.state_topic = topics.topic_name(topics.DISPATCH_STATE, settings)
        self.runs_topic = topics.topic_name(topics.AGENT_RUNS, settings)
        self.executions_topic = topics.topic_name(topics.TRIGGER_EXECUTIONS, settings)
        self.dead_letters_topic = topics.topic_name(topics.DEAD_LETTERS, settings)
        self.control_topic = topics.topic_name(topics.AGENT_RUN_CONTROL, settings)
        self.events_topic = topics.topic_name(topics.EVENTS, settings)
        self.state = DispatchState()
        self.output_max_bytes = settings.result_output_max_bytes
        self.partitions: dict[str, int] = {}
        """The partition that owns each trigger's state (that of its fires)."""
        self.owners = ExecutionOwners(settings, self.executions_topic)
        self._transitions: Counter[str] = Counter()
        self._dispatched = 0
        self._breaker_stops = 0
        self._waits: list[float] = []
        """Each command's time from its fire, observed once per batch."""

    def handle(self, messages: list[Message], producer: Turn) -> None:
        for message in messages:
            self._handle(message, producer)
        self._count()

    def _count(self) -> None:
        """Metrics of the batch, one update per series."""
        for status, count in self._transitions.items():
            TRANSITIONS.labels(status).inc(count)
        self._transitions.clear()
        if self._dispatched:
            DISPATCHED.inc(self._dispatched)
            self._dispatched = 0
        if self._breaker_stops:
            BREAKER_STOPS.inc(self._breaker_stops)
            self._breaker_stops = 0
        if self._waits:
            observe_all(FIRE_TO_COMMAND, self._waits)
            self._waits.clear()

    def periodic(self, producer: Turn) -> None:
        self._write(expire(self.state, datetime.now(UTC)), None, producer)
        self._count()

    # -- state -------------------------------------------------------------------------

    def _state_partitions(self, partitions: list[TopicPartition]) -> list[int]:
        return sorted(
            {
                tp.partition
                for tp in partitions
                if tp.topic in (self.fires_topic, self.rekeyed_topic)
            }
        )

    def forget(self, partitions: list[TopicPartition] | None) -> None:
        self.state.drop_trigger_ids()

    def restore(self, partitions: list[TopicPartition]) -> None:
        self._restore(self._state_partitions(partitions))

    def _restore(self, partitions: list[int]) -> None:
        if not partitions:
            return
        # A predecessor killed mid-transaction leaves it open until the broker aborts it;
        # reading before then would miss what was committed after it (found by the chaos
        # test: duplicates after two rebalances within a minute).
        while not wait_until_no_open_transactions(
            self.settings, self.state_topic, partitions, RESTORE_WAIT_SECONDS
        ):
            if self.stopping:
                return
            log.warning(
                "dispatch-state partitions %s still have an open transaction (a stopped "
                "dispatcher's); waiting for the broker to abort it",
                partitions,
            )
        restored = 0
        for message in read_to_end(self.settings, self.state_topic, partitions):
            key = message.key()
            self._apply_state(key, message.value())
            if key:
                self.partitions[key.decode().partition("/")[0]] = message.partition() or 0
            restored += 1
        log.info("dispatcher restored %d state records from partitions %s", restored, partitions)

    def _apply_state(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        trigger_id, _, execution_id = key.decode().partition("/")
        if value is None:
            self.state.forget(trigger_id, execution_id)
        else:
            self.state.put(from_json(ExecutionRecord, value), bytes(value))

    # -- records -----------------------------------------------------------------------

    def _handle(self, message: Message, producer: Turn) -> None:
        topic = message.topic()
        try:
            if topic == self.fires_topic:
                self._handle_fire(message, producer)
            elif topic == self.results_topic:
                self._forward_result(message, producer)
            else:
                self._handle_result(message, producer)
        except (ValidationError, ValueError, UnknownExecution) as exc:
            reason = _reason(exc)
            log.warning(
                "dead letter from %s[%d]@%d: %s",
                topic,
                message.partition(),
                message.offset(),
                reason,
            )
            key, value = dead_letter_for(message, reason, COMPONENT)
            producer.produce(self.dead_letters_topic, key=key, value=value)

    def _handle_fire(self, message: Message, producer: Turn) -> None:
        raw = _value(message)
        if len(raw) > FIRE_MAX_BYTES:
            raise ValueError(
                f"the fire is {len(raw):,} bytes, over the {FIRE_MAX_BYTES:,} a fire may "
                "take: its command and execution record would pass the broker's limit; "
                "its input must be smaller"
            )
        # The input, most of a fire's bytes, is only written out again: kept as JSON.
        fire, input_json = from_json_keeping(Fire, raw, "input")
        now = datetime.now(UTC)
        self.partitions[fire.trigger_id] = message.partition() or 0
        effects = on_fire(self.state, fire, now, encode=True, input_json=input_json)
        if effects is None:
            DUPLICATE_FIRES.inc()
            return
        self._write(effects, message.partition() or 0, producer)
        if effects.issued_now or effects.commands:
            self._waits.append(max(0.0, (now - fire.fired_at).total_seconds()))

    def _forward_result(self, message: Message, producer: Turn) -> None:
        """Re-key a runtime's result by trigger id, to the partition that owns the state;
        a result without `trigger_id` is joined with `trigger-executions` first."""
        raw = _value(message)
        result = self._bounded(from_json(RunResult, raw), raw)
        trigger_id = result.trigger_id or self.owners.trigger_of(result.execution_id)
        if trigger_id is None:
            raise UnknownExecution(
                f"result for unknown execution {result.execution_id} (it has no trigger_id "
                "and trigger-executions has no such execution)"
            )
        result = result.model_copy(update={"trigger_id": trigger_id})
        producer.produce(self.rekeyed_topic, key=trigger_id.encode(), value=to_json(result))

    def _handle_result(self, message: Message, producer: Turn) -> None:
        if (CANCEL_HEADER, b"1") in (message.headers() or []):
            request = from_json(CancelRequest, _value(message))
            cancel = on_cancel(
                self.state, request.trigger_id, request.execution_id, datetime.now(UTC)
            )
            self._write(cancel, message.partition() or 0, producer)
            return
        raw = _value(message)
        result = self._bounded(from_json(RunResult, raw), raw)
        effects = on_result(self.state, result, datetime.now(UTC))
        self._write(effects, message.partition() or 0, producer)

    def _bounded(self, result: RunResult, raw: bytes) -> RunResult:
        kept = bounded(result, raw, self.output_max_bytes)
        if kept.output_left_out is not None and result.output_left_out is None:
            log.warning(
                "execution %s: its runtime's output is left out of the record: %s",
                result.execution_id,
                kept.output_left_out,
            )
        return kept

    def _write(self, effects: Effects, partition: int | None, producer: Turn) -> None:
        """Publish a decision's effects inside the open transaction."""
        self._breaker_stops += effects.breaker_stops
        for trigger_id, execution_id, written, command_json in effects.issued_now:
            producer.produce(self.runs_topic, key=execution_id.encode(), value=command_json)
            self._dispatched += 1
            self._publish(
                trigger_id, execution_id, ExecutionStatus.PENDING, written, partition, producer
            )
        for command in effects.commands:
            producer.produce(
                self.runs_topic, key=command.execution_id.encode(), value=to_json(command)
            )
            self._dispatched += 1
        for control in effects.controls:
            producer.produce(
                self.control_topic, key=control.execution_id.encode(), value=to_json(control)
            )
        for record, value in zip(effects.records, effects.encoded, strict=True):
            self._publish(
                record.trigger_id, record.execution_id, record.status, value, partition, producer
            )
        for event in effects.events:
            producer.produce(self.events_topic, key=event.source.encode(), value=to_json(event))
        for trigger_id, execution_id in effects.forgotten:
            producer.produce(
                self.state_topic,
                key=state_key(trigger_id, execution_id),
                value=None,
                partition=self._partition(trigger_id, partition),
            )

    def _publish(
        self,
        trigger_id: str,
        execution_id: str,
        status: ExecutionStatus,
        record: bytes,
        partition: int | None,
        producer: Turn,
    ) -> None:
        """An execution record to `trigger-executions` and to the dispatcher's state."""
        producer.produce(self.executions_topic, key=execution_id.encode(), value=record)
        producer.produce(
            self.state_topic,
            key=state_key(trigger_id, execution_id),
            value=record,
            partition=self._partition(trigger_id, partition),
        )
        self._transitions[status] += 1

    def _partition(self, trigger_id: str, given: int | None) -> int:
        return given if given is not None else self.partitions.get(trigger_id, 0)


def _value(message: Message) -> bytes:
    value: Any = message.value()
    if value is None:
        raise ValueError("record has no value")
    return bytes(value)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return (
            f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']} ({exc.error_count()} errors)"
        )
    return str(exc)
