"""The dispatcher's decisions as pure functions over its state (no Kafka here).

State is per trigger: its executions by execution id, each as its latest
`ExecutionRecord` (kept as that record's JSON and a `Head` of the values decisions read).
That map is the dedupe set (a fire whose execution id is present was already handled)
and the source of every transition. Each decision returns `Effects`: commands for
runtimes, control messages, records to publish (with their JSON), and entries to forget.

Transitions (anything else is ignored, so late or repeated results change nothing):

    fire ─► pending (issued) ──running──► running ──completed|failed|cancelled──► finished
      │        └──────────────completed|failed|cancelled────────────────────────►
      │        └── deadline passed ──► timed_out (+ cancel sent to the runtime)
      ├──► pending (buffered: not issued yet) ──slot frees──► pending (issued)
      └──► skipped (overlap policy, or the buffer is full)

`max_concurrent` counts issued executions that are pending or running, and
`concurrency` (a limit per value of its key) counts them per key. When a fire finds
either limit reached, the trigger's `overlap` policy decides: skip it, buffer it
(`buffer_one` keeps only the newest waiting fire, of its key when there is one;
`buffer_all` up to BUFFER_LIMIT in order), cancel the oldest running one (of its key if
that limit is the one reached: `cancel_other`), or start it anyway (`allow_all`, which
enforces neither). A buffered fire is issued as soon as a slot of its own key frees;
one waiting for its key does not hold up others behind it.

Retries (`retry`): an attempt that failed or timed out (as `retry.on` says) while
attempts remain goes back to `pending` with `attempt` one higher and `retry_at` its
backoff's end; it keeps its slot, and at `retry_at` the same execution id is issued
again. Results of an earlier attempt change nothing. When the attempts run out, the
execution is finished for good, and with `on_failure: emit` a CloudEvent
`trigger.execution.failed` goes to `events`. The breaker counts executions (their last
attempt), never attempts.

Before the overlap policy, two more gates (every fire they stop is recorded `skipped`
with the reason):

- the circuit breaker (`circuit_breaker`): after `failures` consecutive failed or
  timed-out runs the trigger is paused for `cooldown`; then one trial run goes through
  (half-open): a success closes the breaker, a failure opens it for another cooldown.
- the throttle (`throttle`): at most `limit` runs start in any sliding `period`, per
  trigger or per value of `throttle.key`. Excess fires are skipped (`excess: drop`) or
  wait among the buffered fires (`excess: queue`, bounded by BUFFER_LIMIT) until the
  period allows them.

Both are derived from the executions themselves (start times, finishing order), so they
come back with the state after a restart and need no store of their own.

Dedupe horizon: a finished execution is remembered for DEDUPE_HORIZON (7 days, past the
~3-day retry horizon of webhook senders) and then forgotten.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from processor.definitions.model import (
    Backoff,
    CircuitBreakerSpec,
    OverlapPolicy,
    RetrySpec,
    ThrottleExcess,
    ThrottleSpec,
)
from processor.messages import (
    CauseKind,
    ControlAction,
    ControlCommand,
    DomainEvent,
    ExecutionCommand,
    ExecutionRecord,
    ExecutionStatus,
    Fire,
    RunResult,
    RunStatus,
    trusted,
)
from processor.serde import (
    MAX_NESTING,
    json_object,
    may_nest_too_deep,
    nesting,
    plain_model,
    to_json,
)

BUFFER_LIMIT = 100
DEDUPE_HORIZON = timedelta(days=7)
FAILED_EVENT_TYPE = "trigger.execution.failed"
OUTPUT_MAX_BYTES = 262_144
"""Default bound on a runtime's output in an execution record (TRIGGERS_RESULT_OUTPUT_MAX_BYTES)."""
ERROR_MAX_CHARS = 8192
"""A runtime's error is kept up to this many characters, a note of what was cut included."""
RECORD_MAX_BYTES = 1_000_000
"""An execution record's JSON stays under this, below the broker's default limit on a
record (1 MiB) that `trigger-executions` and `dispatch-state` keep."""

_RESULT_STATUS = {
    RunStatus.RUNNING: ExecutionStatus.RUNNING,
    RunStatus.COMPLETED: ExecutionStatus.COMPLETED,
    RunStatus.FAILED: ExecutionStatus.FAILED,
    RunStatus.CANCELLED: ExecutionStatus.CANCELLED,
}


class Head(NamedTuple):
    """What decisions read of a stored execution without parsing it. A tuple of plain
    values, which Python's collector stops tracking: a million stored executions are
    not a million objects for every collection to walk (their pauses grew past 400 ms
    with the records kept as models)."""

    status: str
    issued_at: float | None
    deadline: float | None
    updated_at: float
    triggered_at: float
    order: int
    """When it was first stored, among all: ties in time keep that order."""
    retry_at: float | None
    key: str | None
    """Its `concurrency_key`."""
    record: bytes
    """The record's JSON, as written to `trigger-executions` and `dispatch-state`."""


