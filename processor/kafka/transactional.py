"""A consume-transform-produce loop with exactly-once output (confluent-kafka, KIP-447).

The worker's two high-volume flows, the event matcher and the dispatcher, are this loop
with their own handling. Each turn takes what the consumer has fetched (a batch when
busy; no waiting for one when not), and in one transaction writes whatever the handler
produced together with the consumer's positions (`send_offsets_to_transaction` with the
group metadata, so a zombie from before a rebalance cannot commit).

A commit waits on the broker (the offsets to the group coordinator, then the commit to
the transaction coordinator): a third to a half of a busy loop's time when the loop
waited for it. So the commit runs on a helper thread while the loop handles the next batch into a
`Turn`, which holds that batch's records until its own transaction begins:

    poll ─► handle(batch N+1) into a Turn ─► settle commit N ─► begin N+1 ─► produce ─┐
      ▲          (commit N runs meanwhile)                                          │
      └───────────────────────── commit N+1 starts on the helper ◄──────────────────┘
      abortable error: abort, rewind to the last commit (N+1 is handled again)
      fatal / timed out / hung: new producer and consumer (same transactional id)

Below full load the handled batch is small and commit N still runs: the loop keeps
polling, and what arrives joins turn N+1 (`_fill`), which begins the moment commit N
ends, and no sooner than the checkpoint interval (TRIGGERS_CHECKPOINT_INTERVAL_MS, 25 ms)
after turn N began. A record then waits for the end of the commit running when it came,
not for the next one's as well. A full batch does not wait for the interval; while
commit N still runs, turn N+1 goes on taking records in (up to TURN_BATCHES batches)
and begins as soon as commit N ends, so a loop whose batches are cheap is not held to
one batch per commit. The interval is for the broker: back to back, a loop began a
transaction every 12 ms or so whatever the load, each one's first request refused and
retried while the coordinator still wrote the last one's markers; at a tenth of the
worker's rate the broker then used more CPU than the worker (docs/benchmarks.md).

State handled for batch N+1 before commit N ended is state a failed commit N undoes:
the loop then restores the state of the last commit and reads from its offsets. A
rebalance (a callback inside the poll) first waits for the commit in flight, so a new
owner reads that commit's state and offsets, never half of it; a revocation then
commits the turn being filled too, so the new owner starts after what it handled. A
crash aborts whatever was not committed; the batch is read again from the committed
offsets, and a handler whose state is restored as of the last commit (`restore`) makes
the same output once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.kafka.clients import new_consumer, new_producer
from processor.kafka.deadline import Deadline, DeadlineExceeded
from processor.kafka.reader import take
from processor.metrics import TRANSACTION_ABORTS, TRANSACTION_SECONDS

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSACTION_TIMEOUT_MS = 20_000
"""The broker aborts a dead loop's open transaction after this long."""
CALL_TIMEOUT_SECONDS = 30.0
"""The timeout given to each transactional call."""
CALL_DEADLINE_SECONDS = 45.0
"""When the loop gives up on a transactional call that ignores its timeout."""
FILL_POLL_SECONDS = 0.001
"""While a commit runs or the checkpoint interval has not passed, how long each poll for
more of the next turn waits. Waiting out the interval in one poll instead (it returns at
the first record) saved the worker 6-18% of its CPU at 200 events/s, but at half its
rate the p50 was higher in 9 of 10 paired rounds (docs/benchmarks.md): kept at 1 ms."""
FETCH_WAIT_MS = 100
"""How long the broker holds a loop's fetch when it has nothing to return. A commit that
makes records visible answers a waiting read_committed fetch at once (0.5 ms after the
commit, with a wait of 100 or 500 ms), so the wait is not in the latency (p50 at 200
events/s 11.5 ms with 500, 11.3-11.7 with the 10 ms this was); it is what an idle loop
costs the broker: 10 fetches a second at 100 ms, 96 at 10 ms (docs/benchmarks.md)."""
METADATA_REFRESH_MS = 10_000
"""How often a loop's consumer asks which topics and partitions exist: a topic of
TRIGGERS_EVENT_TOPICS created after the worker started, or partitions added to one, are
read within this (librdkafka's 5-minute default left a new topic unread for 284 s)."""
TURN_BATCHES = 5
"""A turn whose batch is full keeps taking records in while the last commit still runs,
up to this many batches: the loop then waits for a commit only when the commit takes
longer than handling them. Where handling is cheap (events that match nothing) a commit
took about as long as a batch, and the loop sat in the wait half the time."""
IDLE_CHECK_SECONDS = 30.0
"""How long a loop reads nothing before it checks that its consumer is not stuck."""


