"""Webhook gateway: requests/s and latency for HMAC-signed webhooks that are answered only
after Kafka acknowledged them, against a bare aiohttp endpoint that only reads the body,
in the same run, with the same load generator (aiohttp client, 10 s each), for two loads
(small bodies at 32 connections; 1 KB bodies at 64) and for one and two gateway
processes (`triggers serve --workers 2`). Every 202 must be on `webhooks`: the run
counts the topic's records afterwards.

    .venv/bin/python bench/gateway.py        # BENCH_PROFILE=out.txt: py-spy, 1 process
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processor.config import Settings  # noqa: E402
from processor.kafka.admin import create_topics  # noqa: E402

BOOTSTRAP = os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
TRIGGERS = str(ROOT / ".venv" / "bin" / "triggers")
SECRET = "bench-secret"
SECONDS = 10.0
LOADS = [(32, 0), (64, 1024)]
"""(connections, body bytes: 0 is a small JSON body of ~60 bytes)."""
PROCESSES = [1, 2]
TRIGGER = """
trigger:
  name: Bench hook
  type: webhook
  overlap: allow_all
  webhook:
    endpoint: /hooks/bench
    authentication: {type: hmac, header: X-Signature, secret: "${BENCH_SECRET}"}
  agent: {id: a}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(url: str, signed: bool, connections: int, body_bytes: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.monotonic() + SECONDS
    padding = "x" * max(0, body_bytes - 70)

    async def one_connection(session: aiohttp.ClientSession, worker: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            text = f"hello {worker}-{n}"
            body = orjson.dumps({"text": text, "id": uuid.uuid4().hex, "pad": padding})
            headers = {"Content-Type": "application/json"}
            if signed:
                headers["X-Signature"] = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        await asyncio.gather(*(one_connection(session, w) for w in range(connections)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "statuses": statuses,
        "body_bytes": len(orjson.dumps({"text": "hello 0-1", "id": "0" * 32, "pad": padding})),
    }


async def bare_server(port: int) -> web.AppRunner:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hooks/bench", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def stored(topic: str) -> int:
    """Records on `topic` (the sum of its partitions' end offsets)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def start_gateway(env: dict[str, str], workdir: Path, processes: int) -> subprocess.Popen[bytes]:
    import httpx

    port = int(env["BENCH_PORT"])
    log = open(workdir / f"serve-{processes}.log", "wb")  # noqa: SIM115 - closed with it
    command = [TRIGGERS, "serve", "--port", str(port), "--workers", str(processes)]
    serve = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                time.sleep(2 if processes > 1 else 0)  # the other processes' views
                return serve
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError((workdir / f"serve-{processes}.log").read_text()[-3000:])
        time.sleep(0.2)


def main() -> int:
    prefix = f"g{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=prefix)
    create_topics(settings)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    env = {
        **os.environ,
        "TRIGGERS_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "TRIGGERS_TOPIC_PREFIX": prefix,
        "TRIGGERS_APP_ID": prefix.rstrip("."),
        "TRIGGERS_LOG_LEVEL": "WARNING",
        "BENCH_SECRET": SECRET,
        "BENCH_PORT": str(free_port()),
    }
    (workdir / "t.yaml").write_text(TRIGGER)
    subprocess.run([TRIGGERS, "apply", "-f", str(workdir / "t.yaml")], env=env, check=True)
    url = f"http://127.0.0.1:{env['BENCH_PORT']}/hooks/bench"
    results: dict[str, Any] = {"seconds": SECONDS, "loads": []}
    accepted = 0

    async def bare(connections: int, body_bytes: int) -> dict[str, Any]:
        bare_port = free_port()
        runner = await bare_server(bare_port)
        try:
            url = f"http://127.0.0.1:{bare_port}/hooks/bench"
            return await load(url, False, connections, body_bytes)
        finally:
            await runner.cleanup()

    for connections, body_bytes in LOADS:
        row: dict[str, Any] = {"connections": connections}
        row["bare_aiohttp"] = asyncio.run(bare(connections, body_bytes))
        row["body_bytes"] = row["bare_aiohttp"].pop("body_bytes")
        base = row["bare_aiohttp"]["requests_per_s"]
        for processes in PROCESSES:
            serve = start_gateway(env, workdir, processes)
            profiler = None
            if os.environ.get("BENCH_PROFILE") and processes == 1 and connections == 32:
                profiler = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(serve.pid), "--duration",
                     str(int(SECONDS) - 2), "--format", "raw", "--output",
                     os.environ["BENCH_PROFILE"], "--nonblocking", "--gil"],
                )  # fmt: skip
            try:
                found = asyncio.run(load(url, True, connections, body_bytes))
            finally:
                serve.terminate()
                serve.wait(30)
            if profiler is not None:
                profiler.wait(60)
            found.pop("body_bytes")
            accepted += found["statuses"].get(202, 0)
            row[f"gateway_{processes}"] = found
            row[f"gateway_{processes}_vs_bare"] = round(found["requests_per_s"] / base, 3)
        results["loads"].append(row)
    topic = f"{prefix}webhooks"
    results["answered_202"], results["stored"] = accepted, stored(topic)
    print(json.dumps(results, indent=2))
    (ROOT / "bench" / "results" / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    if results["stored"] < accepted:
        print(f"FAIL: {accepted} calls answered 202, {results['stored']} on {topic}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
