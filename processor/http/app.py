"""The HTTP service (`triggers serve`): `/v1` API, health, readiness and metrics.

One stateless process (or several on one port: `--workers`); run as many replicas as
needed. Trigger definitions come from a live view of `trigger-definitions`; writes go to
Kafka and answer only once acknowledged.

    request ─► Front ─┬─ a webhook's path ──► Gateway (ASGI, no framework in between)
                      └─ anything else ─────► FastAPI: /v1, console, health, metrics
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.exceptions import HTTPException as StarletteHTTPException

from processor import __version__, topics
from processor.config import Settings
from processor.definitions.store import DefinitionWriter
from processor.definitions.view import DefinitionsView
from processor.errors import KafkaUnavailable
from processor.executions.history import ExecutionsView
from processor.http.executions_api import all_router as workspace_executions_router
from processor.http.executions_api import router as executions_router
from processor.http.executions_api import status_router
from processor.http.tools_api import router as tools_router
from processor.http.triggers_api import router as triggers_router
from processor.http.ui import pages as ui
from processor.kafka.admin import wait_for_broker
from processor.kafka.async_producer import AsyncProducer
from processor.metrics import HTTP_LATENCY, HTTP_REQUESTS, trigger_label
from processor.webhooks.gateway import Gateway, Receive, Scope, Send

log = logging.getLogger(__name__)


WEBHOOK_ROUTE = "/webhooks/{trigger_id}"
CUSTOM_ROUTE = "/{path:path}"
API_PREFIXES = ("/v1/", "/ui", "/healthz", "/readyz", "/metrics", "/openapi.json")
"""Paths that are the API's whatever a trigger's `endpoint` says (FastAPI's own routes
came first before the gateway took webhooks ahead of it)."""


class Front:
    """The ASGI application `triggers serve` runs: webhook calls go straight to the
    gateway, everything else to the FastAPI application; both are counted and timed by
    route template (`triggers_http_requests_total`, `triggers_http_request_seconds`)."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    def _gateway_for(self, path: str) -> Gateway | None:
        gateway: Gateway | None = getattr(self.api.state, "gateway", None)
        if gateway is None or path.startswith(API_PREFIXES):
            return None
        if path.startswith("/webhooks/") or gateway.view.route(path):
            return gateway
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        gateway = self._gateway_for(path)
        if gateway is not None:
            answer = await gateway.answer(scope, receive)
            await answer.send(send)
            status = answer.status
            route = WEBHOOK_ROUTE if path.startswith("/webhooks/") else CUSTOM_ROUTE
        else:
            started_response: dict[str, int] = {}

            async def sending(message: Any) -> None:
                if message["type"] == "http.response.start":
                    started_response["status"] = message["status"]
                await send(message)

            await self.api(scope, receive, sending)
            status = started_response.get("status", 500)
            route = getattr(scope.get("route"), "path", "unmatched")
        HTTP_REQUESTS.labels(route, str(status)).inc()
        HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


def create_app(settings: Settings) -> Front:
    """The HTTP service: the gateway in front of the FastAPI application (`.api`)."""
    return Front(create_api(settings))


def create_api(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        view = DefinitionsView(settings)
        executions = ExecutionsView(settings)
        producer = AsyncProducer(settings, settings.webhook_ack_timeout_seconds)
        app.state.view = view
        app.state.executions = executions
        app.state.writer = DefinitionWriter(settings)
        app.state.producer = producer
        app.state.fires_topic = topics.topic_name(topics.TRIGGER_FIRES, settings)
        app.state.gateway = Gateway(settings, view, producer)
        view.start()
        executions.start()
        yield
        executions.stop()
        view.stop()
        producer.close()

    app = FastAPI(
        title="kafka-agent-triggers",
        version=__version__,
        description="Webhook gateway and API of the Kafka event-trigger processor.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        separate_input_output_schemas=False,
    )
    app.state.settings = settings
    app.include_router(triggers_router)
    app.include_router(executions_router)
    app.include_router(workspace_executions_router)
    app.include_router(status_router)
    app.include_router(tools_router)
    app.include_router(ui.router)
    app.mount("/ui/static", StaticFiles(directory=ui.HERE / "static"), name="ui-static")
    app.add_exception_handler(ui.SignedOut, ui.signed_out_redirect)

    async def console_or_api_error(request: Request, exc: Exception) -> Response:
        """A console page's error is a page; everywhere else FastAPI's JSON answer."""
        if request.url.path.startswith("/ui/") and not request.url.path.startswith("/ui/static/"):
            return ui.error_page(request, exc)
        if isinstance(exc, RequestValidationError):
            return await request_validation_exception_handler(request, exc)
        assert isinstance(exc, StarletteHTTPException)
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, console_or_api_error)
    app.add_exception_handler(RequestValidationError, console_or_api_error)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: Kafka answers, view loaded")
    async def readyz(request: Request) -> JSONResponse:
        try:
            await asyncio.to_thread(wait_for_broker, settings, 3.0)
        except KafkaUnavailable as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        if not request.app.state.view.ready.is_set():
            return JSONResponse({"status": "loading definitions"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # --workers: every process's
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/webhooks/{trigger_id}",
        tags=["webhooks"],
        summary="Deliver a webhook to a trigger",
        status_code=202,
        responses={
            202: {"description": 'In Kafka; `{"execution_id": ...}`'},
            401: {"description": "Bad or missing signature"},
            403: {"description": "Caller's IP is not allowed"},
            404: {"description": "Unknown or disabled trigger"},
            405: {"description": "Wrong method"},
            413: {"description": "Body too large"},
            415: {"description": "Unsupported content type"},
            429: {"description": "Rate limit reached (see Retry-After)"},
            503: {"description": "Kafka unavailable (see Retry-After)"},
        },
    )
    async def webhook(request: Request, trigger_id: str) -> Response:
        """Documents the route; the Front hands these calls to the gateway itself."""
        return await _gateway_response(request)

    @app.api_route(
        "/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def custom_endpoint(request: Request, path: str) -> Response:
        """Whatever no route and no trigger's endpoint answers: the gateway's 404 (or
        405, or 503 while definitions load), said the way webhook senders are told."""
        return await _gateway_response(request)

    return app


async def _gateway_response(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    answer = await gateway.answer(request.scope, request.receive)
    headers, content = answer.encoded()
    response = Response(content, status_code=answer.status)
    response.raw_headers = headers
    return response


def app_from_environment() -> Front:
    """The application of one of several `--workers` processes, each started afresh by
    uvicorn: its settings come from the same environment as the command's."""
    from processor.config import get_settings
    from processor.logs import configure

    settings = get_settings()
    configure(settings.log_level, "serve", settings.log_format)
    return create_app(settings)


def run_server(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C.

    With `workers` > 1, uvicorn binds the port once and runs that many processes that
    accept on it (one interpreter each: the gateway is CPU-bound in Python), restarting
    any that dies. Their metrics are summed over every process through files in a
    directory of this run (prometheus_client's multiprocess mode)."""
    from processor.kafka.admin import refuse_early

    refuse_early(settings)
    trigger_label.configure(settings.metrics_trigger_label_limit, settings.metrics_trigger_ids)
    log.info("serving on http://%s:%d (%d process(es))", host, port, workers)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "log_config": None,
    }
    if workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return
    with tempfile.TemporaryDirectory(prefix="triggers-metrics-") as metrics:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics  # read by each process at start
        uvicorn.run(
            "processor.http.app:app_from_environment", factory=True, workers=workers, **options
        )
