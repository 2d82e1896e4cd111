from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from processor.metrics import observe_all


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(
    st.lists(
        st.floats(min_value=0, max_value=1e4, allow_nan=False) | st.sampled_from([0.005, 0.1, 10.0])
    )
)
def test_observe_all_counts_as_observe_does(amounts: list[float]) -> None:
    """Bounds are inclusive (an amount equal to a bucket's bound is in it), as `observe`."""
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    each = Histogram("latency_seconds", "h", registry=one_by_one)
    at_once = Histogram("latency_seconds", "h", registry=batched)
    for amount in amounts:
        each.observe(amount)
    observe_all(at_once, amounts)
    expected, found = _samples(one_by_one), _samples(batched)
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(found[name] - value) <= 1e-9 * max(1.0, abs(value)), name
