"""A reference agent runtime: consumes `agent-runs`, reports on `agent-run-results`.

What it does with a command is chosen by the command's input, key `runner`:

    {"runner": {"action": "echo"}}                       completed, output = the input
    {"runner": {"action": "sleep", "seconds": 2}}        completed after 2 s
    {"runner": {"action": "fail", "error": "boom"}}      failed with that error
    {"runner": {"action": "hang"}}                       runs until cancelled
    {"runner": {"action": "echo", "fail_attempts": 2}}   attempts 1 and 2 fail, then echo

Every action reports `running` first, and a cancel on `agent-run-control` ends a
sleeping or hanging run as `cancelled`. Runs execute on a thread pool, so a slow one
does not hold up the others.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from pydantic import BaseModel, ConfigDict, ValidationError

from processor import topics
from processor.config import Settings
from processor.deadletters import dead_letter_for
from processor.kafka.clients import new_consumer, new_producer
from processor.logs import about
from processor.messages import (
    ControlAction,
    ControlCommand,
    ExecutionCommand,
    RunResult,
    RunStatus,
)
from processor.metrics import RUNNER_COMMANDS
from processor.serde import from_json, to_json

log = logging.getLogger(__name__)
COMPONENT = "runner"


class Action(StrEnum):
    ECHO = "echo"
    """Complete at once; the output is the command's input."""
    SLEEP = "sleep"
    """Complete after `seconds`."""
    FAIL = "fail"
    """Fail at once with `error`."""
    HANG = "hang"
    """Never finish unless cancelled."""


class Behaviour(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action = Action.ECHO
    seconds: float = 0.0
    error: str = "failed on request"
    fail_attempts: int = 0
    """Fail attempts up to this one with `error`, whatever the action (to try retries)."""


class Runner:
    def __init__(self, settings: Settings, concurrency: int = 16) -> None:
        self.settings = settings
        self.runs_topic = topics.topic_name(topics.AGENT_RUNS, settings)
        self.control_topic = topics.topic_name(topics.AGENT_RUN_CONTROL, settings)
        self.results_topic = topics.topic_name(topics.AGENT_RUN_RESULTS, settings)
        self.dead_letters_topic = topics.topic_name(topics.DEAD_LETTERS, settings)
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="run")
        self.cancels: dict[str, threading.Event] = {}
        self.stopping = threading.Event()
        self.producer: Producer = new_producer(settings)

    def report(self, command: ExecutionCommand, status: RunStatus, **fields: Any) -> None:
        result = RunResult(
            execution_id=command.execution_id,
            trigger_id=command.trigger_id,
            status=status,
            at=datetime.now(UTC),
            attempt=command.attempt,
            **fields,
        )
        self.producer.produce(
            self.results_topic, key=command.execution_id.encode(), value=to_json(result)
        )
        self.producer.poll(0)
        RUNNER_COMMANDS.labels(status.value).inc()

    def execute(self, command: ExecutionCommand, behaviour: Behaviour) -> None:
        if command.attempt > 1:  # a cancel of an earlier attempt does not stop this one
            self.cancels[command.execution_id] = threading.Event()
        cancel = self.cancels.setdefault(command.execution_id, threading.Event())
        try:
            self.report(command, RunStatus.RUNNING)
            if command.attempt <= behaviour.fail_attempts:
                self.report(command, RunStatus.FAILED, error=behaviour.error)
                return
            if behaviour.action is Action.HANG:
                cancelled = self._wait(cancel, None)
            elif behaviour.action is Action.SLEEP:
                cancelled = self._wait(cancel, behaviour.seconds)
            else:
                cancelled = cancel.is_set()
            if cancelled:
                self.report(command, RunStatus.CANCELLED, error="cancelled on request")
            elif behaviour.action is Action.FAIL:
                self.report(command, RunStatus.FAILED, error=behaviour.error)
            else:
                self.report(command, RunStatus.COMPLETED, output={"echo": command.input})
        finally:
            self.cancels.pop(command.execution_id, None)

    def _wait(self, cancel: threading.Event, seconds: float | None) -> bool:
        """Wait for a cancel (True) or the time to pass (False); stop on shutdown."""
        waited = 0.0
        while not self.stopping.is_set():
            if cancel.wait(0.1):
                return True
            waited += 0.1
            if seconds is not None and waited >= seconds:
                return False
        return cancel.is_set()

    def handle(self, message: Message) -> None:
        value = message.value()
        try:
            if value is None:
                raise ValueError("record has no value")
            if message.topic() == self.control_topic:
                control = from_json(ControlCommand, value)
                if control.action is ControlAction.CANCEL:
                    self.cancels.setdefault(control.execution_id, threading.Event()).set()
                return
            command = from_json(ExecutionCommand, value)
            behaviour = Behaviour.model_validate(command.input.get("runner") or {})
        except (ValidationError, ValueError) as exc:
            log.warning(
                "rejecting %s[%d]@%d: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc,
            )
            key, letter = dead_letter_for(message, str(exc), COMPONENT)
            self.producer.produce(self.dead_letters_topic, key=key, value=letter)
            return
        log.info(
            "run %s (agent %s): %s",
            command.execution_id,
            command.agent_id,
            behaviour.action.value,
            extra=about(command.trigger_id, command.execution_id),
        )
        self.pool.submit(self.execute, command, behaviour)

    def run(self) -> None:
        consumer = new_consumer(self.settings, f"{self.settings.app_id}-runner")
        consumer.subscribe([self.runs_topic, self.control_topic])
        log.info("runner consuming %s", self.runs_topic)
        try:
            while not self.stopping.is_set():
                message = consumer.poll(0.2)
                self.producer.poll(0)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("runner consumer: %s", error)
                    continue
                self.handle(message)
                consumer.commit(message=message, asynchronous=True)
        finally:
            self.stopping.set()
            self.pool.shutdown(wait=True)
            self.producer.flush(30)
            consumer.close()
            log.info("runner stopped")


def run_runner(settings: Settings) -> None:
    """Run in the foreground until SIGTERM or Ctrl-C."""
    from processor.kafka.admin import refuse_early

    refuse_early(settings)
    runner = Runner(settings)

    def stop(signum: int, frame: Any) -> None:
        runner.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.runner_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.runner_metrics_port, addr=settings.http_host)
    runner.run()
