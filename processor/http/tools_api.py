"""`/v1/explain` and `/v1/dead-letters`: debugging help, scoped to the key's workspace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from processor.config import Settings
from processor.deadletters import NotRedrivable, decoded, latest_letters, read_letter, redrive
from processor.definitions.view import DefinitionsView
from processor.errors import KafkaUnavailable, TriggersError
from processor.http.auth import request_workspace, requested_by
from processor.http.triggers_api import definitions_view
from processor.matching.decode import decode_event
from processor.matching.explain import explain_with_state
from processor.messages import DeadLetter

router = APIRouter(prefix="/v1", tags=["debugging"])
T = TypeVar("T")
Workspace = Annotated[str, Depends(request_workspace)]
EVENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


class Explanation(BaseModel):
    trigger_id: str
    name: str
    verdict: str = Field(
        description="fired, windowed (taken by its window, sequence or debounce), "
        "condition_failed, source_mismatch, workspace_mismatch or key_missing."
    )
    pattern: str = Field(description="The pattern the event matched (a sequence's A or B).")
    source_ok: bool
    tests: list[dict[str, Any]] = Field(
        description="Each condition test: field, test, actual (null and `missing: true` when "
        "the event has no such field) and whether it held."
    )
    window: dict[str, Any] | None = Field(
        None, description="A threshold's live window for the event's group, if any."
    )
    sequence: dict[str, Any] | None = Field(
        None,
        description="A sequence, absence or debounce trigger: the event's role and what its "
        "key's state makes of it (`reason`).",
    )
    dead_letter: str | None = Field(
        None, description="Why a worker would dead-letter the event for this trigger, if so."
    )


@router.post(
    "/explain",
    response_model=list[Explanation],
    summary="Why an event would or would not fire each trigger",
    openapi_extra=EVENT_BODY,
)
async def explain(request: Request, workspace: Workspace) -> list[dict[str, Any]]:
    """The same engine as `triggers explain`: for each of the workspace's triggers whose
    pattern matches the event's type, every test and the current window count."""
    view = definitions_view(request)
    raw = await request.body()
    try:
        event = decode_event(raw, [], topic="explain", partition=0, offset=0, timestamp_ms=None)
    except TriggersError as exc:
        raise HTTPException(400, f"not an event: {exc}") from None
    documents = [d for d in view.documents() if d.workspace == workspace]
    settings: Settings = request.app.state.settings
    report = await asyncio.to_thread(explain_with_state, settings, documents, event)
    return [item.as_json() for item in report]


class DeadLetterOut(BaseModel):
    id: str = Field(description="The letter's place on trigger-dead-letters, partition:offset.")
    topic: str
    partition: int
    offset: int
    component: str
    error: str
    at: str
    key: str | None = Field(None, description="Original key, as text where it decodes.")
    value: str | None = Field(None, description="Original value (first 2000 characters).")
    value_bytes: int = Field(0, description="Size of the original value.")
    headers: dict[str, str | None] = Field(
        default_factory=dict, description="Original headers, as text."
    )
    redriven: bool = Field(False, description="Sent back to its topic already.")


class DeadLetterFull(DeadLetterOut):
    value_base64: str | None = Field(None, description="The original value, whole, base64.")


class RedriveOut(BaseModel):
    id: str
    topic: str = Field(description="Where the record went back to.")
    partition: int


@router.get(
    "/dead-letters",
    response_model=list[DeadLetterOut],
    summary="The latest rejected records and why",
)
async def dead_letters(
    request: Request,
    workspace: Workspace,
    limit: Annotated[int, Query(ge=1, le=500, description="Most letters returned.")] = 50,
) -> list[dict[str, Any]]:
    """Newest first. A key sees letters about its workspace's triggers; letters that name
    no workspace (a malformed event on a shared topic) go to TRIGGERS_OPERATOR_WORKSPACE."""
    view = definitions_view(request)
    settings: Settings = request.app.state.settings
    letters = await asyncio.to_thread(latest_letters, settings)
    mine = [found for found in letters if owner_of(found[1], view, settings) == workspace]
    return [_out(*found) for found in mine[:limit]]


@router.get(
    "/dead-letters/{letter_id}",
    response_model=DeadLetterFull,
    summary="One dead letter, with its whole value",
)
async def dead_letter_one(request: Request, letter_id: str, workspace: Workspace) -> dict[str, Any]:
    letter, redriven = await _owned_letter(request, letter_id, workspace)
    return {**_out(letter_id, letter, redriven), "value_base64": letter.value}


@router.post(
    "/dead-letters/{letter_id}/redrive",
    status_code=202,
    response_model=RedriveOut,
    summary="Send a dead letter's record back to its topic",
    description="The original record, byte for byte with its headers (and "
    "`triggers-redriven-from`), to its source topic and partition, once: a redriven letter "
    "is marked, and a second redrive answers 409. 404 for an unknown letter or another "
    "workspace's.",
    responses={409: {"description": "Redriven already, or not kept whole"}},
)
async def dead_letter_redrive(
    request: Request, letter_id: str, workspace: Workspace
) -> dict[str, Any]:
    await _owned_letter(request, letter_id, workspace)
    settings: Settings = request.app.state.settings
    done = await _answered(redrive, settings, letter_id, requested_by(request))
    return {"id": done.letter, "topic": done.topic, "partition": done.partition}


async def _owned_letter(
    request: Request, letter_id: str, workspace: str
) -> tuple[DeadLetter, bool]:
    settings: Settings = request.app.state.settings
    letter, redriven = await _answered(read_letter, settings, letter_id)
    if owner_of(letter, definitions_view(request), settings) != workspace:
        raise HTTPException(404, f"no dead letter {letter_id}")
    return letter, redriven


async def _answered(call: Callable[..., T], *args: Any) -> T:
    """`call` off the event loop; what it refuses, as the HTTP answer it stands for."""
    try:
        return await asyncio.to_thread(call, *args)
    except NotRedrivable as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except KafkaUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None


def owner_of(letter: DeadLetter, view: DefinitionsView, settings: Settings) -> str:
    """The workspace a rejected record names: its own `workspace_id`, or that of the
    trigger it names; TRIGGERS_OPERATOR_WORKSPACE when it names none."""
    raw = decoded(letter.value)
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        workspace = body.get("workspace_id") or body.get("workspace")
        if isinstance(workspace, str):
            return workspace
        trigger_id = body.get("trigger_id")
        document = view.get(trigger_id) if isinstance(trigger_id, str) else None
        if document is not None and document.workspace:
            return document.workspace
    return settings.operator_workspace


def _text(data: bytes | None) -> str | None:
    return data.decode(errors="replace") if data is not None else None


def _out(letter_id_: str, letter: DeadLetter, redriven: bool) -> dict[str, Any]:
    key, value = decoded(letter.key), decoded(letter.value)
    text = _text(value)
    return {
        "id": letter_id_,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "component": letter.component,
        "error": letter.error,
        "at": letter.at.isoformat(),
        "key": _text(key),
        "value": text[:2000] if text is not None else None,
        "value_bytes": letter.value_bytes,
        "headers": {name: _text(decoded(data)) for name, data in letter.headers or []},
        "redriven": redriven,
    }