def _seconds(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _kept(written: bytes) -> bytes:
    """A copy of JSON just written (by orjson; by pydantic where orjson cannot), for the
    state to keep: the same bytes in memory of their own size. Each record kept as
    orjson returns it grew the process by 8.2 KB and two page faults (a 2.3 KB record
    written 50,000 times; most likely its writer's growing buffer leaves pieces no later
    record fits), against 2.4 KB and 0.6 with the copy, which also halves the time to
    write and keep one: 5.4 against 2.5 µs
    (docs/benchmarks.md, "The dispatcher's records in memory of their own size")."""
    return bytes(memoryview(written))


@dataclass
class DispatchState:
    """Executions per trigger id, each by execution id: its JSON and a `Head`.

    Indexes keep the periodic work to what is due: the open (not finished) executions
    per trigger, those issued and those waiting, their deadlines in a heap, the
    triggers with throttled fires waiting, and the finished executions in a heap by
    time; so a second's timeouts cost what times out, not every open execution, and
    forgetting touches only what it forgets. A record is parsed only when a decision
    needs all of it (a result, a timeout, a waiting fire's turn).
    """

    _heads: dict[str, dict[str, Head]] = field(default_factory=dict)
    _issued: dict[str, set[str]] = field(default_factory=dict)
    """Per trigger, the open executions whose command was issued: how many run, in O(1)."""
    _waiting: dict[str, set[str]] = field(default_factory=dict)
    """Per trigger, the open executions not issued yet (buffered or throttled)."""
    _finished: list[tuple[float, str, str]] = field(default_factory=list)
    _deadlines: list[tuple[float, str, str]] = field(default_factory=list)
    """(deadline, trigger id, execution id) of issued executions; stale entries (the
    execution finished, or its deadline moved) are passed over when popped."""
    _retries: list[tuple[float, str, str]] = field(default_factory=list)
    """(retry_at, trigger id, execution id) of executions waiting for their next attempt."""
    _keyed: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """Per trigger and concurrency key, the open executions whose command was issued."""
    _throttled: set[str] = field(default_factory=set)
    """Triggers that may have fires waiting for their throttle's period."""
    _starts: dict[tuple[str, str | None], list[float]] = field(default_factory=dict)
    """Issue times (sorted) of throttled executions per throttle bucket: trigger id and
    throttle key. A throttle counts the runs started while it was set."""
    breakers: dict[str, Failures] = field(default_factory=dict)
    _stored: int = 0

    def has(self, trigger_id: str, execution_id: str) -> bool:
        return execution_id in self._heads.get(trigger_id, {})

    def get(self, trigger_id: str, execution_id: str) -> ExecutionRecord | None:
        head = self._heads.get(trigger_id, {}).get(execution_id)
        return None if head is None else ExecutionRecord.model_validate_json(head.record)

    def executions(self, trigger_id: str) -> list[ExecutionRecord]:
        """Every stored execution of the trigger, in the order first stored."""
        return [
            ExecutionRecord.model_validate_json(head.record)
            for head in self._heads.get(trigger_id, {}).values()
        ]

    def put(self, record: ExecutionRecord, encoded: bytes | None = None) -> bytes:
        """Store the execution's latest record; returns its JSON (`encoded`, if the
        caller has it already)."""
        raw = _kept(to_json(record)) if encoded is None else encoded
        trigger_id, execution_id = record.trigger_id, record.execution_id
        previous = self._heads.get(trigger_id, {}).get(execution_id)
        issued_at = _seconds(record.issued_at)
        if (
            issued_at is not None
            and record.throttle is not None
            and (previous is None or previous.issued_at is None)
        ):
            # Only a throttle reads issue times: an unthrottled trigger's runs would
            # make the index grow for as long as the process lives.
            starts = self._starts.setdefault((trigger_id, record.throttle_key), [])
            bisect.insort(starts, issued_at)
        was_finished = previous is not None and previous.status not in _OPEN
        count_finish_after(self.breakers, was_finished, record)
        self._store(
            trigger_id,
            execution_id,
            previous,
            Head(
                record.status.value,
                issued_at,
                _seconds(record.deadline),
                record.updated_at.timestamp(),
                record.triggered_at.timestamp(),
                self._order(previous),
                _seconds(record.retry_at),
                record.concurrency_key,
                raw,
            ),
            throttled=record.throttle is not None,
        )
        return raw

    def put_issued(
        self,
        trigger_id: str,
        execution_id: str,
        at: float,
        deadline: float,
        triggered_at: float,
        key: str | None,
        raw: bytes,
    ) -> None:
        """Store a new execution issued at `at` (pending, no throttle, no retry wait): what
        `put` does with its record, from the values it would read (`on_fire(encode=True)`)."""
        self._store(
            trigger_id,
            execution_id,
            None,
            Head(_PENDING, at, deadline, at, triggered_at, self._order(None), None, key, raw),
            throttled=False,
        )

    def _order(self, previous: Head | None) -> int:
        """An execution's place among all stored: its first store's."""
        if previous is not None:
            return previous.order
        self._stored += 1
        return self._stored

    def _store(
        self,
        trigger_id: str,
        execution_id: str,
        previous: Head | None,
        head: Head,
        throttled: bool,
    ) -> None:
        """Keep `head` as the execution's latest, and the indexes in step with it."""
        self._heads.setdefault(trigger_id, {})[execution_id] = head
        key = head.key
        issued = self._issued.setdefault(trigger_id, set())
        waiting = self._waiting.setdefault(trigger_id, set())
        keyed = self._keyed.setdefault((trigger_id, key), set()) if key is not None else None
        if head.status not in _OPEN:
            issued.discard(execution_id)
            waiting.discard(execution_id)
            if keyed is not None:
                keyed.discard(execution_id)
            heapq.heappush(self._finished, (head.updated_at, trigger_id, execution_id))
        elif head.issued_at is None:
            waiting.add(execution_id)
            if throttled:
                self._throttled.add(trigger_id)
        else:
            waiting.discard(execution_id)
            issued.add(execution_id)
            if keyed is not None:
                keyed.add(execution_id)
            deadline = head.deadline
            if head.retry_at is not None:
                heapq.heappush(self._retries, (head.retry_at, trigger_id, execution_id))
            elif deadline is not None and (previous is None or previous.deadline != deadline):
                heapq.heappush(self._deadlines, (deadline, trigger_id, execution_id))

    def forget(self, trigger_id: str, execution_id: str) -> None:
        head = self._heads.get(trigger_id, {}).pop(execution_id, None)
        self._issued.get(trigger_id, set()).discard(execution_id)
        self._waiting.get(trigger_id, set()).discard(execution_id)
        if head is not None and head.key is not None:
            self._keyed.get((trigger_id, head.key), set()).discard(execution_id)

    def drop_trigger_ids(self) -> None:
        """Forget everything, e.g. on partition revocation (restored on assignment)."""
        self._heads.clear()
        self._issued.clear()
        self._waiting.clear()
        self._finished.clear()
        self._deadlines.clear()
        self._retries.clear()
        self._keyed.clear()
        self._throttled.clear()
        self._starts.clear()
        self.breakers.clear()

    def started_after(self, trigger_id: str, key: str | None, since: float) -> list[float]:
        """Issue times of the bucket's executions after `since` (older ones are dropped
        from the index: the period only slides forward)."""
        starts = self._starts.get((trigger_id, key))
        if not starts:
            return []
        del starts[: bisect.bisect_right(starts, since)]
        return starts

    def past_deadline(self, now: datetime) -> list[ExecutionRecord]:
        """Pop the open executions whose deadline has come (soonest first)."""
        return self._pop_due(self._deadlines, now, lambda head: head.deadline)

    def retries_due(self, now: datetime) -> list[ExecutionRecord]:
        """Pop the executions whose next attempt is due (soonest first)."""
        return self._pop_due(self._retries, now, lambda head: head.retry_at)

    def _pop_due(
        self,
        heap: list[tuple[float, str, str]],
        now: datetime,
        when: Callable[[Head], float | None],
    ) -> list[ExecutionRecord]:
        """Pop the heap's entries up to `now` whose execution is still open and still due
        at that time (`when`); the others are stale (finished, or moved) and go."""
        found = []
        cutoff = now.timestamp()
        while heap and heap[0][0] <= cutoff:
            at, trigger_id, execution_id = heapq.heappop(heap)
            head = self._heads.get(trigger_id, {}).get(execution_id)
            if head is not None and head.status in _OPEN and when(head) == at:
                found.append(ExecutionRecord.model_validate_json(head.record))
        return found

    def throttle_waiting(self) -> list[str]:
        """Triggers with fires waiting for their throttle (sorted); the others leave
        the index."""
        for trigger_id in list(self._throttled):
            if not any(r.throttle is not None for r in self.buffered(trigger_id)):
                self._throttled.discard(trigger_id)
        return sorted(self._throttled)

    def finished_before(self, cutoff: datetime) -> list[tuple[str, str]]:
        """Pop finished executions last updated before `cutoff` (oldest first), as
        (trigger id, execution id)."""
        found = []
        while self._finished and self._finished[0][0] < cutoff.timestamp():
            at, trigger_id, execution_id = heapq.heappop(self._finished)
            head = self._heads.get(trigger_id, {}).get(execution_id)
            if head is not None and head.status not in _OPEN and head.updated_at == at:
                found.append((trigger_id, execution_id))
        return found

    def active_count(self, trigger_id: str) -> int:
        """How many executions of the trigger are issued and not finished."""
        return len(self._issued.get(trigger_id, ()))

    def active_count_of_key(self, trigger_id: str, key: str) -> int:
        """How many executions of the trigger with this concurrency key are issued and
        not finished."""
        return len(self._keyed.get((trigger_id, key), ()))

    def active(self, trigger_id: str, key: str | None = None) -> list[ExecutionRecord]:
        """Issued and not finished (of one concurrency key, if given), oldest first."""
        ids = self._issued.get(trigger_id, set())
        if key is not None:
            ids = self._keyed.get((trigger_id, key), set())
        return self._oldest_first(trigger_id, ids, lambda h: h.issued_at or h.triggered_at)

    def buffered(self, trigger_id: str) -> list[ExecutionRecord]:
        """Waiting for a slot, oldest first."""
        return self._oldest_first(
            trigger_id, self._waiting.get(trigger_id, set()), lambda h: h.triggered_at
        )

    def _oldest_first(
        self, trigger_id: str, ids: set[str], when: Callable[[Head], float]
    ) -> list[ExecutionRecord]:
        known = self._heads.get(trigger_id, {})
        heads = sorted(
            (known[e] for e in ids if e in known),
            key=lambda h: (when(h), h.order),
        )
        return [ExecutionRecord.model_validate_json(h.record) for h in heads]


_OPEN = frozenset({ExecutionStatus.PENDING.value, ExecutionStatus.RUNNING.value})
_PENDING = ExecutionStatus.PENDING.value


@dataclass
class Failures:
    """A trigger's run of consecutive failed or timed-out executions (in finishing
    order); a completed one ends it, cancelled and skipped ones leave it as it is."""

    consecutive: int = 0
    last_at: datetime | None = None

    def count(self, record: ExecutionRecord) -> None:
        if record.status in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT):
            self.consecutive += 1
            self.last_at = record.completed_at or record.updated_at
        elif record.status is ExecutionStatus.COMPLETED:
            self.consecutive = 0
            self.last_at = None

    def open_until(self, spec: CircuitBreakerSpec) -> datetime | None:
        """End of the cooldown if the breaker has opened (it may have passed: then the
        breaker is half-open), else None."""
        if self.consecutive < spec.failures or self.last_at is None:
            return None
        return self.last_at + timedelta(seconds=spec.cooldown.seconds)


def run_of_failures(latest: Iterable[ExecutionRecord]) -> Failures:
    """One trigger's current run of failures from the latest record of each of its
    executions, counted in the order they finished. A reader of `trigger-executions`
    (keyed by execution, so one trigger's records lie on every partition) meets them in
    no such order; the dispatcher, whose own state is kept by trigger, counts them as
    they finish (`count_finish_after`)."""
    finished = sorted(
        (r for r in latest if r.status.finished),
        key=lambda r: (r.completed_at or r.updated_at, r.updated_at),
    )
    failures = Failures()
    for record in finished:
        failures.count(record)
    return failures


def count_finish_after(
    failures: dict[str, Failures], was_finished: bool, record: ExecutionRecord
) -> None:
    """Count `record` in its trigger's run of failures if it is the execution's finish
    (the dispatcher, as its executions finish)."""
    if record.status.finished and not was_finished:
        failures.setdefault(record.trigger_id, Failures()).count(record)


def breaker_reason(
    state: DispatchState, trigger_id: str, spec: CircuitBreakerSpec | None, now: datetime
) -> str | None:
    """Why the circuit breaker stops a fire now, or None when it lets it through."""
    if spec is None:
        return None
    failures = state.breakers.get(trigger_id)
    until = failures.open_until(spec) if failures is not None else None
    if failures is None or until is None:
        return None
    opened = (
        f"circuit breaker open after {failures.consecutive} consecutive failed or timed-out runs"
    )
    if now < until:
        return f"{opened}; paused until {until.astimezone(UTC).isoformat()}"
    if state.active_count(trigger_id):
        return f"{opened}; a trial run is in progress (half-open)"
    return None


