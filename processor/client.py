"""A small Python client for applications and agent runtimes.

from processor.client import TriggersClient

client = TriggersClient("localhost:9092")   # or TriggersClient(settings=Settings()) for
                                            # TRIGGERS_KAFKA_* (a secured cluster)
client.emit("order.created", source="shop", data={"order_id": "o1"})   # waits for the ack
await client.emit_async("order.paid", source="shop", data={"order_id": "o1"})

for record in client.executions():                   # ExecutionRecord, as they change
    print(record.execution_id, record.status)

for command in client.agent_runs(group_id="my-runtime"):   # for an agent runtime
    client.report(command, "running")
    client.report(command, "completed", output={"answer": 42})
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from confluent_kafka import KafkaError

from processor import topics
from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.kafka.clients import new_consumer, new_producer
from processor.messages import ExecutionCommand, ExecutionRecord, RunResult, RunStatus, utcnow
from processor.serde import MAX_NESTING, from_json, may_nest_too_deep, nesting, to_json


class TriggersClient:
    def __init__(
        self,
        bootstrap: str | None = None,
        topic_prefix: str | None = None,
        settings: Settings | None = None,
        **kafka: Any,
    ) -> None:
        """`bootstrap` and `topic_prefix` as given, else TRIGGERS_KAFKA_BOOTSTRAP and
        TRIGGERS_TOPIC_PREFIX as the product's own components read them (else
        localhost:9092 and no prefix). `kafka`: any other setting by its field name, e.g.
        `kafka_security_protocol="SASL_SSL", kafka_sasl_username=...,
        kafka_sasl_password=..., kafka_ssl_ca_location=...`, also read from the
        environment when not given; or `settings` whole."""
        given: dict[str, Any] = {"kafka_bootstrap": bootstrap, "topic_prefix": topic_prefix}
        self.settings = settings or Settings(
            **{name: value for name, value in given.items() if value is not None}, **kafka
        )
        self._producer = new_producer(self.settings)

    def _topic(self, spec: topics.TopicSpec) -> str:
        return topics.topic_name(spec, self.settings)

    @staticmethod
    def event(
        type_: str, source: str, data: Any = None, id: str | None = None, **attributes: Any
    ) -> bytes:
        """A CloudEvents 1.0 structured event; ValueError when `type_` or `source` is not a
        non-empty string (the matcher would dead-letter such an event)."""
        for name, given, example in (("type_", type_, "order.created"), ("source", source, "shop")):
            if not isinstance(given, str) or not given:
                raise ValueError(
                    f"an event's {name} must be a non-empty string, e.g. {example!r}; got {given!r}"
                )
        event = {
            "specversion": "1.0",
            "id": id or str(uuid.uuid4()),
            "type": type_,
            "source": source,
            "time": utcnow().isoformat(),
            "data": data,
            **attributes,
        }
        try:
            raw: bytes | None = orjson.dumps(event)
        except orjson.JSONEncodeError:  # past orjson's own depth, or not JSON at all
            raw = None
        # two byte counts for almost every event; the walk only when they say it may nest
        if (raw is None or may_nest_too_deep(raw)) and nesting(event) > MAX_NESTING:
            raise ValueError(
                f"the event nests deeper than {MAX_NESTING} levels, which workers refuse "
                "(a fire could not carry it); flatten its data"
            )
        if raw is None:
            raw = orjson.dumps(event)  # raises why it is not JSON
        return raw

    def emit(
        self,
        type_: str,
        source: str,
        data: Any = None,
        key: str | None = None,
        timeout_seconds: float = 10.0,
        **attributes: Any,
    ) -> None:
        """Produce an event and wait until the broker acknowledged it."""
        errors: list[str] = []
        self._producer.produce(
            self._topic(topics.EVENTS),
            key=key.encode() if key else None,
            value=self.event(type_, source, data, **attributes),
            on_delivery=lambda error, _msg: errors.append(str(error)) if error else None,
        )
        if self._producer.flush(timeout_seconds) or errors:
            raise KafkaUnavailable(
                f"the event was not acknowledged: {'; '.join(errors) or 'timed out'}"
            )

    async def emit_async(
        self, type_: str, source: str, data: Any = None, key: str | None = None, **attributes: Any
    ) -> None:
        """`emit` without blocking the event loop."""
        await asyncio.to_thread(self.emit, type_, source, data, key, **attributes)

    def _records(self, spec: topics.TopicSpec, group_id: str, commit: bool) -> Iterator[bytes]:
        consumer = new_consumer(self.settings, group_id)
        consumer.subscribe([self._topic(spec)])
        try:
            while True:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaUnavailable(str(error))
                    continue
                value = message.value()
                if value is not None:
                    yield value
                if commit:
                    consumer.commit(message=message, asynchronous=False)
        finally:
            consumer.close()

    def executions(self, trigger_id: str | None = None) -> Iterator[ExecutionRecord]:
        """Every execution record change from the beginning, then live ones (endless)."""
        for value in self._records(topics.TRIGGER_EXECUTIONS, f"client-{uuid.uuid4()}", False):
            record = from_json(ExecutionRecord, value)
            if trigger_id is None or record.trigger_id == trigger_id:
                yield record

    def agent_runs(self, group_id: str) -> Iterator[ExecutionCommand]:
        """Commands for an agent runtime; each is committed once the next is asked for."""
        for value in self._records(topics.AGENT_RUNS, group_id, True):
            yield from_json(ExecutionCommand, value)

    def report(
        self,
        command: ExecutionCommand,
        status: str | RunStatus,
        output: Any = None,
        error: str | None = None,
    ) -> None:
        """Report on an execution (running, completed, failed, cancelled)."""
        result = RunResult(
            execution_id=command.execution_id,
            trigger_id=command.trigger_id,
            status=RunStatus(status),
            output=output,
            error=error,
            at=utcnow(),
            attempt=command.attempt,
        )
        value = to_json(result)
        errors: list[str] = []
        self._producer.produce(
            self._topic(topics.AGENT_RUN_RESULTS),
            key=command.execution_id.encode(),
            value=value,
            on_delivery=lambda error, _msg: errors.append(str(error)) if error else None,
        )
        if self._producer.flush(10) or errors:
            raise KafkaUnavailable(
                f"the result ({len(value):,} bytes) was not acknowledged: "
                f"{'; '.join(errors) or 'timed out'}"
            )
