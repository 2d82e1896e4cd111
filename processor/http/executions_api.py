"""`/v1/triggers/{id}/executions`: a trigger's execution history, workspace-scoped."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from processor import topics
from processor.dispatch.dispatcher import CANCEL_HEADER
from processor.errors import KafkaUnavailable, TriggerDisabled
from processor.executions.history import ExecutionsView
from processor.executions.status import TriggerStatus
from processor.http.auth import request_workspace, requested_by
from processor.http.triggers_api import (
    body_as,
    cursor_key,
    definitions_view,
    json_body,
    owned_trigger,
    page_cursor,
    send_fires,
)
from processor.kafka.async_producer import AsyncProducer
from processor.matching.fires import RERUN_MAX, TooManyReruns, bulk_rerun_fires, rerun_fire
from processor.messages import CancelRequest, ExecutionRecord, ExecutionStatus
from processor.serde import to_json

router = APIRouter(prefix="/v1/triggers/{trigger_id}/executions", tags=["executions"])
status_router = APIRouter(prefix="/v1/triggers/{trigger_id}", tags=["triggers"])
all_router = APIRouter(prefix="/v1/executions", tags=["executions"])
Workspace = Annotated[str, Depends(request_workspace)]


class ExecutionPage(BaseModel):
    items: list[ExecutionRecord] = Field(description="Newest first.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


def _history(request: Request) -> ExecutionsView:
    view: ExecutionsView = request.app.state.executions
    if not view.ready.is_set():
        raise HTTPException(503, "still loading executions", headers={"Retry-After": "1"})
    return view


def _readable(request: Request, trigger_id: str, workspace: str) -> ExecutionsView:
    """The history, once the trigger is the workspace's: defined in it, or with executions
    recorded in it (a deleted trigger's runs stay readable, as on the CLI)."""
    history = _history(request)
    document = definitions_view(request).get(trigger_id)
    if document is not None and document.workspace == workspace:
        return history
    if history.recorded_in(trigger_id, workspace):
        return history
    raise HTTPException(404, f"no trigger {trigger_id} in workspace {workspace!r}")


def _cursor(record: ExecutionRecord) -> str:
    return page_cursor(record.triggered_at.timestamp(), record.execution_id)


def _after(cursor: str | None) -> tuple[float, str] | None:
    """Where a page given by `_cursor` ended, as the newest-first sort key."""
    if cursor is None:
        return None
    at, execution_id = cursor_key(cursor, float)
    return -at, execution_id


@all_router.get("", response_model=ExecutionPage, summary="List the workspace's executions")
def list_workspace_executions(
    request: Request,
    workspace: Workspace,
    status: Annotated[ExecutionStatus | None, Query(description="Only this status.")] = None,
    trigger_id: Annotated[
        str | None, Query(description="Only this trigger's (a deleted one's too).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="From the previous page.")] = None,
) -> dict[str, Any]:
    """Every trigger's executions in the workspace, newest first, in one read of the
    history, however many triggers there are (the console's Executions page)."""
    records = _history(request).newest(workspace, status, trigger_id, _after(cursor), limit + 1)
    page = records[:limit]
    return {
        "items": [r.model_dump(mode="json", exclude_none=True) for r in page],
        "next_cursor": _cursor(page[-1]) if len(records) > limit else None,
    }


@router.get("", response_model=ExecutionPage, summary="List executions")
def list_executions(
    request: Request,
    trigger_id: str,
    workspace: Workspace,
    status: Annotated[ExecutionStatus | None, Query(description="Only this status.")] = None,
    since: Annotated[datetime | None, Query(description="Triggered at or after.")] = None,
    until: Annotated[datetime | None, Query(description="Triggered before.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="From the previous page.")] = None,
) -> dict[str, Any]:
    history = _readable(request, trigger_id, workspace)
    records = history.list(trigger_id, status, since, until, workspace)
    after = _after(cursor)
    if after is not None:
        records = [r for r in records if (-r.triggered_at.timestamp(), r.execution_id) > after]
    page = records[:limit]
    return {
        "items": [r.model_dump(mode="json", exclude_none=True) for r in page],
        "next_cursor": _cursor(page[-1]) if len(records) > limit else None,
    }


@status_router.get("/status", response_model=TriggerStatus, summary="A trigger's status")
def get_status(request: Request, trigger_id: str, workspace: Workspace) -> TriggerStatus:
    """Enabled, disabled or paused by its circuit breaker (and why), last fire, runs in
    the last hour, next fire of a schedule."""
    document = owned_trigger(definitions_view(request), trigger_id, workspace)
    return _history(request).status(document)


@router.get(
    "/{execution_id}",
    response_model=ExecutionRecord,
    response_model_exclude_none=True,
    summary="Get an execution",
)
def get_execution(
    request: Request, trigger_id: str, execution_id: str, workspace: Workspace
) -> dict[str, Any]:
    record = _readable(request, trigger_id, workspace).get(trigger_id, execution_id)
    if record is None or record.workspace_id != workspace:
        raise HTTPException(404, f"no execution {execution_id} of trigger {trigger_id}")
    return record.model_dump(mode="json", exclude_none=True)


class Rerun(BaseModel):
    execution_id: str = Field(description="The new execution.")
    reruns: str = Field(description="The execution it runs again.")


class BulkRerunRequest(BaseModel):
    status: Literal["failed", "timed_out"] = Field(description="Which executions to run again.")
    since: datetime | None = Field(None, description="Triggered at or after.")
    until: datetime | None = Field(None, description="Triggered before.")
    dry_run: bool = Field(False, description="Only list what would run again.")


class BulkRerun(BaseModel):
    dry_run: bool
    reruns: list[Rerun] = Field(description="Oldest original first.")


@router.post(
    "/rerun",
    status_code=202,
    response_model=BulkRerun,
    summary="Re-run failed or timed-out executions",
    description=f"Every execution of the trigger with that status in the range (at most "
    f"{RERUN_MAX}; narrow the range for more) runs again as a new execution with the same "
    "input, cause `rerun`. `dry_run` lists them and starts nothing.",
    responses={
        409: {"description": "The trigger is disabled"},
        422: {"description": "Over the cap"},
    },
    openapi_extra=json_body(BulkRerunRequest),
)
async def rerun_executions(
    request: Request, trigger_id: str, workspace: Workspace
) -> dict[str, Any]:
    document = owned_trigger(definitions_view(request), trigger_id, workspace)
    asked = await body_as(request, BulkRerunRequest)
    status = ExecutionStatus(asked.status)
    history = _history(request).list(trigger_id, status)
    try:
        chosen = bulk_rerun_fires(
            document, history, status, asked.since, asked.until, requested_by(request)
        )
    except TooManyReruns as exc:
        raise HTTPException(422, str(exc)) from None
    except TriggerDisabled as exc:
        raise HTTPException(409, str(exc)) from None
    if not asked.dry_run:
        await send_fires(request, [fire for _, fire in chosen])
    reruns = [{"execution_id": f.execution_id, "reruns": o.execution_id} for o, f in chosen]
    return {"dry_run": asked.dry_run, "reruns": reruns}


@router.post(
    "/{execution_id}/rerun",
    status_code=202,
    response_model=Rerun,
    summary="Run an execution again",
    description="A new execution with the same input (cause `rerun`, naming this one). An "
    "`Idempotency-Key` header makes a retried request return the same execution id and "
    "start no second run. 409 for a disabled trigger.",
    responses={409: {"description": "The trigger is disabled"}},
)
async def rerun_execution(
    request: Request,
    trigger_id: str,
    execution_id: str,
    workspace: Workspace,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    document = owned_trigger(definitions_view(request), trigger_id, workspace)
    original = _history(request).get(trigger_id, execution_id)
    if original is None:
        raise HTTPException(404, f"no execution {execution_id} of trigger {trigger_id}")
    try:
        fire = rerun_fire(document, original, requested_by(request), idempotency_key)
    except TriggerDisabled as exc:
        raise HTTPException(409, str(exc)) from None
    await send_fires(request, [fire])
    return {"execution_id": fire.execution_id, "reruns": execution_id}


@router.post(
    "/{execution_id}/cancel",
    status_code=202,
    summary="Cancel an execution",
    responses={409: {"description": "Already finished"}},
)
async def cancel_execution(
    request: Request, trigger_id: str, execution_id: str, workspace: Workspace
) -> dict[str, Any]:
    record = _readable(request, trigger_id, workspace).get(trigger_id, execution_id)
    if record is None or record.workspace_id != workspace:
        raise HTTPException(404, f"no execution {execution_id} of trigger {trigger_id}")
    if record.status.finished:
        raise HTTPException(
            409, f"execution {execution_id} already finished ({record.status.value})"
        )
    producer: AsyncProducer = request.app.state.gateway.producer
    cancel = CancelRequest(execution_id=execution_id, trigger_id=trigger_id)
    topic = topics.topic_name(topics.DISPATCH_RESULTS, request.app.state.settings)
    try:
        await producer.send(
            topic, trigger_id.encode(), to_json(cancel), headers=[(CANCEL_HEADER, b"1")]
        )
    except KafkaUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    return {"execution_id": execution_id, "cancel": "requested"}
