"""`/v1` authentication: `Authorization: Bearer <key>`, each key bound to one workspace."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from processor.config import Settings


def workspace_for(settings: Settings, authorization: str | None) -> str:
    """The workspace of the bearer key, or 401. Keys are compared in constant time."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise HTTPException(
            401,
            "send `Authorization: Bearer <api key>`; keys are configured in TRIGGERS_API_KEYS",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = None
    for candidate, workspace in settings.api_keys.items():
        if hmac.compare_digest(candidate.encode(), key.strip().encode()):
            found = workspace
    if found is None:
        raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return found


bearer = HTTPBearer(auto_error=False, description="An API key from TRIGGERS_API_KEYS.")


def request_workspace(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """FastAPI dependency: the caller's workspace."""
    settings: Settings = request.app.state.settings
    return workspace_for(settings, request.headers.get("authorization"))