def throttled_until(
    state: DispatchState, trigger_id: str, spec: ThrottleSpec, key: str | None, now: datetime
) -> datetime | None:
    """When the throttle next lets a run of this bucket start, or None if it may now."""
    period = spec.period.seconds
    starts = state.started_after(trigger_id, key, now.timestamp() - period)
    if len(starts) < spec.limit:
        return None
    return datetime.fromtimestamp(starts[len(starts) - spec.limit] + period, UTC)


def _throttle_text(spec: ThrottleSpec, key: str | None, until: datetime) -> str:
    bucket = f" for key {key!r}" if key is not None else ""
    return (
        f"throttled: {spec.limit} runs per {spec.period} already started{bucket}; "
        f"next slot at {until.isoformat()}"
    )


class IssuedNow(NamedTuple):
    """A fire issued the moment it came, as the JSON the dispatcher writes: its command
    for `agent-runs` and its execution record (`on_fire(encode=True)`)."""

    trigger_id: str
    execution_id: str
    record: bytes
    command: bytes


@dataclass
class Effects:
    issued_now: list[IssuedNow] = field(default_factory=list)
    """With `on_fire(encode=True)`, a fire issued at once: written, not made models."""
    commands: list[ExecutionCommand] = field(default_factory=list)
    controls: list[ControlCommand] = field(default_factory=list)
    records: list[ExecutionRecord] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    """The JSON of each of `records`, as stored."""
    forgotten: list[tuple[str, str]] = field(default_factory=list)
    events: list[DomainEvent] = field(default_factory=list)
    """CloudEvents for `events` (`on_failure: emit`)."""
    breaker_stops: int = 0
    """Fires skipped because their trigger's circuit breaker is open."""

    def __bool__(self) -> bool:
        return bool(
            self.issued_now
            or self.commands
            or self.controls
            or self.records
            or self.forgotten
            or self.events
        )


def _record(
    state: DispatchState, effects: Effects, record: ExecutionRecord, encoded: bytes | None = None
) -> ExecutionRecord:
    effects.encoded.append(state.put(record, encoded))
    effects.records.append(record)
    return record


def _fitting(record: ExecutionRecord) -> tuple[ExecutionRecord, bytes | None]:
    """A finished record, and its JSON when this wrote it (for the state to keep). One
    whose output, within its own bound, still makes the whole too large with the
    execution's input (a webhook's body may be up to 1 MiB) leaves the output out, and
    says so."""
    if record.output_data is None:
        return record, None
    written = to_json(record)
    if len(written) <= RECORD_MAX_BYTES:
        return record, _kept(written)
    left_out = record.model_copy(
        update={
            "output_data": None,
            "output_left_out": f"the record would be {len(written):,} bytes with it and "
            f"this execution's input, over the {RECORD_MAX_BYTES:,} a record may take",
        }
    )
    return left_out, None


