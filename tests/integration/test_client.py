"""The Python client as an application and as an agent runtime, on the real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from processor.client import TriggersClient
from processor.errors import KafkaUnavailable
from tests.integration.kafka import Pipeline, incompressible


@pytest.mark.timeout(120)
def test_an_application_and_a_runtime_written_with_the_client(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(
        "trigger: {id: greet, name: Greet, type: event, overlap: allow_all,"
        " event: {pattern: user.signed_up}, agent: {id: greeter}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    client = TriggersClient(pipeline.bootstrap, topic_prefix=pipeline.prefix)
    client.emit("user.signed_up", source="web", data={"name": "Ann"}, id="u1")
    asyncio.run(client.emit_async("user.signed_up", source="web", data={"name": "Bob"}, id="u2"))

    runtime = client.agent_runs(group_id=f"{pipeline.prefix}greeter")
    seen = []
    for command in runtime:
        client.report(
            command,
            "completed",
            output={"greeting": f"hi {command.input['event']['data']['name']}"},
        )
        seen.append(command.input["event"]["id"])
        if len(seen) == 2:
            break
    assert sorted(seen) == ["u1", "u2"]

    outputs = {}
    for record in client.executions("greet"):
        if record.status.value == "completed":
            outputs[record.cause.model_extra["event_id"]] = record.output_data
        if len(outputs) == 2:
            break
    assert outputs == {"u1": {"greeting": "hi Ann"}, "u2": {"greeting": "hi Bob"}}

    # A result the broker refuses (over agent-run-results' 1 MiB) raises; it was lost
    # without a word, and its execution waited for its timeout.
    client.emit("user.signed_up", source="web", data={"name": "Cy"}, id="u3")
    command = next(runtime)
    noise = incompressible(1_125_000)
    with pytest.raises(KafkaUnavailable, match=r"bytes\) was not acknowledged: .*too large"):
        client.report(command, "completed", output={"report": noise})
