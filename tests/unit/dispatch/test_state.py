from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processor.definitions.model import OverlapPolicy
from processor.dispatch.state import (
    BUFFER_LIMIT,
    DEDUPE_HORIZON,
    DispatchState,
    UnknownExecution,
    expire,
    on_fire,
    on_result,
)
from processor.messages import Cause, CauseKind, ExecutionStatus, Fire, RunResult, RunStatus

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def fire(
    execution_id: str = "x-1", overlap: OverlapPolicy = OverlapPolicy.SKIP, max_concurrent: int = 1
) -> Fire:
    return Fire(
        execution_id=execution_id,
        trigger_id="t-1",
        trigger_name="T",
        agent_id="a",
        workspace_id="default",
        timeout_seconds=60,
        max_concurrent=max_concurrent,
        overlap=overlap,
        cause=Cause(type=CauseKind.MANUAL),
        input={"k": 1},
        fired_at=NOW,
    )


def result(status: RunStatus, execution_id: str = "x-1", **fields: object) -> RunResult:
    return RunResult(execution_id=execution_id, trigger_id="t-1", status=status, **fields)


def statuses(state: DispatchState) -> dict[str, str]:
    return {r.execution_id: r.status.value for r in state.executions["t-1"].values()}


def test_a_fire_is_dispatched_once() -> None:
    state = DispatchState()
    effects = on_fire(state, fire(), NOW)
    assert effects is not None
    [command] = effects.commands
    assert command.deadline == NOW + timedelta(seconds=60)
    [record] = effects.records
    assert record.status is ExecutionStatus.PENDING and record.issued_at == NOW
    assert on_fire(state, fire(), NOW) is None


def test_pending_running_completed() -> None:
    state = DispatchState()
    on_fire(state, fire(), NOW)
    [running] = on_result(state, result(RunStatus.RUNNING, at=NOW), NOW).records
    assert running.status is ExecutionStatus.RUNNING and running.started_at == NOW
    later = NOW + timedelta(seconds=5)
    [done] = on_result(
        state, result(RunStatus.COMPLETED, output={"ok": 1}, at=later), later
    ).records
    assert done.status is ExecutionStatus.COMPLETED
    assert done.completed_at == later and done.started_at == NOW and done.output_data == {"ok": 1}


def test_completed_before_running_finishes_and_late_running_is_ignored() -> None:
    state = DispatchState()
    on_fire(state, fire(), NOW)
    [done] = on_result(state, result(RunStatus.FAILED, error="boom", at=NOW), NOW).records
    assert (
        done.status is ExecutionStatus.FAILED
        and done.error_message == "boom"
        and done.started_at == NOW
    )
    assert not on_result(state, result(RunStatus.RUNNING), NOW)
    assert not on_result(state, result(RunStatus.COMPLETED), NOW)


def test_results_for_unknown_executions_are_refused() -> None:
    state = DispatchState()
    with pytest.raises(UnknownExecution):
        on_result(state, result(RunStatus.COMPLETED, execution_id="nope"), NOW)
    with pytest.raises(UnknownExecution):
        on_result(state, RunResult(execution_id="x", status=RunStatus.COMPLETED), NOW)


def test_skip_records_skipped_with_the_reason() -> None:
    state = DispatchState()
    on_fire(state, fire("a"), NOW)
    effects = on_fire(state, fire("b"), NOW)
    assert effects is not None and effects.commands == []
    [skipped] = effects.records
    assert skipped.status is ExecutionStatus.SKIPPED and "overlap: skip" in (skipped.reason or "")


def test_buffer_one_keeps_the_newest_and_runs_it_when_a_slot_frees() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ONE), NOW)
    on_fire(state, fire("b", OverlapPolicy.BUFFER_ONE), NOW)
    on_fire(state, fire("c", OverlapPolicy.BUFFER_ONE), NOW + timedelta(seconds=1))
    assert statuses(state) == {"a": "pending", "b": "skipped", "c": "pending"}
    effects = on_result(state, result(RunStatus.COMPLETED, "a"), NOW)
    assert [c.execution_id for c in effects.commands] == ["c"]


