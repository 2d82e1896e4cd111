"""Durations as users write them in trigger files: `30s`, `5m`, `1.5h`, `2d`, `250ms`."""

from __future__ import annotations

import re
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration; ValueError with an example when it is not one."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit: 30s, 5m, 2h, 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Duration(str):
    """A duration as written (`5m`), with its length in `seconds`.

    Parsed once, when a document is read: every later use reads `seconds`, and the text
    is what is stored, shown and sent back (it compares and prints as the text)."""

    seconds: float

    def __new__(cls, text: str) -> Duration:
        duration = super().__new__(cls, text)
        duration.seconds = parse_duration(text)
        return duration

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )
