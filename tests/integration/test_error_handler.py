"""The seed's Error Handler on the real broker: 5 errors >= high from system/agents in 5m."""

from __future__ import annotations

import base64
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from processor import topics
from tests.integration.kafka import ROOT, Pipeline, free_port, reading, settle

ERROR_HANDLER = ROOT / "examples" / "error-handler.yaml"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def error(
    event_id: str,
    at: datetime,
    severity: str = "high",
    source: str = "system",
    type_: str = "error.database",
) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": type_,
        "source": source,
        "time": at.isoformat(),
        "data": {"severity": severity},
    }


def start_worker(pipeline: Pipeline, name: str = "worker") -> None:
    pipeline.start("worker", name=name)
    pipeline.wait_ready(name, "[^Worker]: Ready")


def test_fifth_high_error_within_the_window_fires_once_and_noise_is_ignored(
    pipeline: Pipeline,
) -> None:
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    start_worker(pipeline)
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        pipeline.emit(error("low", T0, severity="low"))
        pipeline.emit(error("other-source", T0, source="billing"))
        pipeline.emit(error("other-type", T0, type_="warning.disk"))
        pipeline.emit(error("unknown-rank", T0, severity="spicy"))
        pipeline.emit({"type": "error.database", "source": "system", "id": "no-data"})
        for i in range(4):
            pipeline.emit(
                error(f"e{i}", T0 + timedelta(seconds=10 * i), source=["system", "agents"][i % 2])
            )
        pipeline.emit(
            error("e1", T0 + timedelta(seconds=10), source="agents")
        )  # a duplicate does not count
        assert settle(runs, 4) == []

        probe = orjson.dumps(error("probe", T0, severity="low"))
        explained = pipeline.cli("explain", "-f", "-", stdin=probe)
        assert "condition_failed" in explained.stdout
        assert "FAIL severity >= 'high' (actual: 'low')" in explained.stdout
        assert "window: 4 of 5 in 300s" in explained.stdout
        crossing = orjson.dumps(error("e4", T0 + timedelta(seconds=40), severity="critical"))
        told = pipeline.cli("explain", "-f", "-", stdin=crossing).stdout
        assert "this event: fires: 5 events within 300 s" in told, told
        resent = orjson.dumps(error("e1", T0 + timedelta(seconds=10), source="agents"))
        [again] = orjson.loads(
            pipeline.cli("explain", "-f", "-", "-o", "json", stdin=resent).stdout
        )
        assert again["window"]["outcome"] == "duplicate", again

        pipeline.emit(error("e4", T0 + timedelta(seconds=40), severity="critical"))
        runs(lambda cs: len(cs) >= 1, timeout=60)
        [command] = settle(runs, 3)
    assert command["agent_id"] == "error-analyzer" and command["trigger_name"] == "Error Handler"
    assert command["input"]["include_context"] is True
    window = command["input"]["window"]
    assert window["count"] == 5
    assert {s["id"] for s in window["sample"]} == {"e0", "e1", "e2", "e3", "e4"}
    assert window["window_end"] == (T0 + timedelta(seconds=40)).isoformat()
    assert command["cause"]["event_id"] == "e4"


def test_an_error_the_condition_turns_away_is_passed_over_and_one_it_takes_is_read_in_full(
    pipeline: Pipeline,
) -> None:
    """A low error is turned away on its JSON (the condition reads `data`), as an event no
    pattern matches is: it is not read in full, so a time that is not a time does not
    make it a dead letter. A high one with the same time may fire, and is refused."""
    port = free_port()
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    pipeline.start("worker", name="worker", extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(port)})
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.emit({**error("low", T0, severity="low"), "time": "yesterday"})
    pipeline.emit({**error("high", T0), "time": "yesterday"})
    with reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters:
        letters(lambda found: len(found) >= 1, timeout=60)
        [letter] = settle(letters, 3)
    assert letter["error"].startswith("event field time:")
    assert orjson.loads(base64.b64decode(letter["value"]))["id"] == "high"

    def verdicts() -> dict[str, float]:
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                if sample.name == "triggers_match_verdicts_total":
                    verdict = sample.labels["verdict"]
                    found[verdict] = found.get(verdict, 0.0) + sample.value
        return found

    deadline = time.monotonic() + 30
    while verdicts().get("condition_failed") != 1.0:
        assert time.monotonic() < deadline, verdicts()
        time.sleep(0.5)


def test_errors_spread_wider_than_the_window_never_fire(pipeline: Pipeline) -> None:
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    start_worker(pipeline)
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        for i in range(8):
            pipeline.emit(error(f"s{i}", T0 + timedelta(minutes=6 * i)))
        assert settle(runs, 5) == []


def test_a_worker_killed_mid_window_keeps_its_count(pipeline: Pipeline) -> None:
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    start_worker(pipeline)
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        for i in range(3):
            pipeline.emit(error(f"k{i}", T0 + timedelta(seconds=i)))
        time.sleep(5)  # let the window evaluator count them (and maybe commit, maybe not)
        worker = pipeline.processes[-1]
        pipeline.stop(worker, signal.SIGKILL)
        start_worker(pipeline, name="worker-2")
        pipeline.emit(error("k3", T0 + timedelta(seconds=3)))
        assert settle(runs, 4) == []
        pipeline.emit(error("k4", T0 + timedelta(seconds=4)))
        runs(lambda cs: len(cs) >= 1, timeout=60)
        [command] = settle(runs, 3)
    assert command["input"]["window"]["count"] == 5
    assert command["cause"]["event_id"] == "k4"


def test_an_event_nesting_too_deep_is_a_dead_letter_and_the_worker_goes_on(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """JSON writers stop at 255 levels: an event 300 deep was taken, its fire could not be
    written, and the matcher stopped the worker (again at each restart: the same record
    came back). Now it is a dead letter with the reason, and the events after it fire."""
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    (tmp_path / "any.yaml").write_text(
        "trigger: {id: any-error, name: Any error, type: event, overlap: allow_all,"
        " event: {pattern: 'error.*'}, agent: {id: logger}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "any.yaml"))
    start_worker(pipeline)
    deep = "[" * 300 + "]" * 300
    head = orjson.dumps(error("deep", T0))[:-2]  # ...,"data":{"severity":"high"}}
    pipeline.produce(topics.EVENTS, head + b',"trace":' + deep.encode() + b"}}")
    with reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters:
        [letter] = letters(lambda found: len(found) >= 1, timeout=60)
    assert "event nests deeper than 128 levels" in letter["error"], letter
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        for i in range(5):
            pipeline.emit(error(f"e{i}", T0 + timedelta(seconds=i)))
        commands = runs(lambda cs: len(cs) >= 6, timeout=60)
    assert sorted(c["trigger_name"] for c in commands) == ["Any error"] * 5 + ["Error Handler"]
    assert "deep" not in {c["cause"].get("event_id") for c in commands}
