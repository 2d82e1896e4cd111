"""The registry read from `trigger-definitions`: invalid records are logged once the
first read is done, and only those still there."""

from __future__ import annotations

import orjson
import pytest

from processor.definitions.registry import Registry

GOOD = orjson.dumps(
    {"name": "ok", "type": "event", "event": {"pattern": "a.*"}, "agent": {"id": "a"}}
)
BAD = orjson.dumps(
    {"name": "bad", "type": "schedule", "schedule": {"cron": "0 0 30 2 *"}, "agent": {"id": "a"}}
)


def test_an_invalid_definition_deleted_later_in_the_topic_is_not_logged_at_each_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    registry.apply(b"gone", BAD)  # deleted since: its tombstone follows
    registry.apply(b"fixed", BAD)  # replaced since by a valid one
    registry.apply(b"still", BAD)
    registry.apply(b"gone", None)
    registry.apply(b"fixed", GOOD)
    assert "ignoring invalid definition" not in caplog.text  # not during the first read
    registry.loaded()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("ignoring invalid definition still:")
    assert "names no date that exists" in errors[0]
    assert registry.get("fixed") is not None and registry.get("still") is None
    registry.loaded()  # once only
    registry.apply(b"later", BAD)  # after the first read: at once
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and errors[1].startswith("ignoring invalid definition later:")