def _issue(state: DispatchState, effects: Effects, record: ExecutionRecord, now: datetime) -> None:
    deadline = now + timedelta(seconds=record.timeout_seconds)
    issued = record.model_copy(
        update={
            "issued_at": now,
            "deadline": deadline,
            "updated_at": now,
            "reason": None,
            "retry_at": None,
        }
    )
    _command(state, effects, issued, now, deadline)


def _command(
    state: DispatchState,
    effects: Effects,
    issued: ExecutionRecord,
    now: datetime,
    deadline: datetime,
) -> None:
    """Store an issued record and send its command."""
    _record(state, effects, issued)
    effects.commands.append(
        trusted(
            ExecutionCommand,
            execution_id=issued.execution_id,
            trigger_id=issued.trigger_id,
            trigger_name=issued.trigger_name,
            agent_id=issued.agent_id,
            workspace_id=issued.workspace_id,
            input=issued.input_data,
            cause=issued.cause,
            issued_at=now,
            deadline=deadline,
            attempt=issued.attempt,
        )
    )


def _issued_now(
    state: DispatchState,
    fire: Fire,
    now: datetime,
    deadline: datetime,
    input_json: bytes | None = None,
) -> IssuedNow | None:
    """A fire issued at once, written as JSON straight from its fields and stored: the
    bytes `to_json` gives its `ExecutionRecord` and `ExecutionCommand` (fields in their
    declaration order, nulls left out; a unit test holds them equal), without making the
    two models and walking them (25 against 7 µs per fire). None when orjson cannot
    write a value (a huge int): the models' way then, which leaves it to pydantic. The
    input, given as JSON (`input_json`), goes into both as those bytes."""
    cause = plain_model(fire.cause)
    input_ = fire.input if input_json is None else orjson.Fragment(input_json)
    record: dict[str, Any] = {
        "execution_id": fire.execution_id,
        "trigger_id": fire.trigger_id,
        "trigger_name": fire.trigger_name,
        "agent_id": fire.agent_id,
        "workspace_id": fire.workspace_id,
        "status": _PENDING,
        "cause": cause,
        "input_data": input_,
        "triggered_at": fire.fired_at,
        "updated_at": now,
        "deadline": deadline,
        "issued_at": now,
        "timeout_seconds": fire.timeout_seconds,
        "max_concurrent": fire.max_concurrent,
        "overlap": fire.overlap,
    }
    if fire.throttle_key is not None:
        record["throttle_key"] = fire.throttle_key
    if fire.circuit_breaker is not None:
        record["circuit_breaker"] = plain_model(fire.circuit_breaker)
    record["attempt"] = 1
    if fire.retry is not None:
        record["retry"] = plain_model(fire.retry)
    if fire.on_failure is not None:
        record["on_failure"] = fire.on_failure
    if fire.concurrency is not None:
        record["concurrency"] = plain_model(fire.concurrency)
    if fire.concurrency_key is not None:
        record["concurrency_key"] = fire.concurrency_key
    record["id"] = fire.execution_id
    command = {
        "execution_id": fire.execution_id,
        "trigger_id": fire.trigger_id,
        "trigger_name": fire.trigger_name,
        "agent_id": fire.agent_id,
        "workspace_id": fire.workspace_id,
        "input": input_,
        "cause": cause,
        "issued_at": now,
        "deadline": deadline,
        "attempt": 1,
    }
    try:
        # The copy kept is also the one written: orjson's own is freed at once, not when
        # the turn is sent (2.6 against 2.9 KB per execution kept, bench/hot_path.py).
        raw = _kept(orjson.dumps(record, option=orjson.OPT_UTC_Z))
        written = orjson.dumps(command, option=orjson.OPT_UTC_Z)
    except TypeError:  # orjson.JSONEncodeError
        return None
    at = now.timestamp()
    state.put_issued(
        fire.trigger_id,
        fire.execution_id,
        at,
        deadline.timestamp(),
        fire.fired_at.timestamp(),
        fire.concurrency_key,
        raw,
    )
    return IssuedNow(fire.trigger_id, fire.execution_id, raw, written)


def _finish(
    state: DispatchState,
    effects: Effects,
    record: ExecutionRecord,
    status: ExecutionStatus,
    now: datetime,
    reason: str,
    cancel_runtime: bool,
) -> None:
    finished = _record(
        state,
        effects,
        record.model_copy(
            update={
                "status": status,
                "updated_at": now,
                "completed_at": now,
                "reason": reason,
                "retry_at": None,
            }
        ),
    )
    _announce_failure(effects, finished, now)
    if cancel_runtime:
        effects.controls.append(
            ControlCommand(execution_id=record.execution_id, action=ControlAction.CANCEL)
        )


