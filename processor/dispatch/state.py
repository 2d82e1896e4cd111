"""The dispatcher's decisions as pure functions over its state (no Kafka here).

State is per trigger: its executions by execution id, each as its latest
`ExecutionRecord`. That map is the dedupe set (a fire whose execution id is present was
already handled) and the source of every transition. Each decision returns `Effects`:
commands for runtimes, control messages, records to publish, and entries to forget.

Transitions (anything else is ignored, so late or repeated results change nothing):

    fire ─► pending (issued) ──running──► running ──completed|failed|cancelled──► finished
      │        └──────────────completed|failed|cancelled────────────────────────►
      │        └── deadline passed ──► timed_out (+ cancel sent to the runtime)
      ├──► pending (buffered: not issued yet) ──slot frees──► pending (issued)
      └──► skipped (overlap policy, or the buffer is full)

`max_concurrent` counts issued executions that are pending or running. When a fire
finds them all taken, the trigger's `overlap` policy decides: skip it, buffer it
(`buffer_one` keeps only the newest waiting fire, `buffer_all` up to BUFFER_LIMIT in
order), cancel the oldest running one (`cancel_other`), or start it anyway
(`allow_all`). A buffered fire is issued as soon as a slot frees.

Dedupe horizon: a finished execution is remembered for DEDUPE_HORIZON (7 days, past the
~3-day retry horizon of webhook senders) and then forgotten.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from processor.definitions.model import OverlapPolicy
from processor.messages import (
    ControlAction,
    ControlCommand,
    ExecutionCommand,
    ExecutionRecord,
    ExecutionStatus,
    Fire,
    RunResult,
    RunStatus,
)

BUFFER_LIMIT = 100
DEDUPE_HORIZON = timedelta(days=7)

_RESULT_STATUS = {
    RunStatus.RUNNING: ExecutionStatus.RUNNING,
    RunStatus.COMPLETED: ExecutionStatus.COMPLETED,
    RunStatus.FAILED: ExecutionStatus.FAILED,
    RunStatus.CANCELLED: ExecutionStatus.CANCELLED,
}


@dataclass
class DispatchState:
    """Executions per trigger id, each by execution id.

    Two indexes keep the periodic work small: the open (not finished) executions per
    trigger, and the finished ones in a heap by time, so timeouts touch only open
    executions and forgetting touches only what it forgets.
    """

    executions: dict[str, dict[str, ExecutionRecord]] = field(default_factory=dict)
    _open: dict[str, dict[str, None]] = field(default_factory=dict)  # insertion-ordered
    _finished: list[tuple[float, str, str]] = field(default_factory=list)

    def get(self, trigger_id: str, execution_id: str) -> ExecutionRecord | None:
        return self.executions.get(trigger_id, {}).get(execution_id)

    def put(self, record: ExecutionRecord) -> None:
        self.executions.setdefault(record.trigger_id, {})[record.execution_id] = record
        open_ids = self._open.setdefault(record.trigger_id, {})
        if record.status.finished:
            open_ids.pop(record.execution_id, None)
            heapq.heappush(
                self._finished,
                (record.updated_at.timestamp(), record.trigger_id, record.execution_id),
            )
        else:
            open_ids.setdefault(record.execution_id, None)

    def forget(self, trigger_id: str, execution_id: str) -> None:
        self.executions.get(trigger_id, {}).pop(execution_id, None)
        self._open.get(trigger_id, {}).pop(execution_id, None)

    def drop_trigger_ids(self) -> None:
        """Forget everything, e.g. on partition revocation (restored on assignment)."""
        self.executions.clear()
        self._open.clear()
        self._finished.clear()

    def open(self) -> list[ExecutionRecord]:
        return [self.executions[t][e] for t, ids in self._open.items() for e in ids]

    def finished_before(self, cutoff: datetime) -> list[ExecutionRecord]:
        """Pop finished executions last updated before `cutoff` (oldest first)."""
        found = []
        while self._finished and self._finished[0][0] < cutoff.timestamp():
            at, trigger_id, execution_id = heapq.heappop(self._finished)
            record = self.get(trigger_id, execution_id)
            if (
                record is not None
                and record.status.finished
                and record.updated_at.timestamp() == at
            ):
                found.append(record)
        return found

    def _open_of(self, trigger_id: str) -> list[ExecutionRecord]:
        executions = self.executions.get(trigger_id, {})
        return [executions[e] for e in self._open.get(trigger_id, ())]

    def active(self, trigger_id: str) -> list[ExecutionRecord]:
        """Issued and not finished, oldest first."""
        return sorted(
            (r for r in self._open_of(trigger_id) if r.issued_at is not None),
            key=lambda r: r.issued_at or r.triggered_at,
        )

    def buffered(self, trigger_id: str) -> list[ExecutionRecord]:
        """Waiting for a slot, oldest first."""
        return sorted(
            (r for r in self._open_of(trigger_id) if r.issued_at is None),
            key=lambda r: r.triggered_at,
        )


@dataclass
class Effects:
    commands: list[ExecutionCommand] = field(default_factory=list)
    controls: list[ControlCommand] = field(default_factory=list)
    records: list[ExecutionRecord] = field(default_factory=list)
    forgotten: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.commands or self.controls or self.records or self.forgotten)


def _record(state: DispatchState, effects: Effects, record: ExecutionRecord) -> ExecutionRecord:
    state.put(record)
    effects.records.append(record)
    return record


def _issue(state: DispatchState, effects: Effects, record: ExecutionRecord, now: datetime) -> None:
    deadline = now + timedelta(seconds=record.timeout_seconds)
    issued = _record(
        state,
        effects,
        record.model_copy(
            update={"issued_at": now, "deadline": deadline, "updated_at": now, "reason": None}
        ),
    )
    effects.commands.append(
        ExecutionCommand(
            execution_id=issued.execution_id,
            trigger_id=issued.trigger_id,
            trigger_name=issued.trigger_name,
            agent_id=issued.agent_id,
            workspace_id=issued.workspace_id,
            input=issued.input_data,
            cause=issued.cause,
            issued_at=now,
            deadline=deadline,
        )
    )


def _finish(
    state: DispatchState,
    effects: Effects,
    record: ExecutionRecord,
    status: ExecutionStatus,
    now: datetime,
    reason: str,
    cancel_runtime: bool,
) -> None:
    _record(
        state,
        effects,
        record.model_copy(
            update={"status": status, "updated_at": now, "completed_at": now, "reason": reason}
        ),
    )
    if cancel_runtime:
        effects.controls.append(
            ControlCommand(execution_id=record.execution_id, action=ControlAction.CANCEL)
        )


def _release(state: DispatchState, effects: Effects, trigger_id: str, now: datetime) -> None:
    """Issue buffered fires while slots are free."""
    for waiting in state.buffered(trigger_id):
        if len(state.active(trigger_id)) >= waiting.max_concurrent:
            return
        _issue(state, effects, waiting, now)


def on_fire(state: DispatchState, fire: Fire, now: datetime) -> Effects | None:
    """Handle a fire; None when its execution id was handled before (a duplicate)."""
    if state.get(fire.trigger_id, fire.execution_id) is not None:
        return None
    effects = Effects()
    record = ExecutionRecord(
        execution_id=fire.execution_id,
        trigger_id=fire.trigger_id,
        trigger_name=fire.trigger_name,
        agent_id=fire.agent_id,
        workspace_id=fire.workspace_id,
        status=ExecutionStatus.PENDING,
        cause=fire.cause,
        input_data=fire.input,
        triggered_at=fire.fired_at,
        updated_at=now,
        timeout_seconds=fire.timeout_seconds,
        max_concurrent=fire.max_concurrent,
        overlap=fire.overlap,
    )
    active = state.active(fire.trigger_id)
    if fire.overlap is OverlapPolicy.ALLOW_ALL or len(active) < fire.max_concurrent:
        _issue(state, effects, record, now)
        return effects
    full = f"max_concurrent ({fire.max_concurrent}) executions are running"
    if fire.overlap is OverlapPolicy.SKIP:
        _finish(
            state, effects, record, ExecutionStatus.SKIPPED, now, f"{full} (overlap: skip)", False
        )
    elif fire.overlap is OverlapPolicy.CANCEL_OTHER:
        _finish(
            state,
            effects,
            active[0],
            ExecutionStatus.CANCELLED,
            now,
            f"cancelled for newer execution {fire.execution_id} (overlap: cancel_other)",
            True,
        )
        _issue(state, effects, record, now)
    else:
        waiting = state.buffered(fire.trigger_id)
        if fire.overlap is OverlapPolicy.BUFFER_ONE:
            for older in waiting:
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


class UnknownExecution(LookupError):
    """A result names an execution this dispatcher never issued."""


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
    at = result.at or now
    update: dict[str, object] = {"status": status, "updated_at": now}
    if status is ExecutionStatus.RUNNING or current.started_at is None:
        update["started_at"] = at
    if status.finished:
        update["completed_at"] = at
        update["output_data"] = result.output
        update["error_message"] = result.error
    _record(state, effects, current.model_copy(update=update))
    if status.finished:
        _release(state, effects, current.trigger_id, now)
    return effects


def expire(state: DispatchState, now: datetime) -> Effects:
    """Executions past their deadline time out (and are cancelled at the runtime);
    finished ones older than the dedupe horizon are forgotten."""
    effects = Effects()
    for record in state.open():
        if record.deadline is not None and record.deadline <= now:
            reason = f"no result within {record.timeout_seconds} s (timeout_seconds)"
            _finish(state, effects, record, ExecutionStatus.TIMED_OUT, now, reason, True)
            _release(state, effects, record.trigger_id, now)
    for record in state.finished_before(now - DEDUPE_HORIZON + timedelta(microseconds=1)):
        state.forget(record.trigger_id, record.execution_id)
        effects.forgotten.append((record.trigger_id, record.execution_id))
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
        cancel_runtime=current.issued_at is not None,
    )
    _release(state, effects, trigger_id, now)
    return effects
