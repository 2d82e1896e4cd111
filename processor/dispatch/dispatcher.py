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
       ▲  (results re-keyed by trigger id) ◄──────┘─► dispatch-results    (key trigger id)

State lives on the partition number of the trigger's fires, so whoever owns partition p
of `trigger-fires` restores partition p of `dispatch-state` before it processes anything.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from processor import topics
from processor.config import Settings
from processor.deadletters import dead_letter_for
from processor.dispatch.owners import ExecutionOwners
from processor.dispatch.state import (
    DispatchState,
    Effects,
    UnknownExecution,
    expire,
    on_cancel,
    on_fire,
    on_result,
)
from processor.errors import KafkaUnavailable
from processor.kafka.clients import new_consumer, new_producer
from processor.kafka.deadline import Deadline, DeadlineExceeded
from processor.kafka.reader import read_to_end, wait_until_no_open_transactions
from processor.messages import CancelRequest, ExecutionRecord, Fire, RunResult
from processor.metrics import (
    DISPATCHED,
    DUPLICATE_FIRES,
    FIRE_TO_COMMAND,
    TRANSACTION_ABORTS,
    TRANSITIONS,
)
from processor.serde import from_json, to_json

log = logging.getLogger(__name__)
COMPONENT = "dispatcher"
BATCH_SIZE = 500
CANCEL_HEADER = "triggers-cancel"
"""Marks a cancel request among the re-keyed results on `dispatch-results`."""
EXPIRY_INTERVAL_SECONDS = 1.0
TRANSACTION_TIMEOUT_MS = 20_000
"""The broker aborts a dead dispatcher's open transaction after this long."""
RESTORE_WAIT_SECONDS = 10.0
"""How often the wait for such a transaction logs that it still waits."""
CALL_TIMEOUT_SECONDS = 30.0
"""The timeout given to each transactional call."""
CALL_DEADLINE_SECONDS = 45.0
"""When the dispatcher gives up on a transactional call that ignores its timeout."""


T = TypeVar("T")


def state_key(record: ExecutionRecord) -> bytes:
    return f"{record.trigger_id}/{record.execution_id}".encode()


