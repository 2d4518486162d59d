"""The tracing thread's GenAI histograms: measurements appended, folded into buckets per batch,
with the SDK's explicit-bucket semantics (bucket i holds (bounds[i-1], bounds[i]])."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from dataplane.observability.otel_export import (
    _DURATION_BUCKETS,
    _TOKEN_BUCKETS,
    _TOKEN_SEARCH,
    _Histogram,
)


def _sdk_point(values: list[float], bounds: tuple[float, ...] = _DURATION_BUCKETS) -> Any:
    """The SDK's own histogram data point for ``values``."""
    reader = InMemoryMetricReader()
    view = View(instrument_name="d", aggregation=ExplicitBucketHistogramAggregation(bounds))
    provider = MeterProvider(metric_readers=[reader], views=[view])
    histogram = provider.get_meter("t").create_histogram("d")
    for value in values:
        histogram.record(value)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]


def test_folded_batches_equal_the_sdks_histogram() -> None:
    first = [0.01, 0.02, 0.0200001, 0.005, 81.92, 1000.0]  # bounds themselves, below, above
    second = [0.04, 0.3, 0.01]
    histogram = _Histogram(_DURATION_BUCKETS)
    append = histogram.pending.append
    for value in first:
        append(value)
    histogram.fold()
    assert histogram.count == len(first)
    for value in second:
        append(value)  # the same append: fold keeps the list
    histogram.fold()
    histogram.fold()  # nothing pending: nothing changes
    point = _sdk_point(first + second)
    assert histogram.counts == list(point.bucket_counts)
    assert histogram.count == point.count == 9
    assert histogram.sum == sum(first + second)
    assert (histogram.min, histogram.max) == (0.005, 1000.0)
    assert histogram.pending == []


def test_token_counts_fall_in_the_sdks_buckets() -> None:
    tokens = [0, 1, 2, 4, 5, 16, 17, 4096, 4097, 4**13, 4**13 + 1]  # bounds, and just above
    histogram = _Histogram(_TOKEN_BUCKETS, _TOKEN_SEARCH)
    histogram.pending.extend(tokens)
    histogram.fold()
    point = _sdk_point([float(n) for n in tokens], _TOKEN_BUCKETS)
    assert histogram.counts == list(point.bucket_counts)
    assert histogram.sum == point.sum == sum(tokens)
