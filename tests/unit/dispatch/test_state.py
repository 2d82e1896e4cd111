from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processor.definitions.model import (
    Backoff,
    CircuitBreakerSpec,
    ConcurrencySpec,
    OnFailure,
    OverlapPolicy,
    RetryOn,
    RetrySpec,
    ThrottleExcess,
    ThrottleSpec,
)
from processor.dispatch.state import (
    BUFFER_LIMIT,
    DEDUPE_HORIZON,
    FAILED_EVENT_TYPE,
    RECORD_MAX_BYTES,
    DispatchState,
    UnknownExecution,
    bounded,
    expire,
    on_cancel,
    on_fire,
    on_result,
    retry_delay,
)
from processor.messages import Cause, CauseKind, ExecutionStatus, Fire, RunResult, RunStatus
from processor.serde import from_json, from_json_keeping, to_json

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def fire(
    execution_id: str = "x-1",
    overlap: OverlapPolicy = OverlapPolicy.SKIP,
    max_concurrent: int = 1,
    **settings: object,
) -> Fire:
    return Fire(
        execution_id=execution_id,
        trigger_id="t-1",
        agent_id="a",
        workspace_id="default",
        max_concurrent=max_concurrent,
        overlap=overlap,
        fired_at=NOW,
        **{  # type: ignore[arg-type]
            "timeout_seconds": 60,
            "cause": Cause(type=CauseKind.MANUAL),
            "trigger_name": "T",
            "input": {"k": 1},
            **settings,
        },
    )


def result(status: RunStatus, execution_id: str = "x-1", **fields: object) -> RunResult:
    return RunResult(execution_id=execution_id, trigger_id="t-1", status=status, **fields)


def statuses(state: DispatchState) -> dict[str, str]:
    return {r.execution_id: r.status.value for r in state.executions("t-1")}


def test_a_fire_is_dispatched_once() -> None:
    state = DispatchState()
    effects = on_fire(state, fire(), NOW)
    assert effects is not None
    [command] = effects.commands
    assert command.deadline == NOW + timedelta(seconds=60)
    [record] = effects.records
    assert record.status is ExecutionStatus.PENDING and record.issued_at == NOW
    assert on_fire(state, fire(), NOW) is None


def test_pending_running_completed() -> None:
    state = DispatchState()
    on_fire(state, fire(), NOW)
    [running] = on_result(state, result(RunStatus.RUNNING, at=NOW), NOW).records
    assert running.status is ExecutionStatus.RUNNING and running.started_at == NOW
    later = NOW + timedelta(seconds=5)
    [done] = on_result(
        state, result(RunStatus.COMPLETED, output={"ok": 1}, at=later), later
    ).records
    assert done.status is ExecutionStatus.COMPLETED
    assert done.completed_at == later and done.started_at == NOW and done.output_data == {"ok": 1}


def test_completed_before_running_finishes_and_late_running_is_ignored() -> None:
    state = DispatchState()
    on_fire(state, fire(), NOW)
    [done] = on_result(state, result(RunStatus.FAILED, error="boom", at=NOW), NOW).records
    assert (
        done.status is ExecutionStatus.FAILED
        and done.error_message == "boom"
        and done.started_at == NOW
    )
    assert not on_result(state, result(RunStatus.RUNNING), NOW)
    assert not on_result(state, result(RunStatus.COMPLETED), NOW)


def read_bounded(raw: bytes, output_max_bytes: int = 1000) -> RunResult:
    return bounded(from_json(RunResult, raw), raw, output_max_bytes)


def test_a_result_within_its_bounds_is_kept_as_it_came() -> None:
    raw = to_json(result(RunStatus.COMPLETED, output={"a": "x" * 900}, error="e"))
    assert read_bounded(raw) == from_json(RunResult, raw)


def test_an_output_over_its_bound_or_nesting_too_deep_is_left_out_with_the_reason() -> None:
    large = read_bounded(to_json(result(RunStatus.COMPLETED, output={"a": "x" * 1000})))
    assert large.output is None
    assert large.output_left_out == (
        "1,008 bytes of JSON, over TRIGGERS_RESULT_OUTPUT_MAX_BYTES (1,000)"
    )
    deep = b'{"execution_id":"x-1","status":"completed","output":' + b"[" * 200 + b"]" * 200 + b"}"
    left_out = read_bounded(deep, output_max_bytes=10**6)
    assert left_out.output is None and "nests deeper than 128 levels" in str(
        left_out.output_left_out
    )
    # a long result whose output is small: the output stays
    wordy = to_json(result(RunStatus.COMPLETED, output=[1], error="y" * 2000))
    assert read_bounded(wordy).output == [1]


