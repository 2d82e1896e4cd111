"""bench/hot_path.py's options: a turn handed to the matcher in chunks is the same work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import hot_path  # noqa: E402


def test_a_turn_handed_over_in_chunks_fires_as_handed_over_whole() -> None:
    whole = hot_path.run(3000, 0, None)
    chunked = hot_path.run(3000, 0, None, chunk=7, pause=0.0001)
    assert whole["fires"] > 0
    assert (chunked["fires"], chunked["commands"]) == (whole["fires"], whole["commands"])


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--chunk", "0"], "--chunk must be between 1 and 2000"),
        (["--chunk", "2001"], "--chunk must be between 1 and 2000"),
        (["--pause-ms", "-1"], "--pause-ms must be 0 or more"),
    ],
)
def test_an_option_out_of_range_is_refused_before_any_work(option: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "hot_path.py"), *option],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert said in done.stderr
