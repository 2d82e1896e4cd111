"""The HTTP service (`triggers serve`): `/v1` API, health, readiness and metrics.

One stateless process; run as many replicas as needed. Trigger definitions come from a
live view of `trigger-definitions`; writes go to Kafka and answer only once acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processor import __version__, topics
from processor.config import Settings
from processor.definitions.store import DefinitionWriter
from processor.definitions.view import DefinitionsView
from processor.dispatch.history import ExecutionsView
from processor.errors import KafkaUnavailable
from processor.http.executions_api import router as executions_router
from processor.http.executions_api import status_router
from processor.http.tools_api import router as tools_router
from processor.http.triggers_api import router as triggers_router
from processor.http.ui import pages as ui
from processor.kafka.admin import wait_for_broker
from processor.kafka.async_producer import AsyncProducer
from processor.metrics import HTTP_LATENCY, HTTP_REQUESTS
from processor.webhooks.gateway import Gateway

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
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
    app.include_router(status_router)
    app.include_router(tools_router)
    app.include_router(ui.router)
    app.mount("/ui/static", StaticFiles(directory=ui.HERE / "static"), name="ui-static")
    app.add_exception_handler(ui.SignedOut, ui.signed_out_redirect)

    @app.middleware("http")
    async def measured(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Count and time every request by its route template (not its raw path)."""
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        HTTP_REQUESTS.labels(route, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)
        return response

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
        gateway: Gateway = request.app.state.gateway
        return await gateway.handle(request)

    @app.api_route(
        "/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def custom_endpoint(request: Request, path: str) -> Response:
        """Every trigger's custom `endpoint` (and other methods on /webhooks/{id})."""
        gateway: Gateway = request.app.state.gateway
        return await gateway.handle(request)

    return app


def run_server(settings: Settings, host: str, port: int) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C."""
    log.info("serving on http://%s:%d", host, port)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
    )
