from __future__ import annotations

from typing import Any

import pytest

from processor.definitions.loader import parse_document
from processor.errors import TriggerDisabled
from processor.matching.fires import manual_fire

REPORT = {
    "name": "Daily Sales Report",
    "type": "schedule",
    "schedule": {"cron": "0 9 * * *", "timezone": "America/New_York"},
    "agent": {"id": "report-generator", "input": {"report_type": "daily_sales", "day": "today"}},
}


def test_a_manual_run_merges_its_input_over_the_triggers_and_says_who_asked() -> None:
    document = parse_document(REPORT, "test").resolved("default")
    fire = manual_fire(document, {"day": "2026-11-28"}, "cli:ana")
    assert fire.input == {"report_type": "daily_sales", "day": "2026-11-28"}
    assert fire.cause.type.value == "manual"
    assert fire.cause.model_extra is not None
    assert fire.cause.model_extra["requested_by"] == "cli:ana"


def test_the_same_idempotency_key_gives_the_same_execution_and_none_a_new_one() -> None:
    document = parse_document(REPORT, "test").resolved("default")
    assert (
        manual_fire(document, {}, "api:x", "k1").execution_id
        == manual_fire(document, {}, "api:y", "k1").execution_id
    )
    assert (
        manual_fire(document, {}, "a", "k1").execution_id
        != manual_fire(document, {}, "a", "k2").execution_id
    )
    assert (
        manual_fire(document, {}, "a").execution_id != manual_fire(document, {}, "a").execution_id
    )


def test_a_disabled_trigger_refuses_a_manual_run_and_says_how_to_enable_it() -> None:
    document = parse_document({**REPORT, "enabled": False}, "test").resolved("default")
    with pytest.raises(TriggerDisabled, match="triggers enable"):
        manual_fire(document, {}, "cli:ana")


def _record(execution_id: str, status: str, at: str, input_data: dict | None = None) -> Any:
    from processor.messages import ExecutionRecord

    return ExecutionRecord.model_validate(
        {
            "execution_id": execution_id,
            "trigger_id": "t",
            "trigger_name": "T",
            "agent_id": "a",
            "workspace_id": "default",
            "status": status,
            "cause": {"type": "manual"},
            "input_data": input_data or {},
            "triggered_at": at,
            "updated_at": at,
        }
    )


def test_a_rerun_has_the_originals_input_and_names_it_and_retries_are_one_run() -> None:
    from processor.matching.fires import rerun_fire

    document = parse_document(REPORT, "test").resolved("default")
    original = _record("e1", "failed", "2026-12-01T10:00:00Z", {"day": "2026-11-01", "x": 1})
    fire = rerun_fire(document, original, "cli:ana", "k1")
    assert fire.input == {"report_type": "daily_sales", "day": "2026-11-01", "x": 1}
    assert fire.cause.type.value == "rerun"
    assert fire.cause.model_extra is not None and fire.cause.model_extra["execution_id"] == "e1"
    assert fire.execution_id == rerun_fire(document, original, "api:x", "k1").execution_id
    assert fire.execution_id != rerun_fire(document, original, "api:x", "k2").execution_id
    assert (
        rerun_fire(document, original, "a").execution_id
        != rerun_fire(document, original, "a").execution_id
    )
    disabled = document.model_copy(update={"enabled": False})
    with pytest.raises(TriggerDisabled, match="triggers enable"):
        rerun_fire(disabled, original, "cli:ana")


def test_a_bulk_rerun_takes_that_status_in_the_range_oldest_first() -> None:
    from datetime import UTC, datetime

    from processor.matching.fires import rerun_candidates
    from processor.messages import ExecutionStatus

    records = [
        _record("late", "failed", "2026-12-01T12:00:00Z"),
        _record("early", "failed", "2026-12-01T09:00:00Z"),
        _record("ok", "completed", "2026-12-01T10:00:00Z"),
        _record("slow", "timed_out", "2026-12-01T10:00:00Z"),
        _record("out", "failed", "2026-12-01T13:00:00Z"),
    ]
    chosen = rerun_candidates(
        records,
        ExecutionStatus.FAILED,
        datetime(2026, 12, 1, 9, tzinfo=UTC),
        datetime(2026, 12, 1, 13, tzinfo=UTC),
    )
    assert [r.execution_id for r in chosen] == ["early", "late"]
