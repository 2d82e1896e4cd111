"""The worker: a Faust application hosting two transactional batch loops.

events (+ extra topics), trigger-matches ──► EventMatcher (thread) ──► trigger-fires
webhooks, cron-ticks ──► Faust agents ──► trigger-fires ──► Dispatcher (thread, or its own
                                                                  process: `triggers dispatcher`)
trigger-definitions ──► DefinitionsTable ──► Registry (pattern index, shared by all)

Faust hosts the application and runs the low-volume flows: the definitions table,
webhook mapping, the leader's ticker and the scheduler. Events and window state, most
of what a worker does, go through the EventMatcher's confluent-kafka batches instead of
Faust's per-record streams (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import faust
from mode import Service
from pydantic import ValidationError

from processor import topics
from processor.config import Settings, replication
from processor.deadletters import dead_letter
from processor.definitions.registry import Registry
from processor.dispatch.dispatcher import Dispatcher
from processor.errors import BadRecord, DataDirInUse
from processor.kafka.admin import refuse_early
from processor.kafka.clients import PRODUCER_MAX_BYTES
from processor.kafka.security import faust_credentials
from processor.kafka.transactional import TransactionalLoop
from processor.logs import faust_logging_config
from processor.matching.decode import header_pairs
from processor.matching.schedules import Scheduler, previous_tick
from processor.messages import CronTick, Fire
from processor.metrics import (
    FIRES,
    GC_PAUSES,
    SCHEDULE_LATENESS,
    SCHEDULER_TICK,
    WEBHOOK_MAPPING_MISSES,
    trigger_label,
)
from processor.serde import from_json, to_json
from processor.webhooks.mapping import map_delivery
from processor.worker.definitions_table import caught_up, definitions_table
from processor.worker.event_matcher import EventMatcher
from processor.worker.health import ConsumerHealth, serve_metrics_and_health
from processor.worker.transport import App

log = logging.getLogger(__name__)
WEBHOOK_COMPONENT = "webhook-mapper"
SCHEDULER_COMPONENT = "scheduler"
TICK_SECONDS = 1.0
TICK_AFTER_SECONDS = 0.005
"""How long after a second begins the leader ticks for it."""
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
    fires_topic = _raw_topic(app, name(topics.TRIGGER_FIRES))
    dead_letters_topic = _raw_topic(app, name(topics.DEAD_LETTERS))

    async def each_record(
        stream: Any, component: str, handle: Callable[[Any], Awaitable[None]]
    ) -> None:
        """Run `handle` on every record: a record it cannot use becomes a dead letter with
        the reason, and a bug is logged and dead-lettered too. The stream never stops."""
        await caught_up(definitions, settings)
        async for event in stream.events():
            message = event.message
            try:
                await handle(message)
            except (BadRecord, ValidationError, ValueError) as exc:
                await _dead_letter(dead_letters_topic, message, str(exc), component)
            except Exception as exc:
                log.exception(
                    "%s failed on %s[%d]@%d",
                    component,
                    message.topic,
                    message.partition,
                    message.offset,
                )
                await _dead_letter(
                    dead_letters_topic, message, f"internal error: {exc!r}", component
                )

    async def send_fire(fire: Fire) -> None:
        await fires_topic.send(key=fire.trigger_id.encode(), value=to_json(fire))
        FIRES.labels(fire.cause.type.value).inc()

    @app.task  # type: ignore[untyped-decorator]
    async def definitions_loaded() -> None:
        """The event matcher (a thread) starts once the registry holds every trigger."""
        await caught_up(definitions, settings)
        gc.freeze()  # what start-up loaded stays: no collection walks it again
        if definitions_ready is not None:
            definitions_ready.set()

    async def map_one(message: Any) -> None:
        mapped = map_delivery(registry, message.value)
        if mapped is None:
            return
        fire, missing = mapped
        if missing:
            WEBHOOK_MAPPING_MISSES.labels(trigger_label(fire.trigger_id)).inc(len(missing))
        await send_fire(fire)

    @app.agent(webhooks_topic, concurrency=1)
    async def map_webhooks(stream: Any) -> None:
        await each_record(stream, WEBHOOK_COMPONENT, map_one)

    @app.task  # type: ignore[untyped-decorator]
    async def tick() -> None:
        """Only the leader ticks, just after each second begins; each tick carries that
        second. (A Faust timer ticks every second too, but at whatever fraction of a
        second the worker started: schedules fired up to a second late, 0.85 s at p50
        in the scheduler bench.)"""
        leading = False
        while not app.should_stop:
            await app.sleep(TICK_SECONDS - time.time() % TICK_SECONDS + TICK_AFTER_SECONDS)
            if not app.is_leader():
                leading = False
                continue
            if not leading:
                log.info("this worker is the leader: ticking %s", name(topics.CRON_TICKS))
                leading = True
            second = datetime.fromtimestamp(math.floor(time.time()), UTC)
            await ticks_topic.send(key=b"tick", value=to_json(CronTick(tick=second)))

    async def schedule_one(message: Any) -> None:
        tick_at = from_json(CronTick, message.value).tick.timestamp()
        previous = previous_tick(scheduler_state.get("last_tick"), tick_at)
        started = time.perf_counter()
        if not scheduler.in_step:
            # Off the event loop: with 100k schedules the first sync blocked every
            # agent of the worker for ~13 s after Ready.
            await asyncio.to_thread(scheduler.sync, previous)
        now = time.time()
        due = scheduler.fires_for_tick(previous, tick_at, now)
        if due is None:
            return
        for fire, fire_time in due:
            await send_fire(fire)
            SCHEDULE_LATENESS.observe(max(0.0, now - fire_time))
        scheduler_state["last_tick"] = tick_at
        SCHEDULER_TICK.observe(time.perf_counter() - started)

    @app.agent(ticks_topic, concurrency=1)
    async def schedule_fires(stream: Any) -> None:
        await each_record(stream, SCHEDULER_COMPONENT, schedule_one)

    return app


async def _dead_letter(topic: Any, message: Any, reason: str, component: str) -> None:
    log.warning(
        "dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
    )
    key, value = dead_letter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        error=reason,
        component=component,
        headers=header_pairs(message.headers),
    )
    await topic.send(key=key, value=value)


class LoopService(Service):
    """Owns a transactional loop's thread: started and stopped with the Faust worker."""

    def __init__(self, loop: TransactionalLoop, **kwargs: Any) -> None:
        self.transactional_loop = loop
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self.transactional_loop.start()

    async def on_stop(self) -> None:
        await asyncio.to_thread(self.transactional_loop.stop)


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
    time_gc_pauses()
    trigger_label.configure(settings.metrics_trigger_label_limit, settings.metrics_trigger_ids)
    refuse_early(settings)
    with data_dir_claimed(settings):
        registry = Registry()
        definitions_ready = threading.Event()
        app = create_app(settings, registry, definitions_ready)
        matcher = EventMatcher(settings, registry, definitions_ready)
        loops: list[TransactionalLoop] = [matcher]
        if settings.worker_dispatcher:
            loops.append(Dispatcher(settings))
        if settings.worker_metrics_port:
            faust_topics = [
                topics.topic_name(t, settings) for t in (topics.WEBHOOKS, topics.CRON_TICKS)
            ]
            groups = {loop.group_id: loop.topics for loop in loops}
            groups[settings.app_id] = faust_topics  # Faust's agents
            _serve_health(
                settings,
                groups,
                lambda: definitions_ready.is_set() and all(loop.ready.is_set() for loop in loops),
            )
        worker = faust.Worker(
            app,
            *(LoopService(loop) for loop in loops),
            loglevel=settings.log_level.lower().replace("warning", "warn"),
            logging_config=faust_logging_config(settings.log_level, "worker", settings.log_format),
            quiet=True,
        )
        worker.execute_from_commandline()


def run_dispatcher(settings: Settings) -> None:
    """Run only the dispatcher, in the foreground until SIGTERM or Ctrl-C: for workers
    started with TRIGGERS_WORKER_DISPATCHER=false, so that the matchers and the
    dispatcher each have an interpreter (a core) of their own. Any number may run: they
    share the dispatcher's consumer group, as workers do."""
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
    stop.wait()
    log.info("dispatcher process stopping")
    dispatcher.stop()


def _serve_health(
    settings: Settings, groups: dict[str, list[str]], ready: Callable[[], bool]
) -> None:
    health = ConsumerHealth(
        settings, groups, settings.worker_health_interval_seconds, settings.worker_stall_seconds
    )
    health.start()
    serve_metrics_and_health(health, settings.http_host, settings.worker_metrics_port, ready)
