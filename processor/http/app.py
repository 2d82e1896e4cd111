"""The aiohttp application. For now: `/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.kafka.admin import wait_for_broker
from processor.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = logging.getLogger(__name__)
SETTINGS_KEY = web.AppKey("settings", Settings)


async def healthz(request: web.Request) -> web.Response:
    """The process is up (liveness)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The process can do its work: Kafka answers (readiness)."""
    settings = request.app[SETTINGS_KEY]
    try:
        await asyncio.to_thread(wait_for_broker, settings, 3.0)
    except KafkaUnavailable as exc:
        return web.json_response({"status": "unavailable", "reason": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def measured(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by its route pattern (not its raw path)."""
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_REQUESTS.labels(route, str(status)).inc()
        HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024, middlewares=[measured])
    app[SETTINGS_KEY] = settings
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def run_server(settings: Settings, host: str, port: int) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C."""
    log.info("serving on http://%s:%d", host, port)
    web.run_app(create_app(settings), host=host, port=port, print=None, access_log=None)
