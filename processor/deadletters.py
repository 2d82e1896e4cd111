"""Dead letters: a record the product cannot use is kept, with where it came from and why,
whole (value, key and headers, up to `MAX_KEPT_BYTES`), so that once the definition or the
producer is fixed it can be sent back where it came from, byte for byte (`redrive`).

    source topic ──(rejected)──► trigger-dead-letters  [letter p:o]
         ▲                              │
         └──── redrive(p:o) ────────────┴─► marker "redrive:p:o" on the letter's partition
               (one transaction: the original record again, and the marker)

A letter's id is its place on `trigger-dead-letters` (`partition:offset`). A redriven
letter is marked by a record on the same partition after it, so it is never redriven
twice; the copy on the source topic carries the header `triggers-redriven-from`.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaException, Message, Producer

from processor import topics
from processor.config import Settings
from processor.errors import KafkaUnavailable, TriggersError
from processor.matching.decode import Headers, header_pairs
from processor.messages import FIRE_MAX_BYTES, DeadLetter, utcnow
from processor.metrics import DEAD_LETTERS
from processor.serde import from_json, to_json

MAX_KEPT_BYTES = 3 * 1024 * 1024
"""A dead letter keeps the record's value (and key) up to this much: every record of
`events` (2 MiB at most) whole; `value_bytes` tells the full size of anything larger."""
MARKER_HEADER = "triggers-redrive"
"""Marks a record on `trigger-dead-letters` that says a letter was redriven."""
REDRIVEN_FROM = "triggers-redriven-from"
"""On the redriven copy: the dead letter it came from (`topic/partition:offset`)."""


def oversized_fire(
    fires_topic: str, trigger_id: str, value: bytes, component: str
) -> tuple[str, bytes | None, bytes]:
    """A fire over FIRE_MAX_BYTES, which the broker could refuse (and a transaction with
    it, at every try): the reason, and the letter holding the fire whole, redrivable to
    `trigger-fires` once that topic takes records this large."""
    reason = (
        f"the fire of trigger {trigger_id!r} is {len(value):,} bytes, over the "
        f"{FIRE_MAX_BYTES:,} a fire may take (the broker's limit on a record): not sent. "
        "Its input holds the trigger's agent.input, its input_mapping's values and what "
        "fired it: make those smaller"
    )
    key, letter = dead_letter(
        topic=fires_topic,
        partition=0,
        offset=-1,
        key=trigger_id.encode(),
        value=value,
        error=reason,
        component=component,
    )
    return reason, key, letter


class NotRedrivable(TriggersError):
    """A letter that cannot be redriven: unknown, already redriven, or not whole."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: str,
    component: str,
    headers: Headers | None = None,
) -> tuple[bytes | None, bytes]:
    """The (key, value) to write to `trigger-dead-letters` for a rejected record."""
    DEAD_LETTERS.labels(component).inc()
    kept = value[:MAX_KEPT_BYTES] if value is not None else None
    letter = DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=_b64(key[:MAX_KEPT_BYTES]) if key is not None else None,
        value=_b64(kept),
        value_bytes=len(value) if value is not None else 0,
        headers=[(name, _b64(data)) for name, data in headers] if headers else None,
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
        headers=header_pairs(message.headers()),
    )


def decoded(data: str | None) -> bytes | None:
    if data is None:
        return None
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return None


def is_marker(message: Message) -> bool:
    return any(header[0] == MARKER_HEADER for header in message.headers() or [])


def letter_id(message: Message) -> str:
    return f"{message.partition()}:{message.offset()}"


def marked(messages: list[Message]) -> set[str]:
    """The ids of letters redriven, from the markers among `messages`."""
    found = set()
    for message in messages:
        if is_marker(message):
            found.add(orjson.loads(message.value() or b"{}").get("redriven", ""))
    return found


