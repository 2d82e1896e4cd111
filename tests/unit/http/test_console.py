from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request

from processor.http.ui.pages import error_page, fires_chart, timeline

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


def test_fires_chart_counts_per_hour_by_outcome_over_the_last_day() -> None:
    history = [
        {"triggered_at": "2026-11-25T10:05:00+00:00", "status": "completed"},
        {"triggered_at": "2026-11-25T10:10:00+00:00", "status": "running"},
        {"triggered_at": "2026-11-25T09:59:00+00:00", "status": "failed"},
        {"triggered_at": "2026-11-24T09:00:00+00:00", "status": "failed"},  # too old
    ]
    chart = fires_chart(history, NOW)
    assert len(chart["x"]) == 24
    assert chart["x"][-1] == int(datetime(2026, 11, 25, 10, tzinfo=UTC).timestamp())
    assert chart["series"]["completed"][-1] == 1 and chart["series"]["other"][-1] == 1
    assert chart["series"]["failed"][-2] == 1 and sum(chart["series"]["failed"]) == 1


def test_timeline_lists_each_state_the_record_went_through() -> None:
    record = {
        "status": "failed",
        "cause": {"type": "event", "event_id": "e1", "event": {"big": True}},
        "triggered_at": "2026-11-25T10:00:00+00:00",
        "issued_at": "2026-11-25T10:00:01+00:00",
        "started_at": "2026-11-25T10:00:02+00:00",
        "completed_at": "2026-11-25T10:00:03+00:00",
        "updated_at": "2026-11-25T10:00:03+00:00",
        "error_message": "boom",
    }
    steps = timeline(record)
    assert [state for _, state, _ in steps] == ["fired", "pending", "running", "failed"]
    assert steps[0][2] == "type: event, event_id: e1" and steps[-1][2] == "boom"
    waiting = {**record, "status": "pending", "issued_at": None, "started_at": None}
    assert [s for _, s, _ in timeline(waiting)] == ["fired", "waiting"]


def test_timeline_shows_a_retry_waiting_for_its_backoff() -> None:
    record = {
        "status": "pending",
        "cause": {"type": "manual"},
        "triggered_at": "2026-11-25T10:00:00+00:00",
        "issued_at": "2026-11-25T10:00:01+00:00",
        "started_at": "2026-11-25T10:00:02+00:00",
        "updated_at": "2026-11-25T10:00:03+00:00",
        "retry_at": "2026-11-25T10:00:13+00:00",
        "attempt": 2,
        "reason": "attempt 1 failed: boom; attempt 2 of 3 at 2026-11-25T10:00:13+00:00",
    }
    steps = timeline(record)
    assert [state for _, state, _ in steps] == ["fired", "pending", "running", "retrying"]
    assert "attempt 2 of 3" in steps[-1][2]


def test_the_explain_report_shows_a_late_event_and_one_a_worker_would_dead_letter() -> None:
    from processor.http.ui.pages import templates

    item = {
        "trigger_id": "t1",
        "name": "Error Handler",
        "verdict": "windowed",
        "pattern": "error.*",
        "source_ok": True,
        "tests": [
            {
                "field": "data.severity",
                "test": ">= 'high'",
                "actual": None,
                "missing": True,
                "matched": False,
            },
        ],
        "window": {
            "mended": "the group's window holds 1 entries stamped more than 300 s ahead",
            "count": 1,
            "count_threshold": 5,
            "window_seconds": 300,
            "group": "",
            "late": True,
            "late_reason": "this event is 360 s older than the newest event of its group",
        },
        "sequence": {"kind": "followed_by", "reason": "a B: pairs with the A 'c1': fires"},
        "dead_letter": "event time 2030-01-01T00:00:00+00:00 is 97,000,000 s ahead",
    }
    shown = templates.get_template("_explain_report.html").render(report=[item], error=None)
    assert "late: this event is 360 s older" in shown
    assert "(no such field)" in shown and "actual:" not in shown
    assert "followed_by: a B: pairs with the A &#39;c1&#39;: fires" in shown
    assert "mended: the group&#39;s window holds 1 entries" in shown
    assert "dead letter: event time 2030-01-01" in shown
    calm = {**item, "window": {**item["window"], "late": False}, "dead_letter": None}
    shown = templates.get_template("_explain_report.html").render(report=[calm], error=None)
    assert "late:" not in shown and "dead letter" not in shown


def _request(path: str) -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    )


def test_a_console_error_is_a_page_saying_what_went_wrong_in_the_apis_words() -> None:
    from fastapi import HTTPException

    page = error_page(_request("/ui/triggers/gone"), HTTPException(404, "no trigger gone here"))
    assert page.status_code == 404
    shown = bytes(page.body).decode()
    assert "<h1>Not found</h1>" in shown and "no trigger gone here" in shown
    assert 'href="/ui/"' in shown  # a way back

    refused = HTTPException(409, "trigger 'T' is disabled; enable it first")
    assert error_page(_request("/ui/triggers/t/run"), refused).status_code == 409

    api_said = [{"type": "enum", "loc": ["query", "status"], "msg": "Input should be 'failed'"}]
    shown = bytes(
        error_page(_request("/ui/executions"), HTTPException(422, api_said)).body
    ).decode()
    assert "status: Input should be &#39;failed&#39;" in shown and "[{" not in shown