def test_a_long_error_is_cut_once_with_a_note_of_what_was_cut() -> None:
    cut = read_bounded(to_json(result(RunStatus.FAILED, error="e" * 20_000)))
    assert cut.error is not None and len(cut.error) <= 8192
    assert cut.error.endswith("... (11,856 more characters)")
    assert read_bounded(to_json(cut)) == cut  # read again (dispatch-results): the same


def test_a_finished_record_too_large_with_its_input_leaves_the_output_out() -> None:
    state = DispatchState()
    on_fire(state, fire(input={"body": "b" * 900_000}), NOW)
    fits = {"summary": "s" * 50_000}
    [kept] = on_result(state, result(RunStatus.COMPLETED, output=fits), NOW).records
    assert kept.output_data == fits
    on_fire(state, fire("x-2", overlap=OverlapPolicy.ALLOW_ALL, input={"b": "b" * 900_000}), NOW)
    over = {"summary": "s" * 200_000}
    effects = on_result(state, result(RunStatus.COMPLETED, "x-2", output=over), NOW)
    [record], [written] = effects.records, effects.encoded
    assert record.status is ExecutionStatus.COMPLETED and record.output_data is None
    assert "over the 1,000,000 a record may take" in str(record.output_left_out)
    assert len(written) < RECORD_MAX_BYTES


def test_results_for_unknown_executions_are_refused() -> None:
    state = DispatchState()
    with pytest.raises(UnknownExecution):
        on_result(state, result(RunStatus.COMPLETED, execution_id="nope"), NOW)
    with pytest.raises(UnknownExecution):
        on_result(state, RunResult(execution_id="x", status=RunStatus.COMPLETED), NOW)


def test_skip_records_skipped_with_the_reason() -> None:
    state = DispatchState()
    on_fire(state, fire("a"), NOW)
    effects = on_fire(state, fire("b"), NOW)
    assert effects is not None and effects.commands == []
    [skipped] = effects.records
    assert skipped.status is ExecutionStatus.SKIPPED and "overlap: skip" in (skipped.reason or "")


def test_buffer_one_keeps_the_newest_and_runs_it_when_a_slot_frees() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ONE), NOW)
    on_fire(state, fire("b", OverlapPolicy.BUFFER_ONE), NOW)
    on_fire(state, fire("c", OverlapPolicy.BUFFER_ONE), NOW + timedelta(seconds=1))
    assert statuses(state) == {"a": "pending", "b": "skipped", "c": "pending"}
    effects = on_result(state, result(RunStatus.COMPLETED, "a"), NOW)
    assert [c.execution_id for c in effects.commands] == ["c"]


def test_buffer_all_runs_them_in_order_and_is_bounded() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ALL), NOW)
    for i in range(BUFFER_LIMIT + 1):
        on_fire(state, fire(f"w{i:03d}", OverlapPolicy.BUFFER_ALL), NOW + timedelta(milliseconds=i))
    assert statuses(state)[f"w{BUFFER_LIMIT:03d}"] == "skipped"
    assert [
        c.execution_id for c in on_result(state, result(RunStatus.FAILED, "a"), NOW).commands
    ] == ["w000"]
    assert [
        c.execution_id for c in on_result(state, result(RunStatus.COMPLETED, "w000"), NOW).commands
    ] == ["w001"]


def test_cancel_other_cancels_the_oldest_and_starts_the_new_one() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.CANCEL_OTHER), NOW)
    effects = on_fire(state, fire("b", OverlapPolicy.CANCEL_OTHER), NOW)
    assert effects is not None
    assert [c.execution_id for c in effects.controls] == ["a"]
    assert [c.execution_id for c in effects.commands] == ["b"]
    assert statuses(state) == {"a": "cancelled", "b": "pending"}


def test_allow_all_and_max_concurrent() -> None:
    state = DispatchState()
    for name in "abc":
        on_fire(state, fire(name, OverlapPolicy.ALLOW_ALL), NOW)
    assert statuses(state) == {"a": "pending", "b": "pending", "c": "pending"}
    two = DispatchState()
    for name in "abc":
        on_fire(two, fire(name, max_concurrent=2), NOW)
    assert statuses(two) == {"a": "pending", "b": "pending", "c": "skipped"}


