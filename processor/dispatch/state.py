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
    """Executions per trigger id, each by execution id."""

    executions: dict[str, dict[str, ExecutionRecord]] = field(default_factory=dict)

    def get(self, trigger_id: str, execution_id: str) -> ExecutionRecord | None:
        return self.executions.get(trigger_id, {}).get(execution_id)

    def put(self, record: ExecutionRecord) -> None:
        self.executions.setdefault(record.trigger_id, {})[record.execution_id] = record

    def forget(self, trigger_id: str, execution_id: str) -> None:
        self.executions.get(trigger_id, {}).pop(execution_id, None)

    def drop_trigger_ids(self) -> None:
        """Forget everything, e.g. on partition revocation (restored on assignment)."""
        self.executions.clear()

    def active(self, trigger_id: str) -> list[ExecutionRecord]:
        """Issued and not finished, oldest first."""
        return sorted(
            (
                r
                for r in self.executions.get(trigger_id, {}).values()
                if not r.status.finished and r.issued_at is not None
            ),
            key=lambda r: r.issued_at or r.triggered_at,
        )

    def buffered(self, trigger_id: str) -> list[ExecutionRecord]:
        """Waiting for a slot, oldest first."""
        return sorted(
            (
                r
                for r in self.executions.get(trigger_id, {}).values()
                if r.status is ExecutionStatus.PENDING and r.issued_at is None
            ),
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
        _record(
            state,
            effects,
            record.model_copy(
                update={
                    "status": ExecutionStatus.SKIPPED,
                    "completed_at": now,
                    "reason": f"{full} (overlap: skip)",
                }
            ),
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
                _record(
                    state,
                    effects,
                    older.model_copy(
                        update={
                            "status": ExecutionStatus.SKIPPED,
                            "updated_at": now,
                            "completed_at": now,
                            "reason": f"replaced by newer fire {fire.execution_id} "
                            "(overlap: buffer_one)",
                        }
                    ),
                )
        elif len(waiting) >= BUFFER_LIMIT:
            _record(
                state,
                effects,
                record.model_copy(
                    update={
                        "status": ExecutionStatus.SKIPPED,
                        "completed_at": now,
                        "reason": f"{full} and {BUFFER_LIMIT} fires already wait "
                        "(overlap: buffer_all)",
                    }
                ),
            )
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
    for trigger_id, executions in list(state.executions.items()):
        for record in list(executions.values()):
            if (
                not record.status.finished
                and record.deadline is not None
                and record.deadline <= now
            ):
                _finish(
                    state,
                    effects,
                    record,
                    ExecutionStatus.TIMED_OUT,
                    now,
                    f"no result within {record.timeout_seconds} s (timeout_seconds)",
                    True,
                )
                _release(state, effects, trigger_id, now)
            elif record.status.finished and record.updated_at <= now - DEDUPE_HORIZON:
                state.forget(trigger_id, record.execution_id)
                effects.forgotten.append((trigger_id, record.execution_id))
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
