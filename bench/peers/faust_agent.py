"""The framework's ceiling: the passthrough's rule as a Faust agent, nothing of ours.

One record per `await` through Faust's stream, commands sent with Faust's producer:
what any design built on Faust's per-record agents can reach on these topics.
"""

from __future__ import annotations

import os
import tempfile

import faust
from error_rule import ErrorRule

app = faust.App(
    os.environ["BENCH_GROUP"],  # its own topics are named after it
    broker=f"kafka://{os.environ['TRIGGERS_KAFKA_BOOTSTRAP']}",
    web_enabled=False,
    datadir=tempfile.mkdtemp(prefix="faust-agent-"),
    producer_acks=-1,
)
source = app.topic(os.environ["BENCH_EVENTS_TOPIC"], value_serializer="raw", key_serializer="raw")
sink = app.topic(os.environ["BENCH_RUNS_TOPIC"], value_serializer="raw", key_serializer="raw")


@app.agent(source)
async def rule(stream) -> None:  # type: ignore[no-untyped-def]
    errors = ErrorRule()
    async for value in stream:
        command = errors.command_for(value)
        if command is not None:
            await sink.send(key=command[0], value=command[1])


@app.task
async def ready() -> None:
    print("peer ready", flush=True)


if __name__ == "__main__":
    app.main()
