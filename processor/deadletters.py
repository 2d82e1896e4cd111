"""Dead letters: a record the product cannot use is kept, with where it came from and why."""

from __future__ import annotations

import base64

from confluent_kafka import Message

from processor.messages import DeadLetter
from processor.metrics import DEAD_LETTERS
from processor.serde import to_json

MAX_KEPT_BYTES = 64 * 1024
"""A dead letter keeps at most this much of the record's value (and key), so a huge
rejected record still fits the dead-letter topic; `value_bytes` tells the full size."""


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: str,
    component: str,
) -> tuple[bytes | None, bytes]:
    """The (key, value) to write to `trigger-dead-letters` for a rejected record."""
    DEAD_LETTERS.labels(component).inc()
    kept = value[:MAX_KEPT_BYTES] if value is not None else None
    letter = DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=base64.b64encode(key[:MAX_KEPT_BYTES]).decode() if key is not None else None,
        value=base64.b64encode(kept).decode() if kept is not None else None,
        value_bytes=len(value) if value is not None else 0,
        error=error,
        component=component,
    )
    return key, to_json(letter)


def dead_letter_for(message: Message, error: str, component: str) -> tuple[bytes | None, bytes]:
    """`dead_letter` for a record read with confluent-kafka."""
    return dead_letter(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        error=error,
        component=component,
    )