def latest_letters(
    settings: Settings, per_partition: int = 500
) -> list[tuple[str, DeadLetter, bool]]:
    """The last letters of each partition of `trigger-dead-letters`, newest first: each
    with its id and whether it was redriven (markers left out)."""
    from processor.kafka.reader import read_tail

    messages = read_tail(settings, topics.topic_name(topics.DEAD_LETTERS, settings), per_partition)
    redriven = marked(messages)
    letters = []
    for message in messages:
        if is_marker(message):
            continue
        try:
            letter = from_json(DeadLetter, message.value() or b"")
        except ValueError:
            continue
        letters.append((letter_id(message), letter, letter_id(message) in redriven))
    letters.sort(key=lambda found: found[1].at, reverse=True)
    return letters


@dataclass(frozen=True)
class Redriven:
    letter: str
    topic: str
    partition: int


def parse_letter_id(text: str) -> tuple[int, int]:
    partition, _, offset = text.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise NotRedrivable(404, f"{text!r} is not a dead letter id (partition:offset)")
    return int(partition), int(offset)


def read_letter(settings: Settings, text: str) -> tuple[DeadLetter, bool]:
    """The letter with this id, and whether it was redriven already (a marker after it,
    on its partition)."""
    from processor.kafka.reader import read_to_end, topic_partitions

    partition, offset = parse_letter_id(text)
    topic = topics.topic_name(topics.DEAD_LETTERS, settings)
    known = topic_partitions(settings, topic)
    if partition not in known:  # reading it would wait for a partition that never comes
        raise NotRedrivable(
            404, f"no dead letter {text}: {topic} has partitions {known[0]} to {known[-1]}"
        )
    from_it = read_to_end(settings, topic, [partition], start=lambda _, low, high: offset)
    first = next(from_it, None)
    if first is None or first.offset() != offset or is_marker(first):
        raise NotRedrivable(404, f"no dead letter {text}")
    letter = from_json(DeadLetter, first.value() or b"")
    return letter, text in marked(list(from_it))


def redrive(settings: Settings, text: str, requested_by: str) -> Redriven:
    """Send the letter's original record back to its source topic (same partition, key,
    value and headers, plus `triggers-redriven-from`) and mark the letter, in one
    transaction. Refused (409) if it was redriven already or was not kept whole."""
    from processor.kafka.clients import new_producer

    letter, redriven = read_letter(settings, text)
    if redriven:
        raise NotRedrivable(409, f"dead letter {text} was redriven already")
    if letter.value is not None and len(decoded(letter.value) or b"") < letter.value_bytes:
        raise NotRedrivable(
            409,
            f"dead letter {text} kept only the first {MAX_KEPT_BYTES} of its "
            f"{letter.value_bytes} bytes; it cannot be sent again whole",
        )
    dead_letters = topics.topic_name(topics.DEAD_LETTERS, settings)
    partition, _ = parse_letter_id(text)
    headers: list[tuple[str, Any]] = [(name, decoded(data)) for name, data in letter.headers or []]
    headers.append((REDRIVEN_FROM, f"{dead_letters}/{text}".encode()))
    marker = {"redriven": text, "to": letter.topic, "by": requested_by, "at": utcnow().isoformat()}
    producer: Producer = new_producer(
        settings,
        **{
            # One id per letter: two redrives of it at once fence each other.
            "transactional.id": f"{settings.app_id}-redrive-{text}",
            "transaction.timeout.ms": 30_000,
            "client.id": f"redrive-{socket.gethostname()}-{os.getpid()}",
        },
    )
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(
            letter.topic,
            key=decoded(letter.key),
            value=decoded(letter.value),
            headers=headers,
            partition=letter.partition,
        )
        producer.produce(
            dead_letters,
            key=f"redrive:{text}".encode(),
            value=orjson.dumps(marker),
            headers=[(MARKER_HEADER, b"1")],
            partition=partition,
        )
        producer.commit_transaction(30)
    except KafkaException as exc:
        raise KafkaUnavailable(f"redriving dead letter {text}: {exc.args[0]}") from None
    return Redriven(text, letter.topic, letter.partition)
