"""Durations as users write them in trigger files: `30s`, `5m`, `1.5h`, `2d`, `250ms`."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration; ValueError with an example when it is not one."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit: 30s, 5m, 2h, 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]
