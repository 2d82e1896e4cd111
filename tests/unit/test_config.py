from __future__ import annotations

import pytest

from processor.config import Settings
from processor.topics import ALL_TOPICS, TRIGGER_DEFINITIONS, topic_name


def test_defaults() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap == "localhost:9092"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)


def test_environment_variables_use_one_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGERS_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("TRIGGERS_API_KEYS", '{"k-alpha": "alpha"}')
    monkeypatch.setenv("TRIGGERS_TOPIC_PREFIX", "staging.")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "ignored:1")
    settings = Settings()
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.api_keys == {"k-alpha": "alpha"}
    assert topic_name(TRIGGER_DEFINITIONS, settings) == "staging.trigger-definitions"


def test_topic_names_are_unique_and_include_the_design_contract() -> None:
    names = [spec.base_name for spec in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert {
        "trigger-definitions",
        "events",
        "webhooks",
        "cron-ticks",
        "trigger-fires",
        "agent-runs",
        "agent-run-control",
        "agent-run-results",
        "trigger-executions",
        "trigger-dead-letters",
    } <= set(names)


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"TRIGGERS_{n.upper()}" not in readme]
    assert missing == []


def test_replicas_keep_one_broker_spare_for_writes() -> None:
    from processor.config import replication

    assert replication(Settings()) == (-1, {})  # the broker's default
    assert replication(Settings(topic_replication_factor=1)) == (1, {})
    assert replication(Settings(topic_replication_factor=3)) == (3, {"min.insync.replicas": "2"})


def test_json_log_lines_carry_the_component_and_the_ids_they_are_about() -> None:
    import logging

    import orjson

    from processor.logs import JsonLines, about

    record = logging.LogRecord("processor.x", logging.WARNING, "f.py", 1, "run %s", ("e1",), None)
    for key, value in about("t1", "e1").items():
        setattr(record, key, value)
    line = orjson.loads(JsonLines("runner").format(record))
    assert line["message"] == "run e1" and line["component"] == "runner"
    assert (line["trigger_id"], line["execution_id"], line["level"]) == ("t1", "e1", "WARNING")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, "f.py", 1, "bad", (), sys.exc_info())
    assert "ValueError: boom" in orjson.loads(JsonLines("worker").format(failed))["exception"]


def test_per_trigger_series_are_bounded() -> None:
    from processor.metrics import OTHER_TRIGGERS, TriggerLabels

    labels = TriggerLabels(limit=2, named=frozenset({"vip"}))
    assert [labels(t) for t in ("a", "b", "c", "a", "vip", "d")] == [
        "a",
        "b",
        OTHER_TRIGGERS,
        "a",
        "vip",
        OTHER_TRIGGERS,
    ]
    many = TriggerLabels(limit=100)
    assert len({many(f"t{n}") for n in range(100_000)}) == 101  # 100 ids and "_other"


def test_producers_compress_with_lz4_unless_told_otherwise() -> None:
    from processor.config import Compression
    from processor.kafka.clients import producer_config

    assert producer_config(Settings())["compression.type"] == "lz4"
    chosen = Settings(kafka_compression=Compression.ZSTD)
    assert producer_config(chosen)["compression.type"] == "zstd"


def test_an_unknown_codec_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGERS_KAFKA_COMPRESSION", "brotli")
    with pytest.raises(ValueError, match="lz4"):
        Settings()


def test_consumers_look_again_soon_after_their_fetch_queue_was_full() -> None:
    from processor.kafka.clients import consumer_config

    assert consumer_config(Settings(), "g")["fetch.queue.backoff.ms"] <= 50


def test_a_negative_state_idle_time_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGERS_STATE_IDLE_SECONDS", "-5")
    with pytest.raises(ValueError, match="state_idle_seconds"):
        Settings()
    monkeypatch.setenv("TRIGGERS_STATE_IDLE_SECONDS", "0")
    assert Settings().state_idle_seconds == 0  # 0: kept for ever


def test_the_allowance_for_event_times_ahead_of_the_clock_must_be_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().event_time_max_ahead_seconds == 300
    monkeypatch.setenv("TRIGGERS_EVENT_TIME_MAX_AHEAD_SECONDS", "0")
    with pytest.raises(ValueError, match="event_time_max_ahead_seconds"):
        Settings()