def test_timeout_marks_timed_out_sends_a_cancel_and_frees_the_slot() -> None:
    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ONE), NOW)
    on_fire(state, fire("b", OverlapPolicy.BUFFER_ONE), NOW)
    assert not expire(state, NOW + timedelta(seconds=59))
    effects = expire(state, NOW + timedelta(seconds=60))
    assert [c.execution_id for c in effects.controls] == ["a"]
    assert [c.execution_id for c in effects.commands] == ["b"]
    assert statuses(state)["a"] == "timed_out"
    assert not on_result(state, result(RunStatus.COMPLETED, "a"), NOW)  # too late


def test_timeouts_take_only_what_is_due_soonest_first_and_skip_finished_runs() -> None:
    state = DispatchState()
    for n, timeout in enumerate((90, 30, 60, 30)):
        on_fire(state, fire(f"e{n}", OverlapPolicy.ALLOW_ALL, timeout_seconds=timeout), NOW)
    on_result(state, result(RunStatus.COMPLETED, "e3"), NOW)  # finished: no timeout
    assert [r.execution_id for r in state.past_deadline(NOW + timedelta(seconds=60))] == [
        "e1",
        "e2",
    ]
    assert state.past_deadline(NOW + timedelta(seconds=60)) == []  # taken once
    timed_out = expire(state, NOW + timedelta(seconds=90))
    assert [c.execution_id for c in timed_out.controls] == ["e0"]


def test_finished_executions_are_forgotten_after_the_dedupe_horizon() -> None:
    state = DispatchState()
    on_fire(state, fire("a"), NOW)
    on_result(state, result(RunStatus.COMPLETED, "a"), NOW)
    assert not expire(state, NOW + DEDUPE_HORIZON - timedelta(seconds=1)).forgotten
    assert expire(state, NOW + DEDUPE_HORIZON).forgotten == [("t-1", "a")]
    assert state.get("t-1", "a") is None


def test_cancel_a_buffered_or_unstarted_execution_at_once_and_a_running_one_at_the_runtime() -> (
    None
):
    from processor.dispatch.state import on_cancel

    state = DispatchState()
    on_fire(state, fire("a", OverlapPolicy.BUFFER_ALL), NOW)
    on_fire(state, fire("b", OverlapPolicy.BUFFER_ALL), NOW)
    waiting = on_cancel(state, "t-1", "b", NOW)
    assert waiting.controls == [] and statuses(state)["b"] == "cancelled"
    on_result(state, result(RunStatus.RUNNING, "a"), NOW)
    running = on_cancel(state, "t-1", "a", NOW)
    assert [c.execution_id for c in running.controls] == ["a"] and statuses(state)["a"] == "running"
    on_result(state, result(RunStatus.CANCELLED, "a"), NOW)
    assert statuses(state)["a"] == "cancelled"
    assert not on_cancel(state, "t-1", "a", NOW)
    on_fire(state, fire("c"), NOW)
    unstarted = on_cancel(state, "t-1", "c", NOW)
    assert [c.execution_id for c in unstarted.controls] == ["c"] and statuses(state)[
        "c"
    ] == "cancelled"
    with pytest.raises(UnknownExecution):
        on_cancel(state, "t-1", "nope", NOW)


def throttle(limit: int, excess: ThrottleExcess, period: str = "1m") -> ThrottleSpec:
    return ThrottleSpec(limit=limit, period=period, excess=excess)


def test_throttle_drop_skips_the_excess_with_the_reason_and_slides() -> None:
    state = DispatchState()
    spec = throttle(2, ThrottleExcess.DROP)
    for n, at in enumerate([NOW, NOW + timedelta(seconds=10), NOW + timedelta(seconds=20)]):
        on_fire(state, fire(f"e{n}", OverlapPolicy.ALLOW_ALL, throttle=spec), at)
    assert statuses(state) == {"e0": "pending", "e1": "pending", "e2": "skipped"}
    reason = state.get("t-1", "e2").reason  # type: ignore[union-attr]
    assert reason is not None and "2 runs per 1m" in reason and "10:01:00" in reason
    # a minute after the first start there is room for one more, not two
    later = NOW + timedelta(seconds=60)
    on_fire(state, fire("e3", OverlapPolicy.ALLOW_ALL, throttle=spec), later)
    on_fire(state, fire("e4", OverlapPolicy.ALLOW_ALL, throttle=spec), later)
    assert statuses(state)["e3"] == "pending" and statuses(state)["e4"] == "skipped"


def test_throttle_per_key_counts_each_key_on_its_own() -> None:
    state = DispatchState()
    spec = ThrottleSpec(limit=1, period="1h", key="$.customer")
    for n, key in enumerate(["a", "b", "a"]):
        on_fire(
            state,
            fire(f"e{n}", OverlapPolicy.ALLOW_ALL, throttle=spec, throttle_key=key),
            NOW,
        )
    assert statuses(state) == {"e0": "pending", "e1": "pending", "e2": "skipped"}


