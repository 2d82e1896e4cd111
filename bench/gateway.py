"""Webhook gateway: requests/s and latency for HMAC-signed webhooks that are answered only
after Kafka acknowledged them, against a bare aiohttp endpoint that does nothing, in the
same run, with the same load generator (aiohttp client, 32 connections, 10 s each).

    .venv/bin/python bench/gateway.py
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
CONNECTIONS, SECONDS = 32, 10.0
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


async def load(url: str, signed: bool) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.monotonic() + SECONDS

    async def one_connection(session: aiohttp.ClientSession, worker: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            body = orjson.dumps({"text": f"hello {worker}-{n}", "id": uuid.uuid4().hex})
            headers = {"Content-Type": "application/json"}
            if signed:
                headers["X-Signature"] = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        await asyncio.gather(*(one_connection(session, w) for w in range(CONNECTIONS)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "statuses": statuses,
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


def main() -> int:
    prefix = f"g{uuid.uuid4().hex[:8]}."
    create_topics(Settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=prefix))
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    env = {
        **os.environ,
        "TRIGGERS_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "TRIGGERS_TOPIC_PREFIX": prefix,
        "TRIGGERS_APP_ID": prefix.rstrip("."),
        "TRIGGERS_LOG_LEVEL": "WARNING",
        "BENCH_SECRET": SECRET,
    }
    (workdir / "t.yaml").write_text(TRIGGER)
    subprocess.run([TRIGGERS, "apply", "-f", str(workdir / "t.yaml")], env=env, check=True)
    port = free_port()
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    serve = subprocess.Popen(
        [TRIGGERS, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((workdir / "serve.log").read_text()[-3000:])
            time.sleep(0.2)

        async def run() -> dict[str, Any]:
            bare_port = free_port()
            runner = await bare_server(bare_port)
            try:
                bare = await load(f"http://127.0.0.1:{bare_port}/hooks/bench", signed=False)
            finally:
                await runner.cleanup()
            gateway = await load(f"http://127.0.0.1:{port}/hooks/bench", signed=True)
            return {"bare_aiohttp": bare, "gateway": gateway}

        results: dict[str, Any] = asyncio.run(run())
    finally:
        serve.terminate()
        serve.wait(30)
    results["gateway_vs_bare"] = round(
        results["gateway"]["requests_per_s"] / results["bare_aiohttp"]["requests_per_s"], 3
    )
    results["connections"], results["seconds"] = CONNECTIONS, SECONDS
    print(json.dumps(results, indent=2))
    (ROOT / "bench" / "results" / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
