"""The transactions bench's arithmetic: percentiles of the times it takes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import transactions


def test_percentiles_are_the_median_and_the_values_nine_tenths_and_99_in_100_up() -> None:
    found = transactions.percentiles([float(n) for n in range(200, 0, -1)])  # 1..200, unsorted
    assert found == {"p50": 100.5, "p90": 181.0, "p99": 199.0}


def test_one_value_is_every_percentile() -> None:
    assert transactions.percentiles([3.14159]) == {"p50": 3.14, "p90": 3.14, "p99": 3.14}
