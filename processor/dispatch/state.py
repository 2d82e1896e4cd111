"""The dispatcher's decisions as pure functions over its state (no Kafka here).

State is per trigger: the executions it has issued, by execution id, each as its latest
`ExecutionRecord`. That map is both the dedupe set (a fire whose execution id is present
was already dispatched) and the source of each record's next transition.

Transitions (anything else is ignored, so late or repeated results change nothing):

    pending ──running──► running ──completed|failed|cancelled──► (finished)
       └──────────completed|failed|cancelled────────────────────► (finished)

A result that arrives before `running` (out of order) still finishes the execution, and
a `running` that arrives after the finish is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from processor.messages import (
    ExecutionCommand,
    ExecutionRecord,
    ExecutionStatus,
    Fire,
    RunResult,
    RunStatus,
)

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

    def drop_trigger_ids(self, keep: set[str] | None = None) -> None:
        """Forget every trigger (or all but `keep`), e.g. on partition revocation."""
        if keep is None:
            self.executions.clear()
        else:
            for trigger_id in [t for t in self.executions if t not in keep]:
                del self.executions[trigger_id]


@dataclass(frozen=True)
class Dispatch:
    """What a fire leads to: a command for the runtime and the new execution's record."""

    command: ExecutionCommand
    record: ExecutionRecord


def on_fire(state: DispatchState, fire: Fire, now: datetime) -> Dispatch | None:
    """Dispatch a fire, or None when its execution id was dispatched before."""
    if state.get(fire.trigger_id, fire.execution_id) is not None:
        return None
    deadline = now + timedelta(seconds=fire.timeout_seconds)
    command = ExecutionCommand(
        execution_id=fire.execution_id,
        trigger_id=fire.trigger_id,
        trigger_name=fire.trigger_name,
        agent_id=fire.agent_id,
        workspace_id=fire.workspace_id,
        input=fire.input,
        cause=fire.cause,
        issued_at=now,
        deadline=deadline,
    )
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
        deadline=deadline,
    )
    state.put(record)
    return Dispatch(command, record)


class UnknownExecution(LookupError):
    """A result names an execution this dispatcher never issued."""


def on_result(state: DispatchState, result: RunResult, now: datetime) -> ExecutionRecord | None:
    """The execution's next record, or None when the result changes nothing."""
    if result.trigger_id is None:
        raise UnknownExecution("result has no trigger_id")
    current = state.get(result.trigger_id, result.execution_id)
    if current is None:
        raise UnknownExecution(f"no execution {result.execution_id} of trigger {result.trigger_id}")
    if current.status.finished:
        return None
    status = _RESULT_STATUS[result.status]
    if status is current.status:
        return None
    at = result.at or now
    update: dict[str, object] = {"status": status, "updated_at": now}
    if status is ExecutionStatus.RUNNING or current.started_at is None:
        update["started_at"] = at
    if status.finished:
        update["completed_at"] = at
        update["output_data"] = result.output
        update["error_message"] = result.error
    record = current.model_copy(update=update)
    state.put(record)
    return record
