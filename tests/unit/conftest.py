"""Unit tests see no TRIGGERS_* variables from the shell that runs them."""

from __future__ import annotations

import os

import pytest

from processor.config import get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRIGGERS_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
