"""What a hook may give back: result types and a sendable Response's shape.

The kernel's dispatcher (``kernel.dispatch``) and the test kit
(:mod:`sdk.testing`) check a plugin's results with these, so a wrong result
is reported the same way by both: :data:`RESULT_TYPES` says what each
first-result and body hook may return besides ``None``,
:func:`wrong_result` is the error for anything else,
:func:`response_problem` says why a ``Response`` (returned, or spoilt by a
response hook) could not be written, and :func:`set_response_error` is the
error for a ``flow.response`` a request-phase hook set to answer with (rather
than returned) that cannot be. Private: not part of the public API.

May import: stdlib, sdk._http.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdk._http import Headers, Origin, Response

__all__ = ["RESULT_TYPES", "response_problem", "set_response_error", "wrong_result"]

#: What a first-result hook may return besides ``None``; anything else is the
#: plugin's failure, caught where the hook is called rather than wherever the
#: result is used. (A body transform may also return a ``bytearray`` or
#: ``memoryview``: it is copied to ``bytes``.)
RESULT_TYPES: Mapping[str, type | tuple[type, ...]] = {
    "trellis_tls_passthrough": Origin,
    "trellis_route_select": str,
    "trellis_request_access": Response,
    "trellis_request": Response,
    "trellis_upstream_select": Origin,
    "trellis_error": Response,
    "trellis_request_body": bytes,
    "trellis_response_body": bytes,
}


def wrong_result(hook: str, result: object) -> TypeError:
    """The error for ``result``, not of :data:`RESULT_TYPES` ``[hook]``."""
    want = RESULT_TYPES[hook]
    names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
    return TypeError(f"returned {type(result).__name__}, not {names} or None")


def _shown(obj: object) -> str:
    """``repr(obj)`` of a plugin's object, or a stand-in when its ``__repr__`` raises."""
    try:
        return repr(obj)
    except BaseException:  # the plugin's code: nothing may escape
        return f"<{type(obj).__name__} whose repr() failed>"


def response_problem(response: Response) -> str | None:
    """What keeps a plugin's ``Response`` from being sent, or None.

    The type checks of its fields (a ``Response("200")``, a ``str`` body, a
    reason outside Latin-1) are not the dataclass's: they would otherwise
    fail while the response is written, where no plugin can be named and
    the client gets no answer at all.
    """
    r: Any = response  # a plugin's object: its fields may be anything
    status = r.status_code
    # A final answer: a 1xx would leave the client waiting for one.
    if type(status) is not int or not 200 <= status <= 599:
        return f"status_code is {_shown(status):.40}, not 200-599"
    if r.body is not None and not isinstance(r.body, bytes | bytearray):
        return f"body is {type(r.body).__name__}, not bytes"
    if not isinstance(r.headers, Headers):
        return f"headers are {type(r.headers).__name__}, not sdk.Headers"
    reason = r.reason
    if not isinstance(reason, str):
        return f"reason is {type(reason).__name__}, not str"
    if reason:
        try:
            reason.encode("latin-1")
        except UnicodeEncodeError:
            return f"reason {reason!r:.60} is not Latin-1"
        if "\r" in reason or "\n" in reason or "\0" in reason:
            return f"reason {reason!r:.60} holds CR, LF or NUL"
    return None


def set_response_error(response: object) -> TypeError | None:
    """The error for ``response``, which a request-phase hook left in
    ``flow.response`` to answer with, when it cannot be sent; else None.

    The same checks as a returned ``Response`` (:func:`response_problem`).
    """
    if not isinstance(response, Response):
        return TypeError(f"set flow.response to {type(response).__name__}, not Response")
    if problem := response_problem(response):
        return TypeError(f"set flow.response to a Response whose {problem}")
    return None