def _release(state: DispatchState, effects: Effects, trigger_id: str, now: datetime) -> None:
    """Issue buffered fires, oldest first, while slots are free and their throttle
    bucket allows (a throttled one waits; others behind it may go). While the circuit
    breaker is open, waiting fires are skipped instead."""
    for waiting in state.buffered(trigger_id):
        if waiting.overlap is not OverlapPolicy.ALLOW_ALL:
            if state.active_count(trigger_id) >= waiting.max_concurrent:
                return
            if _key_full(state, waiting):
                continue
        stopped = breaker_reason(state, trigger_id, waiting.circuit_breaker, now)
        if stopped is not None:
            _finish(state, effects, waiting, ExecutionStatus.SKIPPED, now, stopped, False)
            effects.breaker_stops += 1
            continue
        if waiting.throttle is not None and throttled_until(
            state, trigger_id, waiting.throttle, waiting.throttle_key, now
        ):
            continue
        _issue(state, effects, waiting, now)


def _record_fields(fire: Fire, now: datetime) -> dict[str, Any]:
    """A fire's execution record as it is first stored (pending), by field."""
    return {
        "execution_id": fire.execution_id,
        "trigger_id": fire.trigger_id,
        "trigger_name": fire.trigger_name,
        "agent_id": fire.agent_id,
        "workspace_id": fire.workspace_id,
        "status": ExecutionStatus.PENDING,
        "cause": fire.cause,
        "input_data": fire.input,
        "triggered_at": fire.fired_at,
        "updated_at": now,
        "timeout_seconds": fire.timeout_seconds,
        "max_concurrent": fire.max_concurrent,
        "overlap": fire.overlap,
        "throttle": fire.throttle,
        "throttle_key": fire.throttle_key,
        "circuit_breaker": fire.circuit_breaker,
        "retry": fire.retry,
        "on_failure": fire.on_failure,
        "concurrency": fire.concurrency,
        "concurrency_key": fire.concurrency_key,
    }


def _with_input(fire: Fire, input_json: bytes | None) -> Fire:
    """The fire with the input it came with, read from its JSON if kept as that."""
    if input_json is None:
        return fire
    return fire.model_copy(update={"input": json_object(input_json)})


def on_fire(
    state: DispatchState,
    fire: Fire,
    now: datetime,
    encode: bool = False,
    input_json: bytes | None = None,
) -> Effects | None:
    """Handle a fire; None when its execution id was handled before (a duplicate). With
    `encode`, a fire issued at once comes as the JSON the dispatcher writes
    (`Effects.issued_now`), not as record and command models. `input_json`: the fire's
    input as the JSON it came in, its `input` left empty (`serde.from_json_keeping`);
    written as it is when issued at once (with `encode`), read otherwise."""
    if state.has(fire.trigger_id, fire.execution_id):
        return None
    effects = Effects()
    stopped = breaker_reason(state, fire.trigger_id, fire.circuit_breaker, now)
    # O(1) before the policy decision: the open executions are sorted only when a policy
    # needs their order (cancel_other), not for every fire.
    key_full = _key_full(state, fire)
    free = fire.overlap is OverlapPolicy.ALLOW_ALL or (
        not key_full and state.active_count(fire.trigger_id) < fire.max_concurrent
    )
    if stopped is None and fire.throttle is None and free:
        # Issued at once (most fires): the record is made issued, not made pending and
        # copied (what `_issue` does for one that waited).
        deadline = now + timedelta(seconds=fire.timeout_seconds)
        if encode:
            written = _issued_now(state, fire, now, deadline, input_json)
            if written is not None:
                effects.issued_now.append(written)
                return effects
        fire = _with_input(fire, input_json)
        issued = trusted(
            ExecutionRecord, **_record_fields(fire, now), issued_at=now, deadline=deadline
        )
        _command(state, effects, issued, now, deadline)
        return effects
    fire = _with_input(fire, input_json)
    record = ExecutionRecord(**_record_fields(fire, now))
    if stopped is not None:
        _finish(state, effects, record, ExecutionStatus.SKIPPED, now, stopped, False)
        effects.breaker_stops += 1
        return effects
    if fire.throttle is not None and _throttle(state, effects, record, fire.throttle, now):
        return effects
    if free:  # the throttle let it through (a throttle that does changes nothing)
        _issue(state, effects, record, now)
        return effects
    if key_full:
        assert fire.concurrency is not None
        full = (
            f"concurrency.limit ({fire.concurrency.limit}) executions of key "
            f"{fire.concurrency_key!r} are running"
        )
    else:
        full = f"max_concurrent ({fire.max_concurrent}) executions are running"
    if fire.overlap is OverlapPolicy.SKIP:
        _finish(
            state, effects, record, ExecutionStatus.SKIPPED, now, f"{full} (overlap: skip)", False
        )
    elif fire.overlap is OverlapPolicy.CANCEL_OTHER:
        oldest = state.active(fire.trigger_id, fire.concurrency_key if key_full else None)[0]
        _finish(
            state,
            effects,
            oldest,
            ExecutionStatus.CANCELLED,
            now,
            f"cancelled for newer execution {fire.execution_id} (overlap: cancel_other)",
            oldest.retry_at is None,
        )
        _issue(state, effects, record, now)
    else:
        waiting = state.buffered(fire.trigger_id)
        if fire.overlap is OverlapPolicy.BUFFER_ONE:
            for older in waiting:
                if older.concurrency_key != fire.concurrency_key:
                    continue
                reason = f"replaced by newer fire {fire.execution_id} (overlap: buffer_one)"
                _finish(state, effects, older, ExecutionStatus.SKIPPED, now, reason, False)
        elif len(waiting) >= BUFFER_LIMIT:
            reason = f"{full} and {BUFFER_LIMIT} fires already wait (overlap: buffer_all)"
            _finish(state, effects, record, ExecutionStatus.SKIPPED, now, reason, False)
            return effects
        _record(
            state,
            effects,
            record.model_copy(
                update={"reason": f"waiting: {full} (overlap: {fire.overlap.value})"}
            ),
        )
    return effects


