"""`/v1/triggers`: the same trigger document as the YAML files, scoped to a workspace.

A key sees and changes only its own workspace's triggers; another workspace's trigger
answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from processor.definitions.endpoints import endpoint_problems, name_problems
from processor.definitions.loader import parse_document
from processor.definitions.model import OverlapPolicy, TriggerDocument, document_json
from processor.definitions.store import DefinitionWriter
from processor.definitions.view import DefinitionsView
from processor.errors import DefinitionError, KafkaUnavailable, RecordTooLarge, TriggerDisabled
from processor.executions.history import ExecutionsView
from processor.executions.status import TriggerState
from processor.http.auth import request_workspace, requested_by
from processor.kafka.async_producer import AsyncProducer
from processor.matching.fires import manual_fire
from processor.matching.schedules import BACKFILL_MAX, NotBackfillable, backfill_fires
from processor.messages import FIRE_MAX_BYTES, Fire
from processor.serde import shallow, to_json

router = APIRouter(prefix="/v1/triggers", tags=["triggers"])
Workspace = Annotated[str, Depends(request_workspace)]
M = TypeVar("M", bound=BaseModel)
_T = TypeVar("_T")


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads `model` itself (after it checked the
    trigger is the caller's, so another workspace's trigger is a 404, never a 422)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def send_fires(request: Request, fires: list[Fire]) -> None:
    """Write fires to `trigger-fires` through the service's one producer (together, so
    they share its batches); return once Kafka acknowledged all, else a 503."""
    producer: AsyncProducer = request.app.state.producer
    topic = request.app.state.fires_topic
    written = [(fire.trigger_id.encode(), to_json(fire)) for fire in fires]
    for _, value in written:
        if len(value) > FIRE_MAX_BYTES:
            raise HTTPException(
                413,
                f"the run's input is too large: its fire would be {len(value):,} bytes, "
                f"over the {FIRE_MAX_BYTES:,} a fire may take",
            )
    try:
        await asyncio.gather(*(producer.send(topic, key, value) for key, value in written))
    except RecordTooLarge as exc:
        raise HTTPException(413, f"the run's input is too large: {exc}") from None
    except KafkaUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None


async def body_as(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(
            422, {"problems": [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]}
        ) from None


DOCUMENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TriggerDocument"}}
        },
    }
}
MERGE_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


class TriggerPage(BaseModel):
    items: list[TriggerDocument] = Field(description="Triggers, ordered by name then id.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


def definitions_view(request: Request) -> DefinitionsView:
    view: DefinitionsView = request.app.state.view
    if not view.ready.is_set():
        raise HTTPException(503, "still loading trigger definitions", headers={"Retry-After": "1"})
    return view


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None


def _validated(raw: Any, workspace: str, trigger_id: str | None = None) -> TriggerDocument:
    if not isinstance(raw, dict):
        raise HTTPException(
            422, {"problems": ["the body must be a JSON object (a trigger document)"]}
        )
    if isinstance(raw.get("trigger"), dict) and len(raw) == 1:
        raw = raw["trigger"]
    claimed = raw.get("workspace", raw.get("workspace_id"))
    if claimed is not None and claimed != workspace:
        raise HTTPException(
            403, f"this API key belongs to workspace {workspace!r}, not {claimed!r}"
        )
    if trigger_id is not None and raw.get("id") not in (None, trigger_id):
        raise HTTPException(
            422, {"problems": [f"id: {raw['id']!r} does not match the URL's {trigger_id!r}"]}
        )
    try:
        document = parse_document(raw, "body")
    except DefinitionError as exc:
        raise HTTPException(422, {"problems": exc.problems}) from None
    if trigger_id is not None:
        document = document.model_copy(update={"id": trigger_id})
    return document.resolved(workspace)


def owned_trigger(view: DefinitionsView, trigger_id: str, workspace: str) -> TriggerDocument:
    document = view.get(trigger_id)
    if document is None or document.workspace != workspace:
        raise HTTPException(404, f"no trigger {trigger_id} in workspace {workspace!r}")
    return document


async def _save(request: Request, view: DefinitionsView, document: TriggerDocument) -> None:
    existing = view.documents()
    problems = name_problems([(document, "body")], existing) + endpoint_problems(
        [(document, "body")], existing
    )
    if problems:
        raise HTTPException(409, {"problems": problems})
    await _write(request, view, document.trigger_id, document)


async def _write(
    request: Request, view: DefinitionsView, trigger_id: str, document: TriggerDocument | None
) -> None:
    writer: DefinitionWriter = request.app.state.writer
    try:
        offsets = await asyncio.to_thread(writer.write, {trigger_id: document})
    except RecordTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except KafkaUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    view.apply_local(trigger_id, document, offsets[trigger_id])


def _out(document: TriggerDocument) -> dict[str, Any]:
    return document_json(document)


def page_cursor(first: str | float, second: str) -> str:
    """An opaque `next_cursor`: the sort key of the last item of a page."""
    return base64.urlsafe_b64encode(orjson.dumps([first, second])).decode()


def cursor_key(cursor: str, first: Callable[[Any], _T]) -> tuple[_T, str]:
    """The sort key a `page_cursor` holds, its first part read by `first`; 400 for a
    cursor this API did not give."""
    try:
        found, second = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return first(found), str(second)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise HTTPException(400, "cursor is not one this API returned") from None


@router.get("", response_model=TriggerPage, summary="List triggers")
def list_triggers(
    request: Request,
    workspace: Workspace,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="From the previous page.")] = None,
    type: Annotated[str | None, Query(description="Only this trigger type.")] = None,
    enabled: Annotated[bool | None, Query(description="Only enabled or disabled ones.")] = None,
    q: Annotated[
        str | None, Query(description="Only those whose name (any case) or id contains this.")
    ] = None,
    state: Annotated[
        TriggerState | None,
        Query(description="Only those in this state (each trigger's status is read)."),
    ] = None,
) -> dict[str, Any]:
    keys, documents = definitions_view(request).by_name(workspace)
    text, exact = (q.lower(), q) if q else (None, "")
    start = 0 if cursor is None else bisect.bisect_right(keys, cursor_key(cursor, str))
    wanted = (
        d
        for d in (documents[i] for i in range(start, len(documents)))
        if (type is None or d.type.value == type)
        and (enabled is None or d.enabled == enabled)
        and (text is None or text in d.name.lower() or exact in d.trigger_id)
    )
    if state is not None:
        history: ExecutionsView = request.app.state.executions
        if not history.ready.is_set():
            raise HTTPException(503, "still loading executions", headers={"Retry-After": "1"})
        now = datetime.now(UTC)
        wanted = (d for d in wanted if history.status(d, now).state is state)
    found = list(itertools.islice(wanted, limit + 1))
    page = found[:limit]
    more = len(found) > limit
    return {
        "items": [_out(d) for d in page],
        "next_cursor": page_cursor(page[-1].name, page[-1].trigger_id) if more else None,
    }


@router.post(
    "",
    status_code=201,
    summary="Create a trigger",
    openapi_extra=DOCUMENT_BODY,
    response_model=TriggerDocument,
    response_model_exclude_none=True,
    responses={409: {"description": "Id or endpoint in use"}},
)
async def create_trigger(request: Request, workspace: Workspace) -> dict[str, Any]:
    view = definitions_view(request)
    document = _validated(await _json_body(request), workspace)
    if view.get(document.trigger_id) is not None:
        raise HTTPException(409, f"trigger {document.trigger_id} exists; PUT replaces it")
    await _save(request, view, document)
    return _out(document)


@router.get(
    "/{trigger_id}",
    response_model=TriggerDocument,
    response_model_exclude_none=True,
    summary="Get a trigger",
)
def get_trigger(request: Request, trigger_id: str, workspace: Workspace) -> dict[str, Any]:
    return _out(owned_trigger(definitions_view(request), trigger_id, workspace))


@router.put(
    "/{trigger_id}",
    response_model=TriggerDocument,
    response_model_exclude_none=True,
    summary="Create or replace a trigger",
    openapi_extra=DOCUMENT_BODY,
)
async def replace_trigger(
    request: Request, response: Response, trigger_id: str, workspace: Workspace
) -> dict[str, Any]:
    view = definitions_view(request)
    existing = view.get(trigger_id)
    if existing is not None and existing.workspace != workspace:
        raise HTTPException(409, f"trigger id {trigger_id} is in use")
    document = _validated(await _json_body(request), workspace, trigger_id)
    await _save(request, view, document)
    response.status_code = 200 if existing is not None else 201
    return _out(document)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


@router.patch(
    "/{trigger_id}",
    response_model=TriggerDocument,
    response_model_exclude_none=True,
    summary="Change part of a trigger",
    openapi_extra=MERGE_PATCH_BODY,
)
async def patch_trigger(request: Request, trigger_id: str, workspace: Workspace) -> dict[str, Any]:
    view = definitions_view(request)
    current = owned_trigger(view, trigger_id, workspace)
    patch = await _json_body(request)
    if not isinstance(patch, dict):
        raise HTTPException(422, {"problems": ["a merge patch must be a JSON object"]})
    document = _validated(_merge_patch(_out(current), patch), workspace, trigger_id)
    await _save(request, view, document)
    return _out(document)


@router.delete("/{trigger_id}", status_code=204, summary="Delete a trigger")
async def delete_trigger(request: Request, trigger_id: str, workspace: Workspace) -> Response:
    view = definitions_view(request)
    owned_trigger(view, trigger_id, workspace)
    await _write(request, view, trigger_id, None)
    return Response(status_code=204)


async def _set_enabled(
    request: Request, trigger_id: str, workspace: str, enabled: bool
) -> dict[str, Any]:
    view = definitions_view(request)
    document = owned_trigger(view, trigger_id, workspace).model_copy(update={"enabled": enabled})
    await _save(request, view, document)
    return _out(document)


@router.post(
    "/{trigger_id}/enable",
    response_model=TriggerDocument,
    response_model_exclude_none=True,
    summary="Enable a trigger",
)
async def enable_trigger(request: Request, trigger_id: str, workspace: Workspace) -> dict[str, Any]:
    return await _set_enabled(request, trigger_id, workspace, True)


@router.post(
    "/{trigger_id}/disable",
    response_model=TriggerDocument,
    response_model_exclude_none=True,
    summary="Disable a trigger",
)
async def disable_trigger(
    request: Request, trigger_id: str, workspace: Workspace
) -> dict[str, Any]:
    return await _set_enabled(request, trigger_id, workspace, False)


class RunRequest(BaseModel):
    input: Annotated[dict[str, Any], AfterValidator(shallow)] = Field(
        default_factory=dict, description="Merged over the trigger's own `input`."
    )


class RunStarted(BaseModel):
    execution_id: str = Field(description="Follow it under /v1/triggers/{id}/executions.")


@router.post(
    "/{trigger_id}/run",
    status_code=202,
    response_model=RunStarted,
    summary="Run a trigger now (cause `manual`)",
    description="Starts the trigger's agent now, whatever its type, with the trigger's "
    "input and the given one on top. An `Idempotency-Key` header makes a retried request "
    "return the same execution id and start no second run. A disabled trigger answers "
    "409. 202 only once the fire is in Kafka; 503 with Retry-After otherwise.",
    responses={409: {"description": "The trigger is disabled"}},
)
async def run_trigger(
    request: Request,
    trigger_id: str,
    workspace: Workspace,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    view = definitions_view(request)
    document = owned_trigger(view, trigger_id, workspace)
    raw = await request.body()
    try:
        asked = RunRequest.model_validate_json(raw) if raw.strip() else RunRequest()
    except ValidationError as exc:
        raise HTTPException(422, {"problems": [str(e["msg"]) for e in exc.errors()]}) from None
    try:
        fire = manual_fire(document, asked.input, requested_by(request), idempotency_key)
    except TriggerDisabled as exc:
        raise HTTPException(409, str(exc)) from None
    await send_fires(request, [fire])
    return {"execution_id": fire.execution_id}


class BackfillRequest(BaseModel):
    from_: datetime = Field(alias="from", description="First scheduled time included.")
    to: datetime = Field(description="Scheduled times before this one.")
    overlap: OverlapPolicy | None = Field(
        None, description="For these fires instead of the trigger's own policy."
    )
    dry_run: bool = Field(False, description="Only list the fires; start nothing.")


class BackfillFire(BaseModel):
    execution_id: str
    scheduled_time: str
    known: bool = Field(description="Already in trigger-executions: not started again.")


class BackfillDone(BaseModel):
    dry_run: bool
    started: int = Field(description="Fires written (0 for a dry run).")
    fires: list[BackfillFire] = Field(description="Oldest first.")


@router.post(
    "/{trigger_id}/backfill",
    status_code=202,
    response_model=BackfillDone,
    summary="Backfill a schedule",
    description=f"Every fire the schedule would have made for scheduled times in "
    f"[from, to), at most {BACKFILL_MAX} (a longer range is a 422 with that number), with "
    "the execution id the scheduler gives each time: a repeated backfill, or a time that "
    "already ran, starts nothing new. They go through the trigger's concurrency and "
    "overlap policy (or `overlap`). 409 for a disabled trigger, 422 for one that is not a "
    "schedule.",
    responses={
        409: {"description": "Disabled"},
        422: {"description": "Not a schedule, or over the cap"},
    },
    openapi_extra=json_body(BackfillRequest),
)
async def backfill(request: Request, trigger_id: str, workspace: Workspace) -> dict[str, Any]:
    document = owned_trigger(definitions_view(request), trigger_id, workspace)
    asked = await body_as(request, BackfillRequest)
    try:
        fires = backfill_fires(
            document, asked.from_, asked.to, requested_by(request), asked.overlap
        )
    except TriggerDisabled as exc:
        raise HTTPException(409, str(exc)) from None
    except NotBackfillable as exc:
        raise HTTPException(422, str(exc)) from None
    history = request.app.state.executions
    listed, fresh = [], []
    for fire in fires:
        known = history.get(trigger_id, fire.execution_id) is not None
        listed.append(
            {
                "execution_id": fire.execution_id,
                "scheduled_time": fire.input["scheduled_time"],
                "known": known,
            }
        )
        if not known:
            fresh.append(fire)
    if not asked.dry_run:
        await send_fires(request, fresh)
    return {
        "dry_run": asked.dry_run,
        "started": 0 if asked.dry_run else len(fresh),
        "fires": listed,
    }
