from __future__ import annotations

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