def _throttle(
    state: DispatchState,
    effects: Effects,
    record: ExecutionRecord,
    spec: ThrottleSpec,
    now: datetime,
) -> bool:
    """Apply the throttle to a new fire; True when it took the fire (skipped or queued)."""
    key = record.throttle_key
    until = throttled_until(state, record.trigger_id, spec, key, now)
    if spec.excess is ThrottleExcess.DROP:
        if until is None:
            return False
        reason = f"{_throttle_text(spec, key, until)} (throttle.excess: drop)"
        _finish(state, effects, record, ExecutionStatus.SKIPPED, now, reason, False)
        return True
    waiting = state.buffered(record.trigger_id)
    if until is None and not any(w.throttle_key == key for w in waiting):
        return False
    if len(waiting) >= BUFFER_LIMIT:
        reason = f"throttled and {BUFFER_LIMIT} fires already wait (throttle.excess: queue)"
        _finish(state, effects, record, ExecutionStatus.SKIPPED, now, reason, False)
        return True
    reason = "waiting: " + (
        _throttle_text(spec, key, until) if until is not None else "earlier fires of its key wait"
    )
    _record(state, effects, record.model_copy(update={"reason": reason}))
    _release(state, effects, record.trigger_id, now)
    return True


class UnknownExecution(LookupError):
    """A result names an execution this dispatcher never issued."""


def bounded(result: RunResult, raw: bytes, output_max_bytes: int = OUTPUT_MAX_BYTES) -> RunResult:
    """The result as a record can keep it (`raw`: its JSON as read): an output over
    `output_max_bytes` of JSON, or nesting deeper than JSON writers go, is left out and
    `output_left_out` says why; an error is cut at ERROR_MAX_CHARS. Either one as it was
    would make a record the broker refuses, and the dispatcher's transaction with it, at
    every try. A result within both bounds (nearly all) costs two byte counts."""
    update: dict[str, Any] = {}
    if result.output is not None and (len(raw) > output_max_bytes or may_nest_too_deep(raw)):
        why = _output_left_out(result.output, output_max_bytes)
        if why is not None:
            update["output"], update["output_left_out"] = None, why
    if result.error is not None and len(result.error) > ERROR_MAX_CHARS:
        kept = ERROR_MAX_CHARS - 48  # room for the note: a cut error is not cut again
        more = len(result.error) - kept
        update["error"] = f"{result.error[:kept]}... ({more:,} more characters)"
    return result.model_copy(update=update) if update else result


def _output_left_out(output: Any, max_bytes: int) -> str | None:
    if nesting(output) > MAX_NESTING:
        return f"it nests deeper than {MAX_NESTING} levels, more than a record can be written with"
    size = len(orjson.dumps(output))
    if size > max_bytes:
        return f"{size:,} bytes of JSON, over TRIGGERS_RESULT_OUTPUT_MAX_BYTES ({max_bytes:,})"
    return None


def on_result(state: DispatchState, result: RunResult, now: datetime) -> Effects:
    """The effects of a runtime's report (empty when it changes nothing)."""
    if result.trigger_id is None:
        raise UnknownExecution("result has no trigger_id")
    current = state.get(result.trigger_id, result.execution_id)
    if current is None:
        raise UnknownExecution(f"no execution {result.execution_id} of trigger {result.trigger_id}")
    effects = Effects()
    status = _RESULT_STATUS[result.status]
    if current.status.finished or status is current.status:
        return effects
    if current.retry_at is not None or (
        result.attempt is not None and result.attempt != current.attempt
    ):
        return effects  # a report of an earlier attempt
    at = result.at or now
    if status is ExecutionStatus.FAILED and _retries(current, status):
        _retry(state, effects, current, now, f"failed: {result.error or 'no error given'}")
        return effects
    update: dict[str, object] = {"status": status, "updated_at": now}
    if status is ExecutionStatus.RUNNING or current.started_at is None:
        update["started_at"] = at
    if status.finished:
        update["completed_at"] = at
        update["output_data"] = result.output
        update["output_left_out"] = result.output_left_out
        update["error_message"] = result.error
    finished = _record(state, effects, *_fitting(current.model_copy(update=update)))
    if status.finished:
        _announce_failure(effects, finished, now)
        _release(state, effects, current.trigger_id, now)
    return effects