def transactional_config(transactional_id: str) -> dict[str, Any]:
    """What a loop's producer adds to the shared producer configuration.

    Its linger stays the shared 5 ms: a turn's records leave as its commit begins, while
    the offsets join the transaction. Lingering 100 ms (the records then left with the
    commit's flush, after the offsets) cost a round trip or two on each hop: at half the
    worker's rate, p99 event to command 143-198 ms against 105-136 ms in three rounds."""
    return {
        "transactional.id": transactional_id,
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        # A transaction begun right after a commit finds the coordinator still writing
        # the last one's markers: CONCURRENT_TRANSACTIONS, retried after this backoff.
        # librdkafka's default, 100 ms, was most of the event path's p99 at 200 events/s
        # (130 ms; 24 ms with 10 ms). Java's client waits 20 ms there (KAFKA-5477).
        "retry.backoff.ms": 10,
    }


_UNASSIGNED = -1
"""librdkafka's partition for "let the partitioner choose", `produce`'s own default."""

_FIELDS = ("value", "key", "partition", "on_delivery")
"""`Producer.produce`'s arguments after the topic, in its order."""


class Turn:
    """What one turn produces, held until its transaction begins (the last turn's
    commit may still be running when the turn is handled): `produce` as a Producer's.

    Each record is kept as the positional arguments of `Producer.produce`: handing it
    over that way costs 1.6 µs a record against 2.2 µs for keywords captured in a dict
    and spread again (timeit, 1.8 KB values), and a fire makes four records: the fire,
    then its command and its execution record on two topics."""

    __slots__ = ("_sends",)

    def __init__(self) -> None:
        self._sends: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._sends)

    def produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        partition: int = _UNASSIGNED,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        if on_delivery is None:
            self._sends.append((topic, value, key, partition))
        else:
            self._sends.append((topic, value, key, partition, on_delivery))

    def send(self, producer: Producer) -> None:
        produce = producer.produce
        for arguments in self._sends:
            produce(*arguments)

    @property
    def records(self) -> list[tuple[str, dict[str, Any]]]:
        """Each record as its topic and the keywords given for it (the partition only
        when one was), in order: for reading what a turn holds, not for the hot path."""
        return [
            (
                topic,
                {
                    name: given
                    for name, given in zip(_FIELDS, rest, strict=False)
                    if name != "partition" or given != _UNASSIGNED
                },
            )
            for topic, *rest in self._sends
        ]