def test_throttle_queue_waits_and_starts_in_order_when_the_period_allows() -> None:
    state = DispatchState()
    spec = throttle(1, ThrottleExcess.QUEUE, period="10s")
    for n in range(3):
        on_fire(state, fire(f"e{n}", OverlapPolicy.ALLOW_ALL, throttle=spec), NOW)
    assert statuses(state) == {"e0": "pending", "e1": "pending", "e2": "pending"}
    assert [r.execution_id for r in state.buffered("t-1")] == ["e1", "e2"]
    assert not expire(state, NOW + timedelta(seconds=9)).commands
    assert [c.execution_id for c in expire(state, NOW + timedelta(seconds=10)).commands] == ["e1"]
    assert [c.execution_id for c in expire(state, NOW + timedelta(seconds=20)).commands] == ["e2"]


def test_throttle_queue_is_bounded() -> None:
    state = DispatchState()
    spec = throttle(1, ThrottleExcess.QUEUE)
    for n in range(BUFFER_LIMIT + 2):
        on_fire(state, fire(f"e{n}", OverlapPolicy.ALLOW_ALL, throttle=spec), NOW)
    assert len(state.buffered("t-1")) == BUFFER_LIMIT
    last = state.get("t-1", f"e{BUFFER_LIMIT + 1}")
    assert last is not None and last.status is ExecutionStatus.SKIPPED


def test_throttle_survives_a_restore_from_the_records() -> None:
    state = DispatchState()
    spec = throttle(1, ThrottleExcess.DROP)
    effects = on_fire(state, fire("e0", throttle=spec), NOW)
    assert effects is not None
    restored = DispatchState()
    for record in effects.records:
        restored.put(record)
    on_fire(restored, fire("e1", throttle=spec), NOW + timedelta(seconds=1))
    assert restored.get("t-1", "e1").status is ExecutionStatus.SKIPPED  # type: ignore[union-attr]


def test_only_throttled_runs_keep_their_start_times() -> None:
    """An unthrottled trigger's runs leave nothing in the throttle's index (it grew by
    one time per run for as long as the process lived); a throttle added by an edit
    counts the runs started from then on."""
    state = DispatchState()
    for n in range(3):
        on_fire(state, fire(f"u{n}", OverlapPolicy.ALLOW_ALL), NOW)
    assert state.started_after("t-1", None, 0) == []
    spec = throttle(1, ThrottleExcess.DROP)
    on_fire(state, fire("t0", OverlapPolicy.ALLOW_ALL, throttle=spec), NOW)
    on_fire(state, fire("t1", OverlapPolicy.ALLOW_ALL, throttle=spec), NOW)
    assert len(state.started_after("t-1", None, 0)) == 1
    assert statuses(state) == {
        "u0": "pending",
        "u1": "pending",
        "u2": "pending",
        "t0": "pending",
        "t1": "skipped",
    }


def test_circuit_breaker_opens_after_consecutive_failures_then_half_opens() -> None:
    state = DispatchState()
    spec = CircuitBreakerSpec(failures=2, cooldown="1m")

    def run(name: str, status: RunStatus, at: datetime) -> None:
        on_fire(state, fire(name, circuit_breaker=spec), at)
        on_result(state, result(status, name), at)

    run("ok", RunStatus.COMPLETED, NOW)
    run("f1", RunStatus.FAILED, NOW)
    run("f2", RunStatus.FAILED, NOW)
    stopping = on_fire(state, fire("stopped", circuit_breaker=spec), NOW + timedelta(seconds=59))
    assert stopping is not None and stopping.breaker_stops == 1  # counted for the metric
    stopped = state.get("t-1", "stopped")
    assert stopped is not None and stopped.status is ExecutionStatus.SKIPPED
    assert stopped.reason is not None and "2 consecutive failed" in stopped.reason
    # after the cooldown one trial run goes through; others wait for its outcome
    trial_at = NOW + timedelta(seconds=60)
    on_fire(state, fire("trial", OverlapPolicy.ALLOW_ALL, circuit_breaker=spec), trial_at)
    on_fire(state, fire("meanwhile", OverlapPolicy.ALLOW_ALL, circuit_breaker=spec), trial_at)
    assert statuses(state)["trial"] == "pending" and statuses(state)["meanwhile"] == "skipped"
    on_result(state, result(RunStatus.FAILED, "trial"), trial_at)
    on_fire(state, fire("reopened", circuit_breaker=spec), trial_at + timedelta(seconds=30))
    assert statuses(state)["reopened"] == "skipped"
    run("retrial", RunStatus.COMPLETED, trial_at + timedelta(seconds=60))
    run("closed", RunStatus.FAILED, trial_at + timedelta(seconds=61))
    assert statuses(state)["closed"] == "failed"  # one failure after a success: still closed


