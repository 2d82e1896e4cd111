"""The worker: a Faust application hosting two transactional batch loops.

events (+ extra topics), trigger-matches ──► EventMatcher (thread) ──► trigger-fires
webhooks, cron-ticks ──► Faust agents ──► trigger-fires ──► Dispatcher (thread, or its own
                                                                  process: `triggers dispatcher`)
trigger-definitions ──► DefinitionsTable ──► Registry (pattern index, shared by all)

Faust hosts the application and runs the low-volume flows: the definitions table,
webhook mapping, the leader's ticker and the scheduler (their handlers are flows.py's;
this module only wires them to topics). Events and window state, most of what a worker
does, go through the EventMatcher's confluent-kafka batches instead of Faust's
per-record streams (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faust
from mode import Service
from prometheus_client.metrics_core import Metric

from processor import topics
from processor.config import Settings, replication
from processor.definitions.registry import Registry
from processor.dispatch.dispatcher import Dispatcher
from processor.errors import DataDirInUse
from processor.kafka.admin import refuse_early
from processor.kafka.clients import PRODUCER_MAX_BYTES
from processor.kafka.security import faust_credentials
from processor.kafka.transactional import TransactionalLoop
from processor.logs import faust_logging_config
from processor.matching.schedules import Scheduler
from processor.metrics import GC_PAUSES, trigger_label
from processor.serde import to_json
from processor.worker import flows
from processor.worker.definitions_table import caught_up, definitions_table
from processor.worker.dispatcher_process import DispatcherProcess
from processor.worker.event_matcher import EventMatcher
from processor.worker.health import ConsumerHealth, serve_metrics_and_health
from processor.worker.transport import App

log = logging.getLogger(__name__)
WEBHOOK_COMPONENT = "webhook-mapper"
SCHEDULER_COMPONENT = "scheduler"
SESSION_TIMEOUT_SECONDS = 15.0


def _raw_topic(app: faust.App, *names: str) -> Any:
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    definitions_ready: threading.Event | None = None,
) -> faust.App:
    registry = registry if registry is not None else Registry()
    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)

    def name(spec: topics.TopicSpec) -> str:
        return topics.topic_name(spec, settings)

    app = App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",  # the definitions table and the scheduler's last tick
        datadir=str(settings.data_dir / settings.app_id),
        web_enabled=False,
        producer_acks=-1,
        producer_max_request_size=PRODUCER_MAX_BYTES,  # dead letters keep records whole
        # Faust's own topics (the scheduler table's changelog, the leader topic).
        topic_replication_factor=settings.topic_replication_factor or 1,
        stream_wait_empty=True,
        # A killed worker's partitions move to the others after this long (Faust: 60 s).
        broker_session_timeout=SESSION_TIMEOUT_SECONDS,
        broker_heartbeat_interval=3.0,
    )
    definitions = definitions_table(app, name(topics.TRIGGER_DEFINITIONS), registry)
    webhooks_topic = _raw_topic(app, name(topics.WEBHOOKS))
    ticks_topic = _raw_topic(app, name(topics.CRON_TICKS))
    scheduler_state = app.Table(
        "scheduler-state",
        default=None,
        partitions=1,
        extra_topic_configs=replication(settings)[1],
    )
    scheduler = Scheduler(registry)
    send_letter = _sender(_raw_topic(app, name(topics.DEAD_LETTERS)))
    fires_topic = name(topics.TRIGGER_FIRES)
    send_fire = flows.counted(_sender(_raw_topic(app, fires_topic)), send_letter, fires_topic)
    send_tick = _sender(ticks_topic)

    async def each_record(
        stream: Any, component: str, handle: Callable[[Any], Awaitable[None]]
    ) -> None:
        await caught_up(definitions, settings)
        async for event in stream.events():
            await flows.guarded(event.message, handle, send_letter, component)

    @app.task  # type: ignore[untyped-decorator]
    async def definitions_loaded() -> None:
        """The event matcher (a thread) starts once the registry holds every trigger."""
        await caught_up(definitions, settings)
        gc.freeze()  # what start-up loaded stays: no collection walks it again
        if definitions_ready is not None:
            definitions_ready.set()

    @app.agent(webhooks_topic, concurrency=1)
    async def map_webhooks(stream: Any) -> None:
        async def handle(message: Any) -> None:
            await flows.map_webhook(registry, message.value, send_fire)

        await each_record(stream, WEBHOOK_COMPONENT, handle)

    @app.task  # type: ignore[untyped-decorator]
    async def tick() -> None:
        """Only the leader ticks, just after each second begins; each tick carries that
        second."""
        leading = False
        while not app.should_stop:
            await app.sleep(flows.tick_delay(time.time()))
            if not app.is_leader():
                leading = False
                continue
            if not leading:
                log.info("this worker is the leader: ticking %s", name(topics.CRON_TICKS))
                leading = True
            await send_tick(b"tick", to_json(flows.tick_of(time.time())))

    @app.agent(ticks_topic, concurrency=1)
    async def schedule_fires(stream: Any) -> None:
        async def handle(message: Any) -> None:
            await flows.schedule_tick(scheduler, scheduler_state, message.value, send_fire)

        await each_record(stream, SCHEDULER_COMPONENT, handle)

    return app


def _sender(topic: Any) -> flows.Send:
    async def send(key: bytes | None, value: bytes) -> None:
        await topic.send(key=key, value=value)

    return send


class LoopService(Service):
    """Owns a transactional loop's thread: started and stopped with the Faust worker."""

    def __init__(self, loop: TransactionalLoop, **kwargs: Any) -> None:
        self.transactional_loop = loop
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self.transactional_loop.start()

    async def on_stop(self) -> None:
        await asyncio.to_thread(self.transactional_loop.stop)


