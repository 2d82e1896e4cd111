"""Dead letters keep a rejected record whole, so it can be sent back byte for byte."""

from __future__ import annotations

import pytest

from processor.deadletters import (
    MAX_KEPT_BYTES,
    NotRedrivable,
    dead_letter,
    decoded,
    parse_letter_id,
)
from processor.messages import DeadLetter
from processor.serde import from_json


def test_a_letter_keeps_the_value_key_and_headers_whole() -> None:
    value = b"\x00\xff" + b"x" * 200_000  # far beyond the old 64 KiB cap, and not UTF-8
    _, written = dead_letter(
        topic="events",
        partition=2,
        offset=9,
        key=b"k",
        value=value,
        error="bad",
        component="event-matcher",
        headers=[("trace", b"\x01\x02"), ("none", None)],
    )
    letter = from_json(DeadLetter, written)
    assert decoded(letter.value) == value and letter.value_bytes == len(value)
    assert decoded(letter.key) == b"k"
    assert [(n, decoded(d)) for n, d in letter.headers or []] == [
        ("trace", b"\x01\x02"),
        ("none", None),
    ]


def test_a_record_beyond_the_limit_keeps_its_start_and_says_its_size() -> None:
    value = b"y" * (MAX_KEPT_BYTES + 10)
    _, written = dead_letter(
        topic="t", partition=0, offset=0, key=None, value=value, error="e", component="c"
    )
    letter = from_json(DeadLetter, written)
    assert len(decoded(letter.value) or b"") == MAX_KEPT_BYTES
    assert letter.value_bytes == len(value)


@pytest.mark.parametrize("text", ["", "3", "a:1", "1:", ":2", "-1:2"])
def test_a_letter_id_is_partition_colon_offset(text: str) -> None:
    with pytest.raises(NotRedrivable, match="not a dead letter id"):
        parse_letter_id(text)
    assert parse_letter_id("3:17") == (3, 17)