def test_timeouts_count_as_failures_and_cancels_do_not() -> None:
    state = DispatchState()
    spec = CircuitBreakerSpec(failures=2, cooldown="1h")
    on_fire(state, fire("t1", circuit_breaker=spec), NOW)
    expire(state, NOW + timedelta(seconds=60))
    on_fire(state, fire("c1", circuit_breaker=spec), NOW + timedelta(seconds=61))
    on_result(state, result(RunStatus.CANCELLED, "c1"), NOW + timedelta(seconds=61))
    on_fire(state, fire("t2", circuit_breaker=spec), NOW + timedelta(seconds=62))
    expire(state, NOW + timedelta(seconds=122))
    on_fire(state, fire("after", circuit_breaker=spec), NOW + timedelta(seconds=123))
    assert statuses(state)["after"] == "skipped"


def test_buffered_fires_are_skipped_once_the_breaker_opens() -> None:
    state = DispatchState()
    spec = CircuitBreakerSpec(failures=1, cooldown="1h")
    for name in ("a", "b"):
        on_fire(state, fire(name, OverlapPolicy.BUFFER_ALL, circuit_breaker=spec), NOW)
    effects = on_result(state, result(RunStatus.FAILED, "a"), NOW)
    assert not effects.commands and statuses(state) == {"a": "failed", "b": "skipped"}


def test_the_running_count_follows_every_change_without_sorting() -> None:
    state = DispatchState()
    for n in range(4):
        on_fire(state, fire(f"x-{n}", OverlapPolicy.BUFFER_ALL, max_concurrent=2), NOW)
    assert state.active_count("t-1") == len(state.active("t-1")) == 2
    on_result(state, result(RunStatus.COMPLETED, "x-0"), NOW)  # x-2 takes its slot
    assert state.active_count("t-1") == len(state.active("t-1")) == 2
    for n in (1, 2, 3):
        on_result(state, result(RunStatus.FAILED, f"x-{n}"), NOW)
    assert state.active_count("t-1") == len(state.active("t-1")) == 0
    state.drop_trigger_ids()
    assert state.active_count("t-1") == 0


# -- retries ---------------------------------------------------------------------------


def retry(attempts: int = 3, **fields: object) -> RetrySpec:
    return RetrySpec.model_validate(
        {"attempts": attempts, "initial": "10s", "max": "1m", "jitter": False, **fields}
    )