class ChildService(Service):
    """Stops the dispatcher's child process with the Faust worker."""

    def __init__(self, child: DispatcherProcess, **kwargs: Any) -> None:
        self.child = child
        super().__init__(**kwargs)

    async def on_stop(self) -> None:
        await asyncio.to_thread(self.child.stop)


@contextmanager
def data_dir_claimed(settings: Settings) -> Iterator[None]:
    """Hold this worker's state directory for the length of the block.

    Table state lives in RocksDB files only one process may open. A second worker
    pointed at the same directory would wait on those locks, then crash mid-start; it
    stops here instead, saying what to change.
    """
    directory = settings.data_dir / settings.app_id
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "worker.lock", "ab") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(
                f"{directory} is in use by another worker of app {settings.app_id!r} on "
                "this machine. Give each worker its own directory with TRIGGERS_DATA_DIR "
                "(e.g. TRIGGERS_DATA_DIR=.data-2), or stop the other worker."
            ) from None
        yield  # the lock goes with the file, when the block ends or the process dies


GC_YOUNG_THRESHOLD = 50_000
"""Container objects allocated (net) before Python's youngest-generation collection;
Python's default is 700. A batch of the event path holds tens of thousands of objects
until it ends (parsed events, matches, fires, records to produce): with 700, collections
ran every few dozen events and walked those objects again and again, then promoted them
so that the older collections walked them once more. In one bench run: 0.89 s of pauses
with 700, 0.26 s with 10,000, 0.07 s with 50,000 (two collections, one of 50-100 ms).
Against 10,000, 50,000 was faster in three of four rounds and no slower at p99. See
docs/benchmarks.md."""


