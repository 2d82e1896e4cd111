"""The Error Handler's rule as the raw peers run it: no definitions, no state store.

5 events `error.*` from `system`/`agents` with severity >= high within 5 minutes (of
wall-clock time); the count starts again after each command.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

RANKS = {"high": 7, "critical": 8, "alert": 9, "emergency": 10}


class ErrorRule:
    def __init__(self) -> None:
        self.window: list[float] = []

    def command_for(self, value: bytes | None) -> tuple[bytes, bytes] | None:
        """The (key, value) of a command if this event completes the rule, else None."""
        event: dict[str, Any] = orjson.loads(value or b"{}")
        if not event.get("type", "").startswith("error."):
            return None
        if event.get("source") not in ("system", "agents"):
            return None
        if (event.get("data") or {}).get("severity") not in RANKS:
            return None
        now = time.time()
        self.window = [t for t in self.window if now - t < 300] + [now]
        if len(self.window) < 5:
            return None
        self.window = []
        command = {"execution_id": uuid.uuid4().hex, "cause": {"event_id": event["id"]}}
        return command["execution_id"].encode(), orjson.dumps(command)