def test_retry_delays_grow_exponentially_up_to_max_and_jitter_stays_in_its_half() -> None:
    spec = retry()
    assert [retry_delay(spec, "x", n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert retry_delay(retry(backoff=Backoff.FIXED), "x", 4) == 10
    jittered = retry(jitter=True)
    delays = [retry_delay(jittered, f"x-{n}", 2) for n in range(50)]
    assert all(10 <= d <= 20 for d in delays) and len(set(delays)) > 40
    assert retry_delay(jittered, "x-1", 2) == retry_delay(jittered, "x-1", 2)
    assert retry_delay(retry(attempts=100), "x", 99) == 60  # no overflow


def test_a_failed_attempt_is_retried_as_the_same_execution_after_its_backoff() -> None:
    state = DispatchState()
    on_fire(state, fire(retry=retry()), NOW)
    waiting = on_result(state, result(RunStatus.FAILED, error="boom", attempt=1), NOW)
    [record] = waiting.records
    assert not waiting.commands
    assert record.status is ExecutionStatus.PENDING and record.attempt == 2
    assert record.retry_at == NOW + timedelta(seconds=10)
    assert record.error_message == "failed: boom" and "attempt 2 of 3" in (record.reason or "")
    assert not expire(state, NOW + timedelta(seconds=9)).commands
    [command] = expire(state, NOW + timedelta(seconds=10)).commands
    assert command.execution_id == "x-1" and command.attempt == 2
    assert command.deadline == NOW + timedelta(seconds=70)
    assert not expire(state, NOW + timedelta(seconds=11)).commands  # issued once


def test_attempts_run_out_then_failed_for_good_and_one_failure_event() -> None:
    state = DispatchState()
    on_fire(state, fire(retry=retry(attempts=2), on_failure=OnFailure.EMIT), NOW)
    on_result(state, result(RunStatus.FAILED, error="one", attempt=1), NOW)
    expire(state, NOW + timedelta(seconds=10))
    # a late report of attempt 1 changes nothing
    late = on_result(state, result(RunStatus.COMPLETED, attempt=1), NOW + timedelta(seconds=11))
    assert not late
    final = on_result(
        state, result(RunStatus.FAILED, error="two", attempt=2), NOW + timedelta(seconds=12)
    )
    [record] = final.records
    assert record.status is ExecutionStatus.FAILED and record.attempt == 2
    assert record.error_message == "two"
    [event] = final.events
    assert event.type == FAILED_EVENT_TYPE and event.id == "x-1"
    assert event.source == "/triggers/t-1" and event.workspace_id == "default"
    assert event.data["attempts"] == 2 and event.data["error"] == "two"
    assert event.data["status"] == "failed" and event.data["execution_id"] == "x-1"


def test_no_failure_event_without_emit_nor_for_an_execution_a_failure_event_started() -> None:
    state = DispatchState()
    on_fire(state, fire("plain"), NOW)
    assert not on_result(state, result(RunStatus.FAILED, "plain"), NOW).events
    handler = fire(
        "handler",
        on_failure=OnFailure.EMIT,
        cause=Cause(type=CauseKind.EVENT, event_type=FAILED_EVENT_TYPE),
    )
    on_fire(state, handler, NOW)
    assert not on_result(state, result(RunStatus.FAILED, "handler"), NOW).events
    on_fire(state, fire("emits", OverlapPolicy.ALLOW_ALL, on_failure=OnFailure.EMIT), NOW)
    assert on_result(state, result(RunStatus.FAILED, "emits"), NOW).events


def test_a_timeout_is_retried_when_retry_on_says_so_and_the_runtime_is_told_to_cancel() -> None:
    state = DispatchState()
    on_fire(state, fire("t", retry=retry(on=[RetryOn.TIMED_OUT])), NOW)
    timed_out = expire(state, NOW + timedelta(seconds=60))
    [control] = timed_out.controls
    assert control.execution_id == "t"
    assert statuses(state) == {"t": "pending"} and state.get("t-1", "t").attempt == 2  # type: ignore[union-attr]
    [command] = expire(state, NOW + timedelta(seconds=70)).commands
    assert command.attempt == 2
    # failed is not in `on`: a failed attempt is final
    on_result(state, result(RunStatus.FAILED, "t", attempt=2), NOW + timedelta(seconds=71))
    assert statuses(state) == {"t": "failed"}


def test_a_waiting_retry_keeps_its_slot_can_be_cancelled_and_counts_once_for_the_breaker() -> None:
    state = DispatchState()
    breaker = CircuitBreakerSpec(failures=2, cooldown="1m")
    on_fire(state, fire("a", retry=retry(), circuit_breaker=breaker), NOW)
    on_result(state, result(RunStatus.FAILED, "a", attempt=1), NOW)
    on_result(state, result(RunStatus.FAILED, "a", attempt=1), NOW)  # a repeated report
    assert state.breakers.get("t-1") is None  # attempts are not executions
    skipped = on_fire(state, fire("b"), NOW)  # max_concurrent 1: a's retry holds the slot
    assert skipped is not None and statuses(state)["b"] == "skipped"
    cancelled = on_cancel(state, "t-1", "a", NOW)
    assert not cancelled.controls  # nothing runs at the runtime while it waits
    assert statuses(state)["a"] == "cancelled"
    assert not expire(state, NOW + timedelta(seconds=30)).commands


def test_a_waiting_retry_survives_a_restore_from_the_records() -> None:
    state = DispatchState()
    records = []
    for effects in (
        on_fire(state, fire(retry=retry()), NOW),
        on_result(state, result(RunStatus.FAILED, attempt=1), NOW),
    ):
        assert effects is not None
        records += effects.records
    restored = DispatchState()
    for record in records:
        restored.put(record)
    assert not expire(restored, NOW + timedelta(seconds=5)).commands
    [command] = expire(restored, NOW + timedelta(seconds=10)).commands
    assert command.attempt == 2
    assert not expire(restored, NOW + timedelta(seconds=20)).commands


def test_retry_policies_refuse_what_cannot_work() -> None:
    from pydantic import ValidationError

    for bad, says in (
        ({"attempts": 0}, "greater than or equal to 1"),
        ({"attempts": 3, "initial": "soon"}, "not a duration"),
        ({"attempts": 3, "initial": "1m", "max": "10s"}, "shorter than initial"),
        ({"attempts": 3, "on": ["cancelled"]}, "failed"),
        ({"attempts": 3, "backoff": "random"}, "exponential"),
    ):
        with pytest.raises(ValidationError, match=says):
            RetrySpec.model_validate(bad)


# -- per-key concurrency ---------------------------------------------------------------


def keyed(name: str, customer: str, **settings: object) -> Fire:
    return fire(
        name,
        max_concurrent=settings.pop("max_concurrent", 10),  # type: ignore[arg-type]
        concurrency=ConcurrencySpec(limit=1, key="$.customer"),
        concurrency_key=customer,
        **settings,
    )


def test_one_run_per_key_while_other_keys_go_on() -> None:
    state = DispatchState()
    for name, customer in (("a1", "acme"), ("a2", "acme"), ("b1", "beta")):
        on_fire(state, keyed(name, customer), NOW)
    assert statuses(state) == {"a1": "pending", "a2": "skipped", "b1": "pending"}
    reason = state.get("t-1", "a2").reason  # type: ignore[union-attr]
    assert reason is not None and "concurrency.limit (1)" in reason and "'acme'" in reason
    on_result(state, result(RunStatus.COMPLETED, "a1"), NOW)
    on_fire(state, keyed("a3", "acme"), NOW)
    assert statuses(state)["a3"] == "pending"


def test_a_buffered_key_waits_for_its_own_slot_and_does_not_hold_up_other_keys() -> None:
    state = DispatchState()
    policy = {"overlap": OverlapPolicy.BUFFER_ALL, "max_concurrent": 2}
    on_fire(state, keyed("a1", "acme", **policy), NOW)
    on_fire(state, keyed("a2", "acme", **policy), NOW)  # waits for acme
    on_fire(state, keyed("b1", "beta", **policy), NOW)  # goes: beta is free, 2 slots
    assert statuses(state) == {"a1": "pending", "a2": "pending", "b1": "pending"}
    assert state.get("t-1", "a2").issued_at is None  # type: ignore[union-attr]
    released = on_result(state, result(RunStatus.COMPLETED, "b1"), NOW)
    assert not released.commands  # beta's slot freed, but acme still runs a1
    on_fire(state, keyed("c1", "gamma", **policy), NOW)
    assert state.get("t-1", "c1").issued_at == NOW  # type: ignore[union-attr]
    [command] = on_result(state, result(RunStatus.COMPLETED, "a1"), NOW).commands
    assert command.execution_id == "a2"


def test_both_limits_hold_and_cancel_other_cancels_within_the_key() -> None:
    state = DispatchState()
    on_fire(state, keyed("a1", "acme", max_concurrent=2), NOW)
    on_fire(state, keyed("b1", "beta", max_concurrent=2), NOW)
    on_fire(state, keyed("c1", "gamma", max_concurrent=2), NOW)  # the trigger's 2 are taken
    reason = state.get("t-1", "c1").reason  # type: ignore[union-attr]
    assert statuses(state)["c1"] == "skipped" and "max_concurrent (2)" in (reason or "")
    cancel = {"overlap": OverlapPolicy.CANCEL_OTHER, "max_concurrent": 2}
    state = DispatchState()
    on_fire(state, keyed("a1", "acme", **cancel), NOW)
    on_fire(state, keyed("b1", "beta", **cancel), NOW + timedelta(seconds=1))
    effects = on_fire(state, keyed("b2", "beta", **cancel), NOW + timedelta(seconds=2))
    assert effects is not None and [c.execution_id for c in effects.controls] == ["b1"]
    assert statuses(state) == {"a1": "pending", "b1": "cancelled", "b2": "pending"}


def test_buffer_one_keeps_the_newest_waiting_fire_of_each_key() -> None:
    state = DispatchState()
    one = {"overlap": OverlapPolicy.BUFFER_ONE}
    for name, customer in (("a1", "acme"), ("b1", "beta"), ("a2", "acme"), ("b2", "beta")):
        on_fire(state, keyed(name, customer, **one), NOW)
    on_fire(state, keyed("a3", "acme", **one), NOW)
    assert statuses(state) == {
        "a1": "pending",
        "b1": "pending",
        "a2": "skipped",
        "b2": "pending",
        "a3": "pending",
    }


_WRITTEN_SETTINGS: list[dict[str, object]] = [
    {},
    {"overlap": OverlapPolicy.ALLOW_ALL},
    {"circuit_breaker": CircuitBreakerSpec(failures=3)},
    {
        "retry": RetrySpec(attempts=3, backoff=Backoff.EXPONENTIAL, on=[RetryOn.FAILED]),
        "on_failure": OnFailure.EMIT,
    },
    {"concurrency": ConcurrencySpec(limit=2, key="$.k"), "concurrency_key": "1"},
    {"throttle_key": "k"},
    {"cause": Cause(type=CauseKind.EVENT, event_id="e", event_type="t", count=5, group="g")},
    {"input": {"event": {"data": {"nested": [1, 2.5, None, "x"]}}, "n": 10**18}},
    {"trigger_name": ""},
]


@pytest.mark.parametrize("settings", _WRITTEN_SETTINGS)
def test_a_fire_issued_at_once_is_written_as_the_models_write_it(
    settings: dict[str, object],
) -> None:
    """`on_fire(encode=True)` writes the record and the command without making models:
    the same bytes as the models' JSON, and the same state after."""
    made, written = DispatchState(), DispatchState()
    by_models = on_fire(made, fire(**settings), NOW)
    by_json = on_fire(written, fire(**settings), NOW, encode=True)
    assert by_models is not None and by_json is not None
    assert not by_json.commands and not by_json.records
    [issued] = by_json.issued_now
    assert issued.record == by_models.encoded[0] == to_json(by_models.records[0])
    assert issued.command == to_json(by_models.commands[0])
    assert (issued.trigger_id, issued.execution_id) == ("t-1", "x-1")
    assert written._heads == made._heads
    assert written._issued == made._issued and written._keyed == made._keyed
    assert written._deadlines == made._deadlines and written._waiting == made._waiting
    assert written.get("t-1", "x-1") == made.get("t-1", "x-1")


@pytest.mark.parametrize("settings", _WRITTEN_SETTINGS)
def test_a_fire_read_with_its_input_kept_as_json_is_written_alike(
    settings: dict[str, object],
) -> None:
    """The dispatcher reads a fire's input as JSON it writes out again as it is
    (`from_json_keeping`): the same record, command and state as from the whole fire."""
    whole, kept = DispatchState(), DispatchState()
    read, input_json = from_json_keeping(Fire, to_json(fire(**settings)), "input")
    by_whole = on_fire(whole, fire(**settings), NOW, encode=True)
    by_kept = on_fire(kept, read, NOW, encode=True, input_json=input_json)
    assert input_json is not None and by_whole is not None and by_kept is not None
    assert by_kept.issued_now == by_whole.issued_now
    assert kept.get("t-1", "x-1") == whole.get("t-1", "x-1")


@pytest.mark.parametrize("overlap", [OverlapPolicy.BUFFER_ALL, OverlapPolicy.CANCEL_OTHER])
def test_a_fire_with_its_input_kept_as_json_that_waits_or_replaces_keeps_its_input(
    overlap: OverlapPolicy,
) -> None:
    """A fire not issued at once goes the models' way with its input read from the JSON."""
    state = DispatchState()
    on_fire(state, fire("a"), NOW, encode=True)
    read, input_json = from_json_keeping(
        Fire, to_json(fire("b", overlap, input={"n": [1]})), "input"
    )
    effects = on_fire(state, read, NOW, encode=True, input_json=input_json)
    assert effects is not None and not effects.issued_now
    assert state.get("t-1", "b").input_data == {"n": [1]}
    if overlap is OverlapPolicy.CANCEL_OTHER:
        assert [c.input for c in effects.commands] == [{"n": [1]}]


def test_a_fire_orjson_cannot_write_goes_the_models_way() -> None:
    """A value orjson refuses (an int past 64 bits) leaves the fire to the models, whose
    JSON pydantic writes."""
    state = DispatchState()
    effects = on_fire(state, fire(input={"big": 2**70}), NOW, encode=True)
    assert effects is not None and not effects.issued_now
    assert b'"big":1180591620717411303424' in effects.encoded[0]
    assert statuses(state) == {"x-1": "pending"}


def test_a_fire_that_waits_is_not_written_the_direct_way() -> None:
    """Only a fire issued at once is written directly; one the policy holds back goes
    through the models as before."""
    state = DispatchState()
    on_fire(state, fire("a"), NOW, encode=True)
    effects = on_fire(state, fire("b", OverlapPolicy.BUFFER_ALL), NOW, encode=True)
    assert effects is not None and not effects.issued_now
    assert [r.status for r in effects.records] == [ExecutionStatus.PENDING]
    assert effects.records[0].issued_at is None
