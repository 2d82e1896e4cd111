from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processor.definitions.loader import parse_document
from processor.dispatch.state import Failures, run_of_failures
from processor.executions.status import TriggerState, trigger_status
from processor.matching.fires import key_value
from processor.messages import Cause, CauseKind, ExecutionRecord, ExecutionStatus

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def document(**extra: object):  # type: ignore[no-untyped-def]
    raw = {
        "id": "t",
        "name": "T",
        "type": "event",
        "event": {"pattern": "x"},
        "agent": {"id": "a"},
        **extra,
    }
    return parse_document(raw, "t.yaml")


def record(name: str, status: ExecutionStatus, at: datetime) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=name,
        trigger_id="t",
        agent_id="a",
        workspace_id="default",
        status=status,
        cause=Cause(type=CauseKind.MANUAL),
        triggered_at=at,
        updated_at=at,
        completed_at=at if status.finished else None,
    )


def test_a_tripped_breaker_pauses_the_trigger_until_its_cooldown_ends() -> None:
    failures = Failures()
    history = [record(f"f{n}", ExecutionStatus.FAILED, NOW) for n in range(3)]
    for r in history:
        failures.count(r)
    doc = document(circuit_breaker={"failures": 3, "cooldown": "10m"})
    paused = trigger_status(doc, failures, history, NOW + timedelta(minutes=1))
    assert paused.state is TriggerState.PAUSED and paused.paused_until == NOW + timedelta(
        minutes=10
    )
    assert paused.reason is not None and "3 consecutive" in paused.reason
    later = trigger_status(doc, failures, history, NOW + timedelta(minutes=10))
    assert later.state is TriggerState.ENABLED and "half-open" in (later.reason or "")
    assert trigger_status(document(), failures, history, NOW).state is TriggerState.ENABLED


def test_a_run_of_failures_is_counted_in_finishing_order_whatever_order_it_is_read_in() -> None:
    minute = timedelta(minutes=1)
    finished = [
        record("f1", ExecutionStatus.FAILED, NOW),
        record("f2", ExecutionStatus.FAILED, NOW + minute),
        record("ok", ExecutionStatus.COMPLETED, NOW + 2 * minute),
        record("f3", ExecutionStatus.TIMED_OUT, NOW + 3 * minute),
        record("skip", ExecutionStatus.SKIPPED, NOW + 4 * minute),
        record("f4", ExecutionStatus.FAILED, NOW + 5 * minute),
    ]
    # as a reader of trigger-executions meets them: one partition after another
    for order in (finished, finished[::-1], finished[3:] + finished[:3]):
        run = run_of_failures(order)
        assert (run.consecutive, run.last_at) == (2, NOW + 5 * minute), [
            r.execution_id for r in order
        ]
    assert run_of_failures(finished[:3]).consecutive == 0 and run_of_failures([]).last_at is None


def test_activity_counts_and_disabled_and_next_schedule_fire() -> None:
    history = [
        record("new", ExecutionStatus.SKIPPED, NOW - timedelta(minutes=1)),
        record("mid", ExecutionStatus.COMPLETED, NOW - timedelta(minutes=30)),
        record("old", ExecutionStatus.COMPLETED, NOW - timedelta(hours=2)),
    ]
    status = trigger_status(document(enabled=False), Failures(), history, NOW)
    assert status.state is TriggerState.DISABLED
    assert (status.fires_last_hour, status.runs_last_hour) == (2, 1)
    assert status.last_fire_at == NOW - timedelta(minutes=1)
    assert status.last_status is ExecutionStatus.SKIPPED
    schedule = parse_document(
        {
            "id": "s",
            "name": "S",
            "type": "schedule",
            "schedule": {"cron": "0 * * * *"},
            "agent": {"id": "a"},
        },
        "s.yaml",
    )
    assert trigger_status(schedule, Failures(), [], NOW).next_fire_at == NOW + timedelta(hours=1)
    # 09:00 daily from 10:00 on the calendar's last day: none to show (OverflowError)
    far = parse_document(
        {
            "id": "f",
            "name": "F",
            "type": "schedule",
            "schedule": {"cron": "0 9 * * *", "start_date": "9999-12-31T10:00:00Z"},
            "agent": {"id": "a"},
        },
        "f.yaml",
    )
    assert trigger_status(far, Failures(), [], NOW).next_fire_at is None


def test_a_key_is_the_first_value_found_as_text() -> None:
    path = "$.event.data.customer"
    assert key_value(path, {"event": {"data": {"customer": "acme"}}}) == "acme"
    assert key_value(path, {"event": {"data": {"customer": {"id": 7}}}}) == '{"id":7}'
    assert key_value(path, {}) == ""
    assert key_value(None, {"x": 1}) is None