def expire(state: DispatchState, now: datetime) -> Effects:
    """Executions past their deadline time out (and are cancelled at the runtime);
    throttled fires whose period now allows them start; finished executions older than
    the dedupe horizon are forgotten."""
    effects = Effects()
    for record in state.past_deadline(now):
        reason = f"no result within {record.timeout_seconds} s (timeout_seconds)"
        if _retries(record, ExecutionStatus.TIMED_OUT):
            effects.controls.append(
                ControlCommand(execution_id=record.execution_id, action=ControlAction.CANCEL)
            )
            _retry(state, effects, record, now, f"timed out: {reason}")
            continue
        _finish(state, effects, record, ExecutionStatus.TIMED_OUT, now, reason, True)
        _release(state, effects, record.trigger_id, now)
    for record in state.retries_due(now):
        _issue(state, effects, record, now)
    for trigger_id in state.throttle_waiting():
        _release(state, effects, trigger_id, now)
    for trigger_id, execution_id in state.finished_before(
        now - DEDUPE_HORIZON + timedelta(microseconds=1)
    ):
        state.forget(trigger_id, execution_id)
        effects.forgotten.append((trigger_id, execution_id))
    return effects


def on_cancel(state: DispatchState, trigger_id: str, execution_id: str, now: datetime) -> Effects:
    """A cancel asked for over the API: at once if it has not started (buffered, or
    issued but not reported running); otherwise ask the runtime, which confirms."""
    current = state.get(trigger_id, execution_id)
    if current is None:
        raise UnknownExecution(f"no execution {execution_id} of trigger {trigger_id}")
    effects = Effects()
    if current.status.finished:
        return effects
    if current.status is ExecutionStatus.RUNNING:
        effects.controls.append(
            ControlCommand(execution_id=execution_id, action=ControlAction.CANCEL)
        )
        return effects
    _finish(
        state,
        effects,
        current,
        ExecutionStatus.CANCELLED,
        now,
        "cancelled on request",
        cancel_runtime=current.issued_at is not None and current.retry_at is None,
    )
    _release(state, effects, trigger_id, now)
    return effects


def _key_full(state: DispatchState, record: ExecutionRecord | Fire) -> bool:
    """Whether the record's concurrency key has `concurrency.limit` executions issued."""
    if record.concurrency is None or record.concurrency_key is None:
        return False
    return (
        state.active_count_of_key(record.trigger_id, record.concurrency_key)
        >= record.concurrency.limit
    )


def _retries(record: ExecutionRecord, status: ExecutionStatus) -> bool:
    """Whether an attempt of `record` ending as `status` is followed by another."""
    spec = record.retry
    return (
        spec is not None
        and record.attempt < spec.attempts
        and any(on.value == status.value for on in spec.on)
    )


def retry_delay(spec: RetrySpec, execution_id: str, attempt: int) -> float:
    """Seconds from the end of attempt `attempt` to the start of the next: `initial`,
    doubled per attempt for `exponential`, at most `max`; with `jitter`, between half
    that and all of it, the same for the same execution and attempt."""
    delay = spec.initial.seconds
    if spec.backoff is Backoff.EXPONENTIAL:
        delay *= 2.0 ** min(attempt - 1, 64)
    delay = min(delay, spec.max.seconds)
    if spec.jitter:
        digest = hashlib.blake2b(f"{execution_id}/{attempt}".encode(), digest_size=8).digest()
        delay *= 0.5 + int.from_bytes(digest) / 2**65
    return delay


def _retry(
    state: DispatchState, effects: Effects, record: ExecutionRecord, now: datetime, ended: str
) -> None:
    """Put the execution back to `pending` for its next attempt after the backoff; it
    keeps its slot (no other fire takes it while it waits)."""
    assert record.retry is not None
    at = now + timedelta(seconds=retry_delay(record.retry, record.execution_id, record.attempt))
    _record(
        state,
        effects,
        record.model_copy(
            update={
                "status": ExecutionStatus.PENDING,
                "attempt": record.attempt + 1,
                "retry_at": at,
                "deadline": None,
                "updated_at": now,
                "error_message": ended,
                "reason": (
                    f"attempt {record.attempt} {ended}; attempt {record.attempt + 1} of "
                    f"{record.retry.attempts} at {at.isoformat()}"
                ),
            }
        ),
    )


def _announce_failure(effects: Effects, record: ExecutionRecord, now: datetime) -> None:
    """With `on_failure: emit`, a failed or timed-out execution (for good) becomes a
    `trigger.execution.failed` CloudEvent. Not for an execution that a failure event
    itself started: a failing failure handler would otherwise announce itself forever."""
    if record.on_failure is None or record.status not in (
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
    ):
        return
    cause = record.cause
    if cause.type is CauseKind.EVENT and getattr(cause, "event_type", None) == FAILED_EVENT_TYPE:
        return
    effects.events.append(
        DomainEvent(
            id=record.execution_id,
            type=FAILED_EVENT_TYPE,
            source=f"/triggers/{record.trigger_id}",
            time=now,
            subject=record.execution_id,
            datacontenttype="application/json",
            workspace_id=record.workspace_id,
            data={
                "trigger_id": record.trigger_id,
                "trigger_name": record.trigger_name,
                "agent_id": record.agent_id,
                "execution_id": record.execution_id,
                "status": record.status.value,
                "attempts": record.attempt,
                "error": (
                    record.reason
                    if record.status is ExecutionStatus.TIMED_OUT
                    else record.error_message
                ),
                "cause": cause.type.value,
                "triggered_at": record.triggered_at.isoformat(),
            },
        )
    )
