"""`Deadline`: a call that outlives its deadline is given up on, and calls go on."""

from __future__ import annotations

import threading

import pytest

from processor.kafka.deadline import Deadline, DeadlineExceeded


def test_a_call_returns_its_value_and_raises_its_error() -> None:
    calls = Deadline("t")
    assert calls.call(5, lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(KeyError, match="missing"):
        calls.call(5, {}.__getitem__, "missing")
    assert calls.abandoned == 0


def test_a_stuck_call_is_abandoned_and_the_next_call_runs_on_a_new_helper() -> None:
    calls = Deadline("t")
    release = threading.Event()
    stuck: list[threading.Thread] = []

    def hang() -> None:
        stuck.append(threading.current_thread())
        release.wait(30)

    with pytest.raises(DeadlineExceeded, match=r"hang did not return within 0\.2 s"):
        calls.call(0.2, hang)
    assert calls.abandoned == 1
    # A new call is not queued behind the stuck one: it runs on another helper.
    helper = calls.call(5, threading.current_thread)
    assert helper is not stuck[0] and helper.daemon and stuck[0].daemon
    # Once its call returns, the abandoned helper ends.
    release.set()
    stuck[0].join(5)
    assert not stuck[0].is_alive()
    assert calls.call(5, threading.current_thread) is helper


def test_a_submitted_call_runs_while_the_caller_goes_on_and_is_waited_for_later() -> None:
    """How a loop's commit overlaps the handling of its next batch."""
    calls = Deadline("t")
    started, release = threading.Event(), threading.Event()

    def commit() -> str:
        started.set()
        release.wait(5)
        return "committed"

    future = calls.submit(commit)
    assert started.wait(5)  # running on the helper; the caller is free meanwhile
    assert not future.done()
    release.set()
    assert calls.wait(future, 5, "commit") == "committed"


def test_a_submitted_call_that_outlives_its_wait_is_abandoned() -> None:
    calls = Deadline("t")
    release = threading.Event()
    future = calls.submit(release.wait, 30)
    with pytest.raises(DeadlineExceeded, match=r"commit did not return within 0\.1 s"):
        calls.wait(future, 0.1, "commit")
    assert calls.abandoned == 1
    assert calls.call(5, lambda: 7) == 7  # on a new helper
    release.set()
