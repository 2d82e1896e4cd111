"""Logging for every component: one line per record, to stderr."""

from __future__ import annotations

import logging
import sys


def configure(level: str, component: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s",
        force=True,
    )
