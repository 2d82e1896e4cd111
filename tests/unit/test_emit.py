"""Events as the client and `triggers emit` make them: bad ones refused before sending."""

from __future__ import annotations

import orjson
import pytest

from processor.client import TriggersClient


def test_an_event_is_cloudevents_json_with_its_type_source_and_data() -> None:
    event = orjson.loads(TriggersClient.event("order.created", "shop", {"n": 1}, id="o1"))
    assert {k: event[k] for k in ("specversion", "id", "type", "source", "data")} == {
        "specversion": "1.0", "id": "o1", "type": "order.created", "source": "shop", "data": {"n": 1}
    }  # fmt: skip


@pytest.mark.parametrize(
    ("type_", "source", "named"), [("", "shop", "type_"), ("x.y", "", "source")]
)
def test_an_event_without_a_type_or_source_is_refused_before_it_is_sent(
    type_: str, source: str, named: str
) -> None:
    with pytest.raises(ValueError, match=f"event's {named} must be a non-empty string"):
        TriggersClient.event(type_, source)


def test_the_cli_refuses_an_empty_source_before_it_sends() -> None:
    from typer.testing import CliRunner

    from processor.cli.main import app

    result = CliRunner().invoke(app, ["emit", "order.created", "--source", ""])
    assert result.exit_code == 1
    assert "--source is empty" in result.output


def test_an_event_nesting_too_deep_is_refused_before_it_is_sent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from processor.cli.main import app

    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError, match="nests deeper than 128 levels"):
        TriggersClient.event("x.y", "s", {"deep": deep})
    (tmp_path / "e.json").write_bytes(
        b'{"type": "x.y", "source": "s", "data": ' + b"[" * 300 + b"]" * 300 + b"}"
    )
    result = CliRunner().invoke(app, ["emit", "-f", str(tmp_path / "e.json")])
    assert result.exit_code == 1 and "nests deeper than 128 levels" in result.output
    assert "Traceback" not in result.output


def test_a_client_reads_the_bootstrap_and_prefix_the_components_read_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIGGERS_KAFKA_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("TRIGGERS_TOPIC_PREFIX", "staging.")
    from_env = TriggersClient().settings
    assert (from_env.kafka_bootstrap, from_env.topic_prefix) == ("kafka-1:9092", "staging.")
    given = TriggersClient("kafka-2:9092", topic_prefix="").settings
    assert (given.kafka_bootstrap, given.topic_prefix) == ("kafka-2:9092", "")
