"""MetricsConfig: defaults, bucket conversion and precedence, every error with its path."""

from __future__ import annotations

import re
from typing import Any

import pytest

import sdk
from plugins.builtin.metrics.config import (
    DEFAULT_BUCKETS_MS,
    BoundMs,
    MetricsConfig,
    buckets_in_unit,
)

PATH = "$.plugins.metrics"


def load(**table: Any) -> MetricsConfig:
    return sdk.structure(table, MetricsConfig, path=PATH)


def problems(**table: Any) -> list[str]:
    with pytest.raises(sdk.ConfigError) as info:
        load(**table)
    return info.value.problems


def test_defaults() -> None:
    c = load()
    assert c == MetricsConfig()
    assert (c.listener, c.path, c.prefix) == ("metrics", "/metrics", "trellis_")
    assert c.histogram_buckets == {}
    assert c.exclude_listeners is None
    assert c.sample_interval_s == 1.0


def test_buckets_are_milliseconds_and_seconds_histograms_are_converted() -> None:
    c = load(
        histogram_buckets={"request_duration_seconds": [5, 50.5, 500], "size_bytes": [10, 100]}
    )
    assert c.histogram_buckets["request_duration_seconds"] == [5.0, 50.5, 500.0]
    assert all(isinstance(b, BoundMs) for b in c.histogram_buckets["request_duration_seconds"])
    assert c.buckets_for("request_duration_seconds") == (0.005, 0.0505, 0.5)
    assert c.buckets_for("size_bytes") == (10.0, 100.0)  # not _seconds: as written
    assert buckets_in_unit("x_seconds", [1000, 2500]) == (1.0, 2.5)


def test_bucket_precedence_table_then_asked_then_defaults() -> None:
    c = load(histogram_buckets={"upstream_duration_seconds": [100]})
    # The table wins over what a registrant asks for.
    assert c.buckets_for("upstream_duration_seconds", (1, 2)) == (0.1,)
    # Then what was asked for.
    assert c.buckets_for("request_duration_seconds", (1, 2)) == (0.001, 0.002)
    # Then Dispa's defaults for the histograms we know (ms -> s).
    assert c.buckets_for("request_duration_seconds") == (
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    )
    assert c.buckets_for("health_check_duration_seconds")[-1] == 5.0
    assert c.buckets_for("traffic_log_write_duration_seconds")[0] == 0.00025
    # Else prometheus-client's defaults.
    assert c.buckets_for("something_else_seconds") == ()


def test_default_buckets_are_sorted_and_positive() -> None:
    assert set(DEFAULT_BUCKETS_MS) == {
        "request_duration_seconds",
        "upstream_duration_seconds",
        "health_check_duration_seconds",
        "traffic_log_write_duration_seconds",
    }
    for bounds in DEFAULT_BUCKETS_MS.values():
        assert list(bounds) == sorted(set(bounds))
        assert bounds[0] > 0


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ({"listener": ""}, "listener", "is not a listener name"),
        ({"listener": "a b"}, "listener", "is not a listener name"),
        ({"listener": 9090}, "listener", "must be a string"),
        ({"path": "metrics"}, "path", "is not a request path"),
        ({"path": "/m?x"}, "path", "is not a request path"),
        ({"prefix": "1x_"}, "prefix", "is not a metric name prefix"),
        ({"prefix": "my-proxy_"}, "prefix", "is not a metric name prefix"),
        ({"sample_interval_s": 0}, "sample_interval_s", "must be > 0, got 0"),
        ({"sample_interval_s": float("inf")}, "sample_interval_s", "must be > 0"),
        ({"exclude_listeners": ["ok", "no way"]}, "exclude_listeners[1]", "'no way'"),
        ({"exclude_listeners": "health"}, "exclude_listeners", "must be an array"),
        (
            {"histogram_buckets": {"request_duration_seconds": [5, -1]}},
            "histogram_buckets.request_duration_seconds[1]",
            "must be a positive number of milliseconds, got -1",
        ),
        (
            {"histogram_buckets": {"request_duration_seconds": [0]}},
            "histogram_buckets.request_duration_seconds[0]",
            "positive number of milliseconds, got 0",
        ),
        (
            {"histogram_buckets": {"request_duration_seconds": [1, float("nan")]}},
            "histogram_buckets.request_duration_seconds[1]",
            "positive number of milliseconds",
        ),
        (
            {"histogram_buckets": {"request_duration_seconds": [1, "2"]}},
            "histogram_buckets.request_duration_seconds[1]",
            "must be a number, got '2'",
        ),
        (
            {"histogram_buckets": {"request_duration_seconds": 5}},
            "histogram_buckets.request_duration_seconds",
            "must be an array, got 5",
        ),
        (
            {"histogram_buckets": {"request_duration_seconds": [5, 10, 10]}},
            "histogram_buckets.request_duration_seconds",
            re.escape("[2]: 10 must be greater than the bound before it"),
        ),
        (
            {"histogram_buckets": {"request_duration_seconds": [50, 5]}},
            "histogram_buckets.request_duration_seconds",
            re.escape("[1]: 5 must be greater than the bound before it (50)"),
        ),
        (
            {"histogram_buckets": {"upstream_duration_seconds": []}},
            "histogram_buckets.upstream_duration_seconds",
            "needs at least one bound",
        ),
        (
            {"histogram_buckets": {"trellis-requests": [1]}},
            "histogram_buckets.trellis-requests",
            "'trellis-requests' is not a metric name without the prefix",
        ),
        ({"buckets": {}}, "buckets", "unknown key"),
    ],
)
def test_errors_have_paths(table: dict[str, Any], where: str, message: str) -> None:
    found = problems(**table)
    path = f"{PATH}.{where}" if where else PATH
    assert any(p.startswith(path + ":") and re.search(message, p) for p in found), found


