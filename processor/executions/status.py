"""A trigger's operating status: enabled, disabled or paused (and why), recent activity.

Derived from the definition and the execution history, with the same failure count the
dispatcher uses to open the circuit breaker, so what the API says is what it does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from processor.definitions.model import TriggerDocument, TriggerType
from processor.dispatch.state import Failures
from processor.matching.schedules import first_pending, schedule_of
from processor.messages import ExecutionRecord, ExecutionStatus


class TriggerState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    PAUSED = "paused"
    """Enabled, but the circuit breaker stops its fires until `paused_until`."""


class TriggerStatus(BaseModel):
    trigger_id: str
    name: str
    type: TriggerType
    state: TriggerState
    reason: str | None = Field(None, description="Why it is disabled, paused or half-open.")
    paused_until: datetime | None = None
    consecutive_failures: int = Field(0, description="Failed or timed-out runs in a row.")
    last_fire_at: datetime | None = None
    last_status: ExecutionStatus | None = None
    fires_last_hour: int = 0
    runs_last_hour: int = Field(0, description="Fires of the last hour that were not skipped.")
    next_fire_at: datetime | None = Field(None, description="Schedules only.")


def trigger_status(
    document: TriggerDocument,
    failures: Failures,
    newest_first: list[ExecutionRecord],
    now: datetime,
) -> TriggerStatus:
    state, reason, paused_until = TriggerState.ENABLED, None, None
    breaker = document.circuit_breaker
    until = failures.open_until(breaker) if breaker is not None else None
    if not document.enabled:
        state, reason = TriggerState.DISABLED, "disabled by its definition (enabled: false)"
    elif until is not None:
        opened = (
            f"circuit breaker opened after {failures.consecutive} consecutive failed or "
            "timed-out runs"
        )
        if now < until:
            state, paused_until = TriggerState.PAUSED, until
            reason = f"{opened}; paused until {until.astimezone(UTC).isoformat()}"
        else:
            reason = f"{opened}; half-open: the next run is a trial"
    hour_ago = now - timedelta(hours=1)
    recent = [r for r in newest_first if r.triggered_at >= hour_ago]
    schedule = schedule_of(document) if document.type is TriggerType.SCHEDULE else None
    try:
        next_fire = first_pending(schedule, now.timestamp()) if schedule is not None else None
    except (ValueError, OverflowError):  # past the calendar's end: the scheduler leaves it out
        next_fire = None
    latest = newest_first[0] if newest_first else None
    return TriggerStatus(
        trigger_id=document.trigger_id,
        name=document.name,
        type=document.type,
        state=state,
        reason=reason,
        paused_until=paused_until,
        consecutive_failures=failures.consecutive,
        last_fire_at=latest.triggered_at if latest else None,
        last_status=latest.status if latest else None,
        fires_last_hour=len(recent),
        runs_last_hour=sum(r.status is not ExecutionStatus.SKIPPED for r in recent),
        next_fire_at=datetime.fromtimestamp(next_fire, UTC) if next_fire is not None else None,
    )
