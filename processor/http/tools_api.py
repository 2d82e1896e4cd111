"""`/v1/explain` and `/v1/dead-letters`: debugging help, scoped to the key's workspace."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from processor import topics
from processor.config import Settings
from processor.definitions.view import DefinitionsView
from processor.errors import TriggersError
from processor.http.auth import request_workspace
from processor.http.triggers_api import definitions_view
from processor.kafka.reader import read_tail
from processor.matching.decode import decode_event
from processor.matching.explain import explain_with_state
from processor.messages import DeadLetter
from processor.serde import from_json

router = APIRouter(prefix="/v1", tags=["debugging"])
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
    verdict: str = Field(description="fired, counted, condition_failed, source_rejected, ...")
    pattern: str
    source_ok: bool
    tests: list[dict[str, Any]] = Field(description="Each condition test and whether it held.")
    window: dict[str, Any] | None = Field(None, description="Live window count, if any.")


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
    topic: str
    partition: int
    offset: int
    component: str
    error: str
    at: str
    key: str | None = Field(None, description="Original key, as text where it decodes.")
    value: str | None = Field(None, description="Original value (first 2000 characters).")


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
    topic = topics.topic_name(topics.DEAD_LETTERS, settings)
    messages = await asyncio.to_thread(read_tail, settings, topic, 500)
    letters = []
    for message in messages:
        try:
            letter = from_json(DeadLetter, message.value() or b"")
        except ValueError:
            continue
        owner = _owner(letter, view) or settings.operator_workspace
        if owner == workspace:
            letters.append(letter)
    letters.sort(key=lambda letter: letter.at, reverse=True)
    return [_out(letter) for letter in letters[:limit]]


def _decoded(data: str | None) -> bytes | None:
    if data is None:
        return None
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return None


def _owner(letter: DeadLetter, view: DefinitionsView) -> str | None:
    """The workspace a rejected record names: its own `workspace_id`, or that of the
    trigger it names."""
    raw = _decoded(letter.value)
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return None
    workspace = body.get("workspace_id") or body.get("workspace")
    if isinstance(workspace, str):
        return workspace
    trigger_id = body.get("trigger_id")
    document = view.get(trigger_id) if isinstance(trigger_id, str) else None
    return document.workspace if document is not None else None


def _out(letter: DeadLetter) -> dict[str, Any]:
    key, value = _decoded(letter.key), _decoded(letter.value)
    return {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "component": letter.component,
        "error": letter.error,
        "at": letter.at.isoformat(),
        "key": key.decode(errors="replace") if key is not None else None,
        "value": value.decode(errors="replace")[:2000] if value is not None else None,
    }
