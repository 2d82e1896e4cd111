"""Helpers for tests against the real broker: processes, producing, reading topics."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from processor import topics
from processor.config import Settings

ROOT = Path(__file__).resolve().parents[2]
TRIGGERS = str(ROOT / ".venv" / "bin" / "triggers")


def delete_topics(bootstrap: str, prefix: str, *others: str) -> None:
    """Delete a deployment's topics: those named with its prefix and Faust's own (named
    after the app id, the prefix without its dot), and those that start with any of
    `others` (the bench's peers: Quix Streams names its changelogs after its group). A
    broker kept between runs of the suite held every earlier test's topics (1,442
    topics, 5,236 partitions, 58,000 metric names on its heap), and its collections
    slowed whatever ran on it next, the benches included. (With an operation timeout of
    0 the broker answers and keeps the topics.)"""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        found = admin.list_topics(timeout=10).topics
    except KafkaException:
        return  # a test that stopped the broker; its topics stay
    ours = (prefix, f"{prefix.rstrip('.')}-", *others)
    mine = [name for name in found if name.startswith(ours)]
    for future in admin.delete_topics(mine, operation_timeout=30).values() if mine else []:
        # Already gone, or the broker is slow: nothing the caller depends on.
        with suppress(KafkaException, TimeoutError):
            future.result(40)


@dataclass
class Pipeline:
    """One isolated deployment: its own topic prefix, app id and processes."""

    bootstrap: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}.")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TRIGGERS_KAFKA_BOOTSTRAP": self.bootstrap,
            "TRIGGERS_TOPIC_PREFIX": self.prefix,
            "TRIGGERS_APP_ID": self.prefix.rstrip("."),
            "TRIGGERS_DATA_DIR": str(self.workdir / "data"),
            "TRIGGERS_WORKER_METRICS_PORT": "0",
            "TRIGGERS_LOG_LEVEL": "INFO",
        }

    @property
    def settings(self) -> Settings:
        return Settings(
            kafka_bootstrap=self.bootstrap,
            topic_prefix=self.prefix,
            app_id=self.prefix.rstrip("."),
        )

    def topic(self, spec: topics.TopicSpec) -> str:
        return topics.topic_name(spec, self.settings)

    def cli(
        self, *args: str, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [TRIGGERS, *args],
            env=self.env,
            input=stdin.decode() if stdin else None,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"triggers {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def start(
        self, *args: str, name: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        # Each process keeps its own table state, as two workers on one machine must.
        own_data_dir = {"TRIGGERS_DATA_DIR": str(self.workdir / f"data-{name}")}
        process = subprocess.Popen(
            [TRIGGERS, *args],
            env={**self.env, **own_data_dir, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process in self.processes:
            self.processes.remove(process)
        return process.returncode

    def stop_all(self) -> None:
        for process in reversed(list(self.processes)):
            self.stop(process)

    def delete_topics(self) -> None:
        """The deployment's topics go with it (`delete_topics`)."""
        delete_topics(self.bootstrap, self.prefix)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def produce(
        self,
        spec: topics.TopicSpec,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "partitioner": "murmur2_random"})
        producer.produce(self.topic(spec), value=value, key=key, headers=headers)
        assert producer.flush(15) == 0

    def emit(self, event: dict[str, Any]) -> None:
        self.produce(topics.EVENTS, orjson.dumps(event))

    def start_worker_with(
        self, *definitions: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Apply each definition (YAML text), then start a worker and wait until it is
        ready."""
        for n, text in enumerate(definitions):
            path = self.workdir / f"definition-{n}.yaml"
            path.write_text(text)
            self.cli("apply", "-f", str(path))
        worker = self.start("worker", name="worker", extra_env=extra_env)
        self.wait_ready("worker", "[^Worker]: Ready")
        return worker

    def start_worker_and_runner(self) -> None:
        """A worker and the reference runner, once both consume."""
        self.start("worker", name="worker")
        self.start("runner", name="runner")
        self.wait_ready("worker", "[^Worker]: Ready")
        self.wait_ready("runner", "runner consuming")

    def wait_ready(self, name: str, marker: str, timeout: float = 90.0) -> None:
        """Wait until a process's log shows `marker` (e.g. the worker finished start-up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log(name):
                return
            if any(p.poll() is not None for p in self.processes):
                raise AssertionError(
                    f"a process exited early; {name} log:\n{self.log(name)[-4000:]}"
                )
            time.sleep(0.3)
        raise AssertionError(f"{name} not ready in {timeout}s:\n{self.log(name)[-4000:]}")


@contextmanager
def reading(bootstrap: str, topic: str, raw: bool = False) -> Iterator[Callable[..., list[Any]]]:
    """A read_committed reader of a topic from its beginning.

    `collect(predicate, timeout)` returns the JSON values (the bytes, if `raw`) read so
    far once `predicate` holds for them, or raises after `timeout` seconds.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    seen: list[Any] = []

    def collect(predicate: Callable[[list[Any]], bool], timeout: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in consumer.consume(100, timeout=0.2):
                if message.error() is None:
                    value = message.value()
                    if raw:
                        seen.append(value)
                    else:
                        seen.append(orjson.loads(value) if value is not None else None)
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(str(message.error()))
            if predicate(seen):
                return list(seen)
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out on {topic}; read {len(seen)} records: {seen[-5:]}")

    try:
        yield collect
    finally:
        consumer.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (for a process's HTTP or metrics server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settle(collect: Callable[..., list[Any]], seconds: float) -> list[Any]:
    """Everything a reader sees in the next `seconds` (to check nothing more arrives)."""
    end = time.monotonic() + seconds
    return collect(lambda _: time.monotonic() > end, timeout=seconds + 5)


__all__ = ["ROOT", "Pipeline", "free_port", "reading", "settle"]


API_KEYS = '{"k-alpha": "alpha", "k-beta": "beta"}'


def start_serve(
    pipeline: Pipeline, name: str = "serve", extra_env: dict[str, str] | None = None
) -> str:
    """Start `triggers serve` on a free port with two workspaces' keys; its base URL."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pipeline.start(
        "serve",
        "--port",
        str(port),
        name=name,
        extra_env={"TRIGGERS_API_KEYS": API_KEYS, **(extra_env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve not ready:\n{pipeline.log(name)[-3000:]}")


def incompressible(size: int) -> str:
    """`size` characters (rounded down to a multiple of 5) that no record compression
    shrinks much: base85 of random bytes, to reach the broker's limit on a record."""
    return base64.b85encode(os.urandom(size // 5 * 4)).decode()