def test_buffer_all_runs_them_in_order_and_is_bounded() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ALL), NOW)
    for i in range(BUFFER_LIMIT + 1):
        on_fire(state, fire(f"w{i:03d}", OverlapPolicy.BUFFER_ALL), NOW + timedelta(milliseconds=i))
    assert statuses(state)[f"w{BUFFER_LIMIT:03d}"] == "skipped"
    assert [
        c.execution_id for c in on_result(state, result(RunStatus.FAILED, "a"), NOW).commands
    ] == ["w000"]
    assert [
        c.execution_id for c in on_result(state, result(RunStatus.COMPLETED, "w000"), NOW).commands
    ] == ["w001"]


def test_cancel_other_cancels_the_oldest_and_starts_the_new_one() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.CANCEL_OTHER), NOW)
    effects = on_fire(state, fire("b", OverlapPolicy.CANCEL_OTHER), NOW)
    assert effects is not None
    assert [c.execution_id for c in effects.controls] == ["a"]
    assert [c.execution_id for c in effects.commands] == ["b"]
    assert statuses(state) == {"a": "cancelled", "b": "pending"}


def test_allow_all_and_max_concurrent() -> None:
    state = DispatchState()
    for name in "abc":
        on_fire(state, fire(name, OverlapPolicy.ALLOW_ALL), NOW)
    assert statuses(state) == {"a": "pending", "b": "pending", "c": "pending"}
    two = DispatchState()
    for name in "abc":
        on_fire(two, fire(name, max_concurrent=2), NOW)
    assert statuses(two) == {"a": "pending", "b": "pending", "c": "skipped"}


def test_timeout_marks_timed_out_sends_a_cancel_and_frees_the_slot() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ONE), NOW)
    on_fire(state, fire("b", OverlapPolicy.BUFFER_ONE), NOW)
    assert not expire(state, NOW + timedelta(seconds=59))
    effects = expire(state, NOW + timedelta(seconds=60))
    assert [c.execution_id for c in effects.controls] == ["a"]
    assert [c.execution_id for c in effects.commands] == ["b"]
    assert statuses(state)["a"] == "timed_out"
    assert not on_result(state, result(RunStatus.COMPLETED, "a"), NOW)  # too late


def test_finished_executions_are_forgotten_after_the_dedupe_horizon() -> None:
    state = DispatchState()
    on_fire(state, fire("a"), NOW)
    on_result(state, result(RunStatus.COMPLETED, "a"), NOW)
    assert not expire(state, NOW + DEDUPE_HORIZON - timedelta(seconds=1)).forgotten
    assert expire(state, NOW + DEDUPE_HORIZON).forgotten == [("t-1", "a")]
    assert state.get("t-1", "a") is None


def test_cancel_a_buffered_or_unstarted_execution_at_once_and_a_running_one_at_the_runtime() -> (
    None
):
    from processor.dispatch.state import on_cancel

    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ALL), NOW)
    on_fire(state, fire("b", OverlapPolicy.BUFFER_ALL), NOW)
    waiting = on_cancel(state, "t-1", "b", NOW)
    assert waiting.controls == [] and statuses(state)["b"] == "cancelled"
    on_result(state, result(RunStatus.RUNNING, "a"), NOW)
    running = on_cancel(state, "t-1", "a", NOW)
    assert [c.execution_id for c in running.controls] == ["a"] and statuses(state)["a"] == "running"
    on_result(state, result(RunStatus.CANCELLED, "a"), NOW)
    assert statuses(state)["a"] == "cancelled"
    assert not on_cancel(state, "t-1", "a", NOW)
    on_fire(state, fire("c"), NOW)
    unstarted = on_cancel(state, "t-1", "c", NOW)
    assert [c.execution_id for c in unstarted.controls] == ["c"] and statuses(state)[
        "c"
    ] == "cancelled"
    with pytest.raises(UnknownExecution):
        on_cancel(state, "t-1", "nope", NOW)
