"""`/v1` authentication: `Authorization: Bearer <key>`, each key bound to one workspace."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from processor.config import ApiKey, Settings


def caller_for(settings: Settings, authorization: str | None) -> ApiKey:
    """The bearer key's workspace and name (a key configured without a name goes by its
    workspace's), or 401. Keys are compared in constant time."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise HTTPException(
            401,
            "send `Authorization: Bearer <api key>`; keys are configured in TRIGGERS_API_KEYS",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found: ApiKey | None = None
    for candidate, bound in settings.api_keys.items():
        if hmac.compare_digest(candidate.encode(), key.strip().encode()):
            found = bound if isinstance(bound, ApiKey) else ApiKey(workspace=bound, name=bound)
    if found is None:
        raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return found


def workspace_for(settings: Settings, authorization: str | None) -> str:
    """The workspace of the bearer key, or 401."""
    return caller_for(settings, authorization).workspace


bearer = HTTPBearer(auto_error=False, description="An API key from TRIGGERS_API_KEYS.")


def request_workspace(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """FastAPI dependency: the caller's workspace."""
    settings: Settings = request.app.state.settings
    return workspace_for(settings, request.headers.get("authorization"))


def requested_by(request: Request) -> str:
    """Who asked, for a run's cause: `api:` and the key's name (never the key)."""
    settings: Settings = request.app.state.settings
    return f"api:{caller_for(settings, request.headers.get('authorization')).name}"