def test_every_problem_is_listed() -> None:
    found = problems(listener="", prefix="-", histogram_buckets={"a_seconds": [1, -1]})
    assert len(found) == 3, found
    assert found[0].startswith(f"{PATH}.listener:")
    assert found[1].startswith(f"{PATH}.prefix:")
    assert found[2].startswith(f"{PATH}.histogram_buckets.a_seconds[1]:")
    # The order of a list is checked once each of its bounds is a number.
    found = problems(listener="", histogram_buckets={"a_seconds": [1, 3, 2], "b_seconds": [2, 2]})
    assert len(found) == 3, found
    assert found[1].startswith(f"{PATH}.histogram_buckets.a_seconds: [2]: 2 must be greater")
    assert found[2].startswith(f"{PATH}.histogram_buckets.b_seconds: [1]: 2 must be greater")


def test_bound_ms_refuses_bad_numbers_itself() -> None:
    assert BoundMs(2.5) == 2.5
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive number of milliseconds"):
            BoundMs(bad)


def test_every_bad_listener_name_is_listed() -> None:
    assert problems(exclude_listeners=["no way", "ok", "x/y"]) == [
        f"{PATH}.exclude_listeners[0]: 'no way' is not a listener name"
        " (letters, digits, '_', '-', '.')",
        f"{PATH}.exclude_listeners[2]: 'x/y' is not a listener name"
        " (letters, digits, '_', '-', '.')",
    ]


def test_bad_items_are_listed_beside_one_of_the_wrong_type() -> None:
    """Listener names and histogram names were checked by one loop over the
    list or table, which does not run on one with an item missing: a
    wrongly typed item hid the others' problems until it was fixed. Each
    is checked alone now, at its own path; a histogram's order as soon as
    its own bounds are numbers."""
    assert problems(
        exclude_listeners=[5, "ok", "no way"],
        histogram_buckets={
            "a_seconds": [1, "x"],
            "bad-name": [1],
            "b_seconds": [2, 1],
            "c_seconds": 7,
            "d_seconds": [],
        },
    ) == [
        f"{PATH}.histogram_buckets.a_seconds[1]: must be a number, got 'x'",
        f"{PATH}.histogram_buckets.bad-name: 'bad-name' is not a metric name without the prefix"
        " (such as 'request_duration_seconds')",
        f"{PATH}.histogram_buckets.b_seconds: [1]: 1 must be greater than the bound before it"
        " (2): bounds are sorted and distinct",
        f"{PATH}.histogram_buckets.c_seconds: must be an array, got 7",
        f"{PATH}.histogram_buckets.d_seconds: needs at least one bound",
        f"{PATH}.exclude_listeners[0]: must be a string, got 5",
        f"{PATH}.exclude_listeners[2]: 'no way' is not a listener name"
        " (letters, digits, '_', '-', '.')",
    ]
