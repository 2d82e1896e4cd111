"""The framework's ceiling: the passthrough's rule as a Faust agent, nothing of ours.

One record per `await` through Faust's stream, commands sent with Faust's producer:
what any design built on Faust's per-record agents can reach on these topics.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid

import faust
import orjson

RANKS = {"high": 7, "critical": 8, "alert": 9, "emergency": 10}

app = faust.App(
    f"faust-agent-{uuid.uuid4().hex[:8]}",
    broker=f"kafka://{os.environ['TRIGGERS_KAFKA_BOOTSTRAP']}",
    web_enabled=False,
    datadir=tempfile.mkdtemp(prefix="faust-agent-"),
    producer_acks=-1,
)
source = app.topic(os.environ["BENCH_EVENTS_TOPIC"], value_serializer="raw", key_serializer="raw")
sink = app.topic(os.environ["BENCH_RUNS_TOPIC"], value_serializer="raw", key_serializer="raw")
window: list[float] = []


@app.agent(source)
async def rule(stream) -> None:  # type: ignore[no-untyped-def]
    global window
    async for value in stream:
        event = orjson.loads(value or b"{}")
        if not event.get("type", "").startswith("error."):
            continue
        if event.get("source") not in ("system", "agents"):
            continue
        if (event.get("data") or {}).get("severity") not in RANKS:
            continue
        now = time.time()
        window = [t for t in window if now - t < 300] + [now]
        if len(window) >= 5:
            window = []
            command = {"execution_id": uuid.uuid4().hex, "cause": {"event_id": event["id"]}}
            await sink.send(key=command["execution_id"].encode(), value=orjson.dumps(command))


@app.task
async def ready() -> None:
    print("peer ready", flush=True)


if __name__ == "__main__":
    app.main()
