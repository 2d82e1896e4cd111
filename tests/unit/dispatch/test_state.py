from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processor.dispatch.state import DispatchState, UnknownExecution, on_fire, on_result
from processor.messages import Cause, CauseKind, ExecutionStatus, Fire, RunResult, RunStatus

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def fire(execution_id: str = "x-1") -> Fire:
    return Fire(
        execution_id=execution_id,
        trigger_id="t-1",
        trigger_name="T",
        agent_id="a",
        workspace_id="default",
        timeout_seconds=60,
        cause=Cause(type=CauseKind.MANUAL),
        input={"k": 1},
        fired_at=NOW,
    )


def result(status: RunStatus, execution_id: str = "x-1", **fields: object) -> RunResult:
    return RunResult(execution_id=execution_id, trigger_id="t-1", status=status, **fields)


def test_a_fire_is_dispatched_once() -> None:
    state = DispatchState()
    dispatch = on_fire(state, fire(), NOW)
    assert dispatch is not None
    assert dispatch.command.deadline == NOW + timedelta(seconds=60)
    assert dispatch.record.status is ExecutionStatus.PENDING
    assert on_fire(state, fire(), NOW) is None
    assert on_fire(state, fire("x-2"), NOW) is not None


def test_pending_running_completed() -> None:
    state = DispatchState()
    on_fire(state, fire(), NOW)
    running = on_result(state, result(RunStatus.RUNNING, at=NOW), NOW)
    assert (
        running is not None
        and running.status is ExecutionStatus.RUNNING
        and running.started_at == NOW
    )
    later = NOW + timedelta(seconds=5)
    done = on_result(state, result(RunStatus.COMPLETED, output={"ok": 1}, at=later), later)
    assert done is not None and done.status is ExecutionStatus.COMPLETED
    assert done.completed_at == later and done.started_at == NOW and done.output_data == {"ok": 1}


def test_completed_before_running_finishes_and_late_running_is_ignored() -> None:
    state = DispatchState()
    on_fire(state, fire(), NOW)
    done = on_result(state, result(RunStatus.FAILED, error="boom", at=NOW), NOW)
    assert (
        done is not None and done.status is ExecutionStatus.FAILED and done.error_message == "boom"
    )
    assert done.started_at == NOW
    assert on_result(state, result(RunStatus.RUNNING), NOW) is None
    assert on_result(state, result(RunStatus.COMPLETED), NOW) is None
    assert state.get("t-1", "x-1").status is ExecutionStatus.FAILED


def test_repeated_running_changes_nothing() -> None:
    state = DispatchState()
    on_fire(state, fire(), NOW)
    assert on_result(state, result(RunStatus.RUNNING), NOW) is not None
    assert on_result(state, result(RunStatus.RUNNING), NOW) is None


def test_results_for_unknown_executions_are_refused() -> None:
    state = DispatchState()
    with pytest.raises(UnknownExecution):
        on_result(state, result(RunStatus.COMPLETED, execution_id="nope"), NOW)
    with pytest.raises(UnknownExecution):
        on_result(state, RunResult(execution_id="x", status=RunStatus.COMPLETED), NOW)
