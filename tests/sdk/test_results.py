"""sdk._results: the result checks the kernel and sdk.testing share."""

from __future__ import annotations

import pytest

import sdk
from kernel import dispatch
from sdk import _results


def test_the_kernel_uses_the_sdk_checks() -> None:
    """One source of truth: the dispatcher and the harness each had their own."""
    assert dispatch.RESULT_TYPES is _results.RESULT_TYPES
    assert dispatch.response_problem is _results.response_problem


def test_every_first_result_and_body_hook_has_a_result_type() -> None:
    assert set(_results.RESULT_TYPES) == {
        "trellis_tls_passthrough",
        "trellis_route_select",
        "trellis_request_access",
        "trellis_request",
        "trellis_upstream_select",
        "trellis_error",
        "trellis_request_body",
        "trellis_response_body",
    }


@pytest.mark.parametrize(
    ("hook", "result", "said"),
    [
        ("trellis_request", "deny", "returned str, not Response or None"),
        ("trellis_route_select", ["r"], "returned list, not str or None"),
        ("trellis_upstream_select", "http://a", "returned str, not Origin or None"),
        ("trellis_response_body", "text", "returned str, not bytes or None"),
    ],
)
def test_wrong_result_names_what_was_wanted(hook: str, result: object, said: str) -> None:
    err = _results.wrong_result(hook, result)
    assert isinstance(err, TypeError)
    assert str(err) == said


class _BadRepr:
    def __repr__(self) -> str:
        raise SystemExit(9)  # a plugin's code: must not escape the check


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (sdk.Response.make(204), None),
        (sdk.Response(599, reason="Odd Status"), None),
        (sdk.Response(200, body=bytearray(b"x")), None),
        (sdk.Response("200"), "status_code is '200', not 200-599"),  # type: ignore[arg-type]
        (sdk.Response(True), "status_code is True, not 200-599"),
        (sdk.Response(_BadRepr()), "status_code is <_BadRepr whose repr() failed>, not 200-599"),  # type: ignore[arg-type]
        (sdk.Response(101), "status_code is 101, not 200-599"),
        (sdk.Response(200, body="text"), "body is str, not bytes"),  # type: ignore[arg-type]
        (sdk.Response(200, headers={}), "headers are dict, not sdk.Headers"),  # type: ignore[arg-type]
        (sdk.Response(200, reason=b"OK"), "reason is bytes, not str"),  # type: ignore[arg-type]
        (sdk.Response(200, reason="\u20ac"), "reason '€' is not Latin-1"),
        (sdk.Response(200, reason="a\0b"), "reason 'a\\x00b' holds CR, LF or NUL"),
    ],
)
def test_response_problem(response: sdk.Response, problem: str | None) -> None:
    assert _results.response_problem(response) == problem


def test_a_set_response_is_checked_as_a_returned_one() -> None:
    assert _results.set_response_error(sdk.Response.make(201)) is None
    wrong = _results.set_response_error("no")
    assert str(wrong) == "set flow.response to str, not Response"
    wrong = _results.set_response_error(sdk.Response(101))
    assert str(wrong) == "set flow.response to a Response whose status_code is 101, not 200-599"