class TransactionalLoop:
    """Runs in its own thread; `start()` and `stop()` are called by the worker.

    A subclass names its input topics and says what a batch, the passing of time and a
    (re)assignment mean to it; this class owns the clients, the transactions and the
    recovery from failed ones."""

    name = "loop"
    batch_size = 500
    periodic_seconds: float | None = None
    """How often `periodic` runs (None: never)."""
    paced_by: frozenset[str] = frozenset()
    """Input topics whose reading paces `read_through` (none: it is the clock)."""

    def __init__(self, settings: Settings, group_id: str, topics: list[str]) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = topics
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._calls = Deadline(f"{self.name}-txn")
        self.ready = threading.Event()
        """Set once the loop polled for the first time."""
        self._producer: Producer
        """The transactional producer (made by the loop; replaced after a fatal error)."""
        self._committing: Future[None] | None = None
        """The last turn's commit while it runs on the helper thread."""
        self._interval = settings.checkpoint_interval_ms / 1000
        """Least seconds between the starts of two transactions."""
        self._began = float("-inf")
        """When the last transaction began (`time.monotonic`)."""
        self._filling: Turn | None = None
        """The turn taking in records while the last commit runs (`_fill`)."""
        self._rewind_due: bool | None = None
        """Set when a rebalance callback found that commit failed: whether the consumer
        must be replaced (True) or rewound (False) once the poll returns."""
        self._handle_seconds = TRANSACTION_SECONDS.labels(self.name, "handle")
        self._commit_seconds = TRANSACTION_SECONDS.labels(self.name, "commit")
        self._wait_seconds = TRANSACTION_SECONDS.labels(self.name, "wait")
        """How long the loop, done with a turn, waited for the last turn's commit."""
        self.read_through = 0.0
        """Set before each `periodic`: how far in time the `paced_by` topics have been
        read (`_read_through`), in seconds since the epoch."""
        self._read_at: dict[tuple[str, int], float] = {}
        """Per `paced_by` partition behind its end, the timestamp of a record read of it
        lately (`_sample`)."""

    # -- what a subclass decides -------------------------------------------------------

    def handle(self, messages: list[Message], producer: Turn) -> None:
        """Turn a batch into records for the turn's transaction."""
        raise NotImplementedError

    def periodic(self, producer: Turn) -> None:
        """What the passing of time produces (every `periodic_seconds`), in a transaction."""

    def restore(self, partitions: list[TopicPartition]) -> None:
        """Bring state in step with the committed offsets of these assigned partitions
        (on assignment, and after an abort, before reading again)."""

    def forget(self, partitions: list[TopicPartition] | None) -> None:
        """Drop state of partitions this member no longer owns (None: all of it)."""

    def before_start(self) -> bool:
        """Wait for whatever the loop needs first; False if stopped meanwhile."""
        return True

    def checkpoint(self, producer: Turn) -> None:
        """The turn's handling is done and its transaction is about to begin: what it
        writes last, once per transaction however many batches the turn took in (`_fill`)
        (the matcher: one changelog record per window key the turn changed)."""

    def sealed(self) -> None:
        """The turn's records are produced and its commit begins: what `handle` and
        `periodic` do next belongs to the next transaction."""

    def after_commit(self, producer: Producer) -> None:
        """The transaction committed: what it wrote is in Kafka for good."""

    def after_abort(self) -> None:
        """The transaction was aborted: what it wrote never happened."""

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 30.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _run(self) -> None:
        try:
            if self.before_start():
                self._loop()
        except Exception:
            log.exception("%s stopped by an unexpected error; the worker exits", self.name)
            os.kill(os.getpid(), 15)

    def _loop(self) -> None:
        consumer = self._new_consumer()
        self._producer = self._new_producer()
        log.info("%s started (group %s)", self.name, self.group_id)
        last_periodic = last_read = time.monotonic()
        stuck_at: dict[tuple[str, int], int] | None = None
        while not self._stopping.is_set():
            messages = self._take(consumer, 0.1, self.batch_size)
            self.ready.set()
            if messages:
                last_read, stuck_at = time.monotonic(), None
            elif self._committing is None and time.monotonic() - last_read >= IDLE_CHECK_SECONDS:
                last_read = time.monotonic()
                behind = self._behind(consumer)
                if behind and behind == stuck_at:
                    log.warning(
                        "%s read nothing for %d s while %s had records to read; its consumer"
                        " looks stuck (seen after a broker restart): new consumer",
                        self.name,
                        2 * IDLE_CHECK_SECONDS,
                        sorted(behind),
                    )
                    consumer, stuck_at = self._replace_consumer(consumer), None
                    continue
                stuck_at = behind or None
            due = (
                self.periodic_seconds is not None
                and time.monotonic() - last_periodic >= self.periodic_seconds
            )
            # A rebalance callback in this poll may have found the last commit failed.
            stuck, self._rewind_due = self._rewind_due, None
            if stuck is None and (messages or due):
                turn = Turn()
                started = time.perf_counter()
                if messages:
                    self.handle(messages, turn)
                if due:
                    last_periodic = time.monotonic()
                    if self.paced_by:
                        self._sample(messages)
                    self.read_through = self._read_through(consumer, time.time())
                    self.periodic(turn)
                self._handle_seconds.observe(time.perf_counter() - started)
                if messages and not self._fill(consumer, turn, len(messages)):
                    continue  # a rebalance took the turn (committed it, or dropped it)
                self.checkpoint(turn)
                # A turn of only periodic work read nothing: the offsets are as committed.
                offsets = self._positions(consumer) if messages else []
                # The last turn's commit ran while this one was handled; it must end
                # before this one's transaction begins.
                stuck = self._settled()
                if stuck is None and (len(turn) or offsets):
                    failed = self._begin_commit(turn, offsets, consumer)
                    stuck = None if failed is None else self._abandon(failed)
            elif stuck is None:
                stuck = self._settled()  # nothing new: the last commit ends on its own
            if stuck is not None:
                consumer = self._replace_consumer(consumer) if stuck else self._rewind(consumer)
        self._settle()
        consumer.close()
        log.info("%s stopped", self.name)

    def _fill(self, consumer: Consumer, turn: Turn, handled: int) -> bool:
        """While the last turn's commit runs, and until the checkpoint interval has
        passed since it began, what arrives joins this turn, which then begins. Below
        full load a record then waits for the end of the commit running when it came,
        not for the end of the one after it as well (the next poll would only come once
        this turn's transaction had begun). A full batch does not wait for the interval,
        and while the commit runs it takes more in, a fifth of a batch at a time, up to
        TURN_BATCHES batches. False if a rebalance in one of these polls took the turn: a
        revocation commits it at once; a failed commit drops it (it built on state that
        commit did not keep)."""
        committing = self._committing
        due = self._began + self._interval
        if committing is None and time.monotonic() >= due:
            return True
        self._filling = turn
        most = TURN_BATCHES * self.batch_size
        chunk = max(1, self.batch_size // 5)
        try:
            while handled < most and not self.stopping:
                if (committing is None or committing.done()) and (
                    handled >= self.batch_size or time.monotonic() >= due
                ):
                    break
                # A full turn takes the next records in smaller batches while the commit
                # runs, so that it begins soon after that commit ends.
                room = self.batch_size - handled
                more = self._take(consumer, FILL_POLL_SECONDS, room if room > 0 else chunk)
                if self._filling is None:
                    return False
                if more:
                    started = time.perf_counter()
                    self.handle(more, turn)
                    self._handle_seconds.observe(time.perf_counter() - started)
                    handled += len(more)
            return True
        finally:
            self._filling = None

    def _begin_commit(
        self, turn: Turn, offsets: list[TopicPartition], consumer: Consumer
    ) -> KafkaException | None:
        """Begin the turn's transaction, produce what it holds, and start its commit
        (with the offsets) on the helper thread; the failure, if it did not start."""
        producer = self._producer
        self._began = time.monotonic()
        try:
            producer.begin_transaction()
            turn.send(producer)
        except KafkaException as exc:
            return exc
        self.sealed()
        metadata = consumer.consumer_group_metadata() if offsets else None
        self._committing = self._calls.submit(self._commit, producer, offsets, metadata)
        return None

    def _commit(self, producer: Producer, offsets: list[TopicPartition], metadata: Any) -> None:
        """On the helper thread: the offsets join the transaction, which commits."""
        started = time.perf_counter()
        if offsets:
            producer.send_offsets_to_transaction(offsets, metadata, CALL_TIMEOUT_SECONDS)
        producer.commit_transaction(CALL_TIMEOUT_SECONDS)
        self._commit_seconds.observe(time.perf_counter() - started)

    def _settle(self) -> KafkaException | DeadlineExceeded | None:
        """Wait for the commit in flight, if any: `after_commit` once it committed; the
        failure if it did not."""
        future, self._committing = self._committing, None
        if future is None:
            return None
        started = time.perf_counter()
        try:
            self._calls.wait(future, 2 * CALL_DEADLINE_SECONDS, "commit")
        except (KafkaException, DeadlineExceeded) as exc:
            return exc
        self._wait_seconds.observe(time.perf_counter() - started)
        self.after_commit(self._producer)
        return None

    def _abandon(self, failed: KafkaException | DeadlineExceeded) -> bool:
        """A transaction failed: what it wrote never happened. Its producer goes on
        with the transaction aborted, or a new one does; True if the consumer looks
        stuck too (the caller then replaces it, else rewinds it to the last commit)."""
        TRANSACTION_ABORTS.labels(self.name).inc()
        self.after_abort()
        self._producer, stuck = self._after_failed_transaction(self._producer, failed)
        return stuck

    def _settled(self) -> bool | None:
        """The commit in flight ended: None if it committed (or there was none); if it
        failed, it is abandoned, and True when the consumer must be replaced, False
        when rewound."""
        failed = self._settle()
        return None if failed is None else self._abandon(failed)

    # -- clients -----------------------------------------------------------------------

    def _new_consumer(self) -> Consumer:
        consumer = new_consumer(
            self.settings,
            self.group_id,
            **{
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
            },
        )
        consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked)
        return consumer

    def _new_producer(self) -> Producer:
        """A transactional producer, once Kafka lets it initialise (retried until then)."""
        producer = self.retrying(self._init_producer)
        if producer is None:  # stopping
            raise KafkaException(KafkaError(KafkaError._DESTROY, f"{self.name} stopping"))
        return producer

    def _init_producer(self) -> Producer:
        transactional_id = f"{self.group_id}-{socket.gethostname()}-{os.getpid()}"
        producer = new_producer(self.settings, **transactional_config(transactional_id))
        self._transactional(producer.init_transactions)
        return producer

    def _transactional(self, call: Callable[..., None], *args: Any) -> None:
        """A transactional producer call, given up on if it outlives its own timeout."""
        self._calls.call(CALL_DEADLINE_SECONDS, call, *args, CALL_TIMEOUT_SECONDS)

    def retrying(self, step: Callable[[], T]) -> T | None:
        """Run `step` until it gets through Kafka (a broker restart is not an error);
        None if the loop stops first."""
        while not self._stopping.is_set():
            try:
                return step()
            except (KafkaException, KafkaUnavailable, DeadlineExceeded) as exc:
                log.warning("%s: Kafka is not answering (%s); retrying in 1 s", self.name, exc)
                time.sleep(1)
        return None

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
            log.warning("%s transaction failed (%s); rewinding", self.name, error)
            try:
                self._transactional(producer.abort_transaction)
                return producer, False
            except (KafkaException, DeadlineExceeded) as abort_failed:
                exc = abort_failed
        log.warning(
            "%s transaction failed (%s; librdkafka can get stuck like this after a"
            " broker restart); new producer and consumer",
            self.name,
            exc,
        )
        return self._new_producer(), True

    def _replace_consumer(self, consumer: Consumer) -> Consumer:
        """A new group member in place of `consumer`: it starts from the committed
        offsets and restores the state of what it is assigned, like any new owner.

        After a broker restart librdkafka's consumer, like its producer, can keep asking
        a coordinator connection that never answers: its offset fetches then time out
        forever (seen in the broker-restart test, minutes of them, nothing processed)."""
        self.forget(None)
        try:
            self._calls.call(CALL_DEADLINE_SECONDS, consumer.close)
        except (KafkaException, DeadlineExceeded) as exc:
            log.warning("%s: the old consumer did not close (%s); leaving it", self.name, exc)
        return self._new_consumer()

    def _rewind(self, consumer: Consumer) -> Consumer:
        """After an abort: back to the last committed offsets and the state they match;
        if Kafka does not say what those are, a new consumer that starts from them."""
        try:
            assignment = consumer.assignment()
            self.forget(None)
            self.restore(assignment)
            for tp in consumer.committed(assignment, timeout=CALL_TIMEOUT_SECONDS):
                consumer.seek(
                    TopicPartition(
                        tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    )
                )
        except (KafkaException, KafkaUnavailable) as exc:
            log.warning("%s: could not rewind (%s); new consumer", self.name, exc)
            return self._replace_consumer(consumer)
        return consumer

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle_for_rebalance()
        self._on_assign(consumer, partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle_for_rebalance()
        self._commit_filled(consumer)
        self._on_revoke(consumer, partitions)

    def _settle_for_rebalance(self) -> None:
        """Partitions come or go only with no commit in flight, so that what a new owner
        reads includes it and restored state matches the committed offsets. A failed
        one is abandoned here; the loop rewinds once the poll returns (a revoke and an
        assignment in one poll: the failure the first found is kept)."""
        stuck = self._settled()
        if stuck is not None:
            self._rewind_due = stuck
            self._filling = None  # handled on state the failed commit did not keep

    def _commit_filled(self, consumer: Consumer) -> None:
        """A turn filling (`_fill`) when its partitions are revoked commits now, with
        the positions it reached, so the next owner starts after it."""
        turn, self._filling = self._filling, None
        if turn is None:
            return
        self.checkpoint(turn)
        failed = self._begin_commit(turn, self._positions(consumer), consumer)
        if failed is not None:
            self._rewind_due = self._abandon(failed)
        else:
            self._settle_for_rebalance()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        def restore() -> None:
            # A stable offset fetch waits for a fenced predecessor's open transaction to
            # end, so the state read next includes everything that predecessor committed.
            consumer.committed(partitions, timeout=60)
            self.restore(partitions)

        self.retrying(restore)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.forget(partitions)

    def _behind(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        """The assigned partitions whose end is past this consumer's position (more than
        one commit marker past it), with that position: what it should be reading."""
        try:
            found = {}
            for tp in consumer.position(consumer.assignment()):
                if tp.offset < 0:
                    continue
                _, high = consumer.get_watermark_offsets(tp, timeout=5)
                if high > tp.offset + 1:
                    found[(tp.topic, tp.partition)] = tp.offset
            return found
        except KafkaException:
            return {}  # the broker does not answer: nothing to conclude

    def _sample(self, messages: Sequence[Message]) -> None:
        """These records' timestamps, as how far their partitions have been read: each
        batch's first and last (nothing per record), and once a second, before
        `periodic`, every record of the batch it follows (a partition behind its end
        with no recent sample would hold `read_through` back)."""
        for message in messages:
            topic, partition = message.topic(), message.partition()
            if topic in self.paced_by and partition is not None:
                kind, stamp = message.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE:
                    self._read_at[(topic, partition)] = stamp / 1000

    def _read_through(self, consumer: Consumer, now: float) -> float:
        """How far in time the `paced_by` topics have been read: `now` when each of their
        assigned partitions is read to its end (as the last fetch found it), else the
        oldest of the timestamps sampled from those still behind. While the loop reads a
        backlog, what `periodic` decides by time can then wait for the records of that
        time (a `not_followed_by`'s deadline passed on the clock, its B not yet read)."""
        if not self.paced_by:
            return now
        through, behind = now, {}
        try:
            for tp in self._positions(consumer):
                key = (tp.topic, tp.partition)
                if key not in self._read_at:  # not paced, or no record of it read yet
                    continue
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high > tp.offset + 1:  # not at its end (past a commit marker at most)
                    behind[key] = self._read_at[key]
                    through = min(through, behind[key])
        except KafkaException:
            return now  # nothing to conclude: the clock, as before
        self._read_at = behind  # a sample of a partition at its end or gone is stale
        return through

    def _take(self, consumer: Consumer, timeout: float, limit: int) -> list[Message]:
        """Wait up to `timeout` for the first record only, then take what is already
        fetched, up to `limit` in all: a batch when busy, no waiting for one when not
        (consume(n) blocks until n arrive). Errors other than records are logged and
        left out."""
        taken = [m for m in take(consumer, timeout, limit) if m.error() is None or self._usable(m)]
        if taken and self.paced_by:
            self._sample((taken[0], taken[-1]))
        return taken

    @staticmethod
    def _positions(consumer: Consumer) -> list[TopicPartition]:
        """The next offset to read on each assigned partition that has one: what a
        transaction commits as the consumer's offsets."""
        return [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s consumer: %s", self.name, error)
        return False