def collect_less_often() -> None:
    """Young collections every GC_YOUNG_THRESHOLD allocations; the older generations
    keep Python's ratios to it."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def time_gc_pauses() -> None:
    """Each of Python's cyclic collections timed (triggers_gc_pause_seconds): every thread
    of the worker waits while one runs."""
    started: list[float] = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSES.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    gc.callbacks.append(timed)


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until SIGTERM or Ctrl-C."""
    collect_less_often()
    time_gc_pauses()
    trigger_label.configure(settings.metrics_trigger_label_limit, settings.metrics_trigger_ids)
    refuse_early(settings)
    with data_dir_claimed(settings):
        registry = Registry()
        definitions_ready = threading.Event()
        app = create_app(settings, registry, definitions_ready)
        matcher = EventMatcher(settings, registry, definitions_ready)
        loops: list[TransactionalLoop] = [matcher]
        dispatcher = Dispatcher(settings) if settings.worker_dispatcher else None
        child = (
            DispatcherProcess(settings.data_dir / settings.app_id / "dispatcher-process")
            if dispatcher is not None and settings.worker_dispatcher_process
            else None
        )
        if dispatcher is not None and child is None:
            loops.append(dispatcher)
        if settings.worker_metrics_port:
            faust_topics = [
                topics.topic_name(t, settings) for t in (topics.WEBHOOKS, topics.CRON_TICKS)
            ]
            groups = {loop.group_id: loop.topics for loop in loops}
            if dispatcher is not None:
                groups[dispatcher.group_id] = dispatcher.topics
            groups[settings.app_id] = faust_topics  # Faust's agents
            _serve_health(
                settings,
                groups,
                lambda: (
                    definitions_ready.is_set()
                    and all(loop.ready.is_set() for loop in loops)
                    and (child is None or child.ready())
                ),
                child.metrics if child is not None else None,
            )
        services: list[Service] = [LoopService(loop) for loop in loops]
        if child is not None:
            child.start()  # from the main thread, which its death signal follows
            services.append(ChildService(child))
        worker = Worker(
            app,
            *services,
            stop_timeout=settings.worker_stop_timeout_seconds,
            loglevel=settings.log_level.lower().replace("warning", "warn"),
            logging_config=faust_logging_config(settings.log_level, "worker", settings.log_format),
            quiet=True,
        )
        worker.execute_from_commandline()


class Worker(faust.Worker):
    """Faust's worker (the name kept: its log says `[^Worker]: Ready`), which exits
    anyway if it has not stopped `stop_timeout` seconds after the signal asking it to:
    Faust's stop flushes its producer with no deadline, so with the broker gone it never
    ended. Exactly-once does not rest on a clean stop (a SIGKILLed worker loses and
    doubles nothing: docs/reliability.md), and the dispatcher's child dies with it."""

    def __init__(self, *services: Any, stop_timeout: float, **kwargs: Any) -> None:
        self._stop_timeout = stop_timeout
        self._deadline: threading.Timer | None = None
        super().__init__(*services, **kwargs)

    def _on_sigint(self) -> None:  # Faust's own subclass hooks the same two
        self._start_deadline()
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self._start_deadline()
        super()._on_sigterm()

    def _start_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(
                self._stop_timeout, _exit_unstopped, (self._stop_timeout,)
            )
            self._deadline.daemon = True
            self._deadline.start()


def _exit_unstopped(seconds: float) -> None:
    log.error(
        "the worker had not stopped %.0f s after it was asked to (is the broker reachable?);"
        " exiting now (TRIGGERS_WORKER_STOP_TIMEOUT_SECONDS)",
        seconds,
    )
    logging.shutdown()
    os._exit(1)


def run_dispatcher(settings: Settings, ready_file: Path | None = None) -> None:
    """Run only the dispatcher, in the foreground until SIGTERM or Ctrl-C: for workers
    started with TRIGGERS_WORKER_DISPATCHER=false, and as a worker's child process
    (dispatcher_process.py; `ready_file` is created once it consumes). Any number may
    run: they share the dispatcher's consumer group, as workers do."""
    collect_less_often()
    time_gc_pauses()
    trigger_label.configure(settings.metrics_trigger_label_limit, settings.metrics_trigger_ids)
    refuse_early(settings)
    dispatcher = Dispatcher(settings)
    if settings.worker_metrics_port:
        _serve_health(settings, {dispatcher.group_id: dispatcher.topics}, dispatcher.ready.is_set)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dispatcher.start()
    log.info("dispatcher process running (group %s)", dispatcher.group_id)
    while not stop.is_set():
        if dispatcher.ready.wait(0.5):
            gc.freeze()  # start-up and the restored state stay: no collection walks them
            if ready_file is not None:
                ready_file.touch()
            break
    stop.wait()
    log.info("dispatcher process stopping")
    dispatcher.stop()


def _serve_health(
    settings: Settings,
    groups: dict[str, list[str]],
    ready: Callable[[], bool],
    more_metrics: Callable[[], Iterable[Metric]] | None = None,
) -> None:
    health = ConsumerHealth(
        settings, groups, settings.worker_health_interval_seconds, settings.worker_stall_seconds
    )
    health.start()
    serve_metrics_and_health(
        health, settings.http_host, settings.worker_metrics_port, ready, more_metrics
    )