class Dispatcher:
    """Runs the loop in its own thread; `start()` and `stop()` are called by the worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fires_topic = topics.topic_name(topics.TRIGGER_FIRES, settings)
        self.results_topic = topics.topic_name(topics.AGENT_RUN_RESULTS, settings)
        self.rekeyed_topic = topics.topic_name(topics.DISPATCH_RESULTS, settings)
        self.state_topic = topics.topic_name(topics.DISPATCH_STATE, settings)
        self.runs_topic = topics.topic_name(topics.AGENT_RUNS, settings)
        self.executions_topic = topics.topic_name(topics.TRIGGER_EXECUTIONS, settings)
        self.dead_letters_topic = topics.topic_name(topics.DEAD_LETTERS, settings)
        self.group_id = f"{settings.app_id}-dispatcher"
        self.state = DispatchState()
        self.partitions: dict[str, int] = {}
        """The partition that owns each trigger's state (that of its fires)."""
        self.control_topic = topics.topic_name(topics.AGENT_RUN_CONTROL, settings)
        self.owners = ExecutionOwners(settings, self.executions_topic)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._calls = Deadline("dispatcher-txn")
        self.ready = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 30.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def _new_producer(self) -> Producer:
        """A transactional producer, once Kafka lets it initialise (retried until then)."""
        producer = self._retrying(self._init_producer)
        if producer is None:  # stopping
            raise KafkaException(KafkaError(KafkaError._DESTROY, "dispatcher stopping"))
        return producer

    def _init_producer(self) -> Producer:
        transactional_id = f"{self.group_id}-{socket.gethostname()}-{os.getpid()}"
        producer = new_producer(
            self.settings,
            **{
                "transactional.id": transactional_id,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            },
        )
        self._transactional(producer.init_transactions)
        return producer

    def _transactional(self, call: Callable[..., None], *args: Any) -> None:
        """A transactional producer call, given up on if it outlives its own timeout."""
        self._calls.call(CALL_DEADLINE_SECONDS, call, *args, CALL_TIMEOUT_SECONDS)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("dispatcher stopped by an unexpected error; the worker exits")
            os.kill(os.getpid(), 15)

    def _new_consumer(self) -> Consumer:
        consumer = new_consumer(self.settings, self.group_id)
        consumer.subscribe(
            [self.fires_topic, self.results_topic, self.rekeyed_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        return consumer

    def _replace_consumer(self, consumer: Consumer) -> Consumer:
        """A new group member in place of `consumer`: it starts from the committed
        offsets and restores the state of what it is assigned, like any new owner.

        After a broker restart librdkafka's consumer, like its producer, can keep asking
        a coordinator connection that never answers: its offset fetches then time out
        forever (seen in the broker-restart test, minutes of them, nothing dispatched)."""
        self.state.drop_trigger_ids()
        try:
            self._calls.call(CALL_DEADLINE_SECONDS, consumer.close)
        except (KafkaException, DeadlineExceeded) as exc:
            log.warning("dispatcher: the old consumer did not close (%s); leaving it", exc)
        return self._new_consumer()

    def _loop(self) -> None:
        consumer = self._new_consumer()
        producer = self._new_producer()
        log.info("dispatcher started (group %s)", self.group_id)
        last_expiry = time.monotonic()
        while not self._stopping.is_set():
            # Wait for the first record only, then take what is already fetched: a batch
            # when busy, no waiting for one when not (consume(n) blocks until n arrive).
            first = consumer.poll(0.2)
            messages = [] if first is None else [first, *consumer.consume(BATCH_SIZE - 1, 0)]
            self.ready.set()
            messages = [m for m in messages if self._usable(m)]
            expiring = time.monotonic() - last_expiry >= EXPIRY_INTERVAL_SECONDS
            if not messages and not expiring:
                continue
            try:
                producer.begin_transaction()
                for message in messages:
                    self._handle(message, producer)
                if expiring:
                    last_expiry = time.monotonic()
                    self._write(expire(self.state, datetime.now(UTC)), None, producer)
                offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
                if offsets:
                    self._transactional(
                        producer.send_offsets_to_transaction,
                        offsets,
                        consumer.consumer_group_metadata(),
                    )
                self._transactional(producer.commit_transaction)
            except (KafkaException, DeadlineExceeded) as exc:
                TRANSACTION_ABORTS.inc()
                producer, stuck = self._after_failed_transaction(producer, exc)
                consumer = self._replace_consumer(consumer) if stuck else self._rewind(consumer)
        consumer.close()
        log.info("dispatcher stopped")

    def _after_failed_transaction(
        self, producer: Producer, exc: KafkaException | DeadlineExceeded
    ) -> tuple[Producer, bool]:
        """The producer to go on with once a transaction failed, and whether the clients
        look stuck: this producer, its transaction aborted, or a new one (same
        transactional id, so Kafka aborts the old one's).

        A producer whose call hung or timed out is replaced, and the consumer with it:
        after a broker restart librdkafka can keep a request queued for a coordinator
        connection that never comes back, and every later call of that client times out
        the same way (seen in the broker-restart test)."""
        error = exc.args[0] if isinstance(exc, KafkaException) else None
        if error is not None and not error.fatal() and error.code() != KafkaError._TIMED_OUT:
            log.warning("dispatcher transaction failed (%s); rewinding", error)
            try:
                self._transactional(producer.abort_transaction)
                return producer, False
            except (KafkaException, DeadlineExceeded) as abort_failed:
                exc = abort_failed
        log.warning(
            "dispatcher transaction failed (%s; librdkafka can get stuck like this after a"
            " broker restart); new producer and consumer",
            exc,
        )
        return self._new_producer(), True

    @staticmethod
    def _usable(message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("dispatcher consumer: %s", error)
        return False

    # -- state -------------------------------------------------------------------------

    def _state_partitions(self, partitions: list[TopicPartition]) -> list[int]:
        return sorted(
            {
                tp.partition
                for tp in partitions
                if tp.topic in (self.fires_topic, self.rekeyed_topic)
            }
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        def restore() -> None:
            # A stable offset fetch waits for a fenced predecessor's open transaction to
            # end, so the state read next includes everything that predecessor committed.
            consumer.committed(partitions, timeout=60)
            self._restore(self._state_partitions(partitions))

        self._retrying(restore)

    def _retrying(self, step: Callable[[], T]) -> T | None:
        """Run `step` until it gets through Kafka (a broker restart is not an error);
        None if the dispatcher stops first."""
        while not self._stopping.is_set():
            try:
                return step()
            except (KafkaException, KafkaUnavailable, DeadlineExceeded) as exc:
                log.warning("dispatcher: Kafka is not answering (%s); retrying in 1 s", exc)
                time.sleep(1)
        return None

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.state.drop_trigger_ids()

    def _rewind(self, consumer: Consumer) -> Consumer:
        """After an abort: back to the last committed offsets and the state they match;
        if Kafka does not say what those are, a new consumer that starts from them."""
        try:
            assignment = consumer.assignment()
            self.state.drop_trigger_ids()
            self._restore(self._state_partitions(assignment))
            for tp in consumer.committed(assignment, timeout=CALL_TIMEOUT_SECONDS):
                consumer.seek(
                    TopicPartition(
                        tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    )
                )
        except (KafkaException, KafkaUnavailable) as exc:
            log.warning("dispatcher: could not rewind (%s); new consumer", exc)
            return self._replace_consumer(consumer)
        return consumer

    def _restore(self, partitions: list[int]) -> None:
        if not partitions:
            return
        # A predecessor killed mid-transaction leaves it open until the broker aborts it;
        # reading before then would miss what was committed after it (found by the chaos
        # test: duplicates after two rebalances within a minute).
        while not wait_until_no_open_transactions(
            self.settings, self.state_topic, partitions, RESTORE_WAIT_SECONDS
        ):
            if self._stopping.is_set():
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
            self.state.put(from_json(ExecutionRecord, value))

    # -- records -----------------------------------------------------------------------

    def _handle(self, message: Message, producer: Producer) -> None:
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

    def _handle_fire(self, message: Message, producer: Producer) -> None:
        fire = from_json(Fire, _value(message))
        now = datetime.now(UTC)
        self.partitions[fire.trigger_id] = message.partition() or 0
        effects = on_fire(self.state, fire, now)
        if effects is None:
            DUPLICATE_FIRES.inc()
            return
        self._write(effects, message.partition() or 0, producer)
        if effects.commands:
            FIRE_TO_COMMAND.observe(max(0.0, (now - fire.fired_at).total_seconds()))

    def _forward_result(self, message: Message, producer: Producer) -> None:
        """Re-key a runtime's result by trigger id, to the partition that owns the state;
        a result without `trigger_id` is joined with `trigger-executions` first."""
        result = from_json(RunResult, _value(message))
        trigger_id = result.trigger_id or self.owners.trigger_of(result.execution_id)
        if trigger_id is None:
            raise UnknownExecution(
                f"result for unknown execution {result.execution_id} (it has no trigger_id "
                "and trigger-executions has no such execution)"
            )
        result = result.model_copy(update={"trigger_id": trigger_id})
        producer.produce(self.rekeyed_topic, key=trigger_id.encode(), value=to_json(result))

    def _handle_result(self, message: Message, producer: Producer) -> None:
        if (CANCEL_HEADER, b"1") in (message.headers() or []):
            request = from_json(CancelRequest, _value(message))
            cancel = on_cancel(
                self.state, request.trigger_id, request.execution_id, datetime.now(UTC)
            )
            self._write(cancel, message.partition() or 0, producer)
            return
        result = from_json(RunResult, _value(message))
        effects = on_result(self.state, result, datetime.now(UTC))
        self._write(effects, message.partition() or 0, producer)

    def _write(self, effects: Effects, partition: int | None, producer: Producer) -> None:
        """Publish a decision's effects inside the open transaction."""
        for command in effects.commands:
            producer.produce(
                self.runs_topic, key=command.execution_id.encode(), value=to_json(command)
            )
            DISPATCHED.inc()
        for control in effects.controls:
            producer.produce(
                self.control_topic, key=control.execution_id.encode(), value=to_json(control)
            )
        for record in effects.records:
            value = to_json(record)
            producer.produce(self.executions_topic, key=record.execution_id.encode(), value=value)
            producer.produce(
                self.state_topic,
                key=state_key(record),
                value=value,
                partition=self._partition(record.trigger_id, partition),
            )
            TRANSITIONS.labels(record.status.value).inc()
        for trigger_id, execution_id in effects.forgotten:
            producer.produce(
                self.state_topic,
                key=f"{trigger_id}/{execution_id}".encode(),
                value=None,
                partition=self._partition(trigger_id, partition),
            )

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
