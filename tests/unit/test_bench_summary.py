"""The event-path bench's arithmetic: rows from rounds, and the latency split at the fire."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import event_path


def row(rate: float) -> dict[str, object]:
    return {"throughput_events_per_s": rate, "latency_ms": {"p50": rate / 1000}}


def test_each_row_is_its_median_round_and_its_ratio_the_median_of_same_round_ratios() -> None:
    found = event_path.summarize(
        {
            "passthrough": [row(100.0), row(400.0), row(200.0)],
            "triggers": [row(50.0), row(40.0), row(80.0)],
        }
    )
    assert found["passthrough"]["throughput_events_per_s"] == 200.0
    assert found["passthrough"]["rounds_events_per_s"] == [100.0, 400.0, 200.0]
    assert found["triggers"]["throughput_events_per_s"] == 50.0
    assert found["triggers"]["latency_ms"] == {"p50": 0.05}  # the median round's, whole
    # 50/100, 40/400, 80/200: the ratio of each round to the passthrough of that round
    assert found["triggers"]["rounds_vs_passthrough"] == [0.5, 0.1, 0.4]
    assert found["triggers"]["throughput_vs_passthrough"] == 0.4


def test_one_round_has_no_round_lists_and_no_passthrough_no_ratio() -> None:
    found = event_path.summarize({"triggers": [row(10.0)]})
    assert found == {"triggers": row(10.0)}


def test_latency_splits_at_the_fire_for_commands_whose_fire_was_seen() -> None:
    sent = {"a": 1.000, "b": 2.000, "c": 3.000}
    commands = [
        (1.100, {"cause": {"event_id": "a"}}),
        (2.300, {"cause": {"event_id": "b"}}),
        (3.500, {"cause": {"event_id": "c"}}),  # its fire was not read: left out
    ]
    found = event_path.stages(sent, commands, {"a": 1.040, "b": 2.100})
    assert found["samples"] == 2
    assert found["event_to_fire_ms"]["p50"] == 70.0  # 40 and 100 ms
    assert found["fire_to_command_ms"]["p50"] == 130.0  # 60 and 200 ms


def test_cpu_is_read_from_proc_and_averaged_over_the_interval() -> None:
    assert event_path._process_seconds(os.getpid()) > 0
    assert event_path._process_seconds(2**22 + 1) == 0.0  # no such process
    assert event_path._descendants(os.getpid())[0] == os.getpid()
    before = {"at": 10.0, "contender": 1.0, "machine": 2.0}
    after = {"at": 12.0, "contender": 3.0, "machine": 5.0}
    found = event_path.cpu_cores(before, after)
    assert found["contender"] == 1.0 and found["machine"] == 1.5


def test_percentiles_add_the_ones_asked_for_by_nearest_rank_as_p99() -> None:
    found = event_path.percentiles([float(n) for n in range(200, 0, -1)], also=(90,))
    assert (found["p50"], found["p90"], found["p99"]) == (100.5, 180.0, 198.0)


def test_one_value_is_every_percentile() -> None:
    found = event_path.percentiles([3.14159], also=(90,))
    assert (found["p50"], found["p90"], found["p99"]) == (3.14, 3.14, 3.14)
