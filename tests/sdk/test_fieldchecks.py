"""Field names, values and methods in config tables (sdk/_fieldchecks.py): the
kernel's send rules, each bad item at its own path, through ``kernel check`` too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdk
from kernel.protocol.http1 import LOWER_NAME, VALUE

TOKEN = "only letters, digits and !#$%&'*+-.^_`|~"
NAME = sdk.header_name_validator()
VALUE_CHECK = sdk.header_value_validator()


def refusal(validator: Any, value: Any) -> str:
    with pytest.raises(ValueError) as info:
        validator(None, None, value)
    return str(info.value)


# -- names ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x", "X-Request-ID", "a!#$%&'*+-.^_`|~9", "content-type"])
def test_good_names_pass_with_their_case(name: str) -> None:
    assert sdk.is_token(name)
    NAME(None, None, name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "invalid header name '' (empty)"),
        ("x y", f"invalid header name 'x y' (' ' is not allowed: {TOKEN})"),
        ("x:", f"invalid header name 'x:' (':' is not allowed: {TOKEN})"),
        ("x\ty", f"invalid header name 'x\\ty' ('\\t' is not allowed: {TOKEN})"),
        ("caf\xe9", f"invalid header name 'caf\xe9' ('\xe9' is not allowed: {TOKEN})"),
        ("\u20ac", f"invalid header name '\u20ac' ('\u20ac' is not allowed: {TOKEN})"),
        ("\u212a", f"invalid header name '\u212a' ('\u212a' is not allowed: {TOKEN})"),
        # "$" in a regex also matches before a final newline: not a token all the same.
        ("x-a\n", f"invalid header name 'x-a\\n' ('\\n' is not allowed: {TOKEN})"),
        ('"x"', f"invalid header name '\"x\"' ('\"' is not allowed: {TOKEN})"),
    ],
)
def test_bad_names_say_why(name: str, message: str) -> None:
    assert not sdk.is_token(name)
    assert refusal(NAME, name) == message


def test_an_empty_name_may_be_allowed() -> None:
    optional = sdk.header_name_validator(allow_empty=True)
    optional(None, None, "")
    optional(None, None, "x-trace-id")
    assert refusal(optional, "x y").startswith("invalid header name 'x y' (' ' is not allowed")
    assert repr(optional) == "<header name validator, empty allowed>"
    assert repr(NAME) == "<header name validator>"


def test_a_name_that_is_no_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a string, got int"):
        NAME(None, None, 5)


# -- values --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",
        "text/plain; charset=utf-8",
        "a\tb",  # HTAB inside is fine
        "a  b",
        "caf\xe9",  # ISO-8859-1
        "\x80\x85\x9f\xa0\xff",  # obs-text: every byte from 0x80, as the kernel sends it
        '"quoted", (comment) <x>',
    ],
)
def test_good_values(value: str) -> None:
    VALUE_CHECK(None, None, value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("a\r\nb", "a control character: '\\r'"),
        ("a\nb", "a control character: '\\n'"),
        ("\x00", "a control character: '\\x00'"),
        ("a\x01", "a control character: '\\x01'"),
        ("\x1f", "a control character: '\\x1f'"),
        ("del\x7f", "a control character: '\\x7f'"),
        ("\u20ac", "'\u20ac' is not ISO-8859-1"),
        ("caf\xe9 \u0100", "'\u0100' is not ISO-8859-1"),
        ("\U0001f600", "'\U0001f600' is not ISO-8859-1"),
        ("v ", "whitespace at the end"),
        ("v\t", "whitespace at the end"),
        (" v", "whitespace at the start"),
        ("\tv", "whitespace at the start"),
        (" ", "whitespace at the start"),
    ],
)
def test_bad_values_say_why(value: str, why: str) -> None:
    assert refusal(VALUE_CHECK, value) == f"invalid header value {value!r} ({why})"


def test_trimmed_values_may_have_whitespace_at_the_ends_only() -> None:
    trimmed = sdk.header_value_validator(trimmed=True)
    for value in (" v ", "\tv", " ", "a b", ""):
        trimmed(None, None, value)
    assert (
        refusal(trimmed, " a\nb ") == "invalid header value ' a\\nb ' (a control character: '\\n')"
    )
    assert (
        refusal(trimmed, " \u20ac") == "invalid header value ' \u20ac' ('\u20ac' is not ISO-8859-1)"
    )
    assert repr(trimmed) == "<header value validator, trimmed>"


def test_a_secret_value_is_not_shown() -> None:
    secret = sdk.header_value_validator(secret=True)
    secret(None, None, "Bearer abc")
    assert refusal(secret, "Bearer abc\n") == (
        "invalid header value (a control character; the value is not shown)"
    )
    assert refusal(secret, "Bearer \u20acbc") == (
        "invalid header value (a character outside ISO-8859-1; the value is not shown)"
    )
    assert refusal(secret, "Bearer abc ") == (
        "invalid header value (whitespace at the end; the value is not shown)"
    )
    both = sdk.header_value_validator(trimmed=True, secret=True)
    assert repr(both) == "<header value validator, trimmed, secret>"
    both(None, None, "Bearer abc ")


# -- methods -------------------------------------------------------------------------
def test_methods() -> None:
    check = sdk.method_validator()
    for method in ("GET", "get", "M-SEARCH", "PROPFIND"):
        check(None, None, method)
    assert refusal(check, "G T") == f"invalid method 'G T' (' ' is not allowed: {TOKEN})"
    assert refusal(check, "GET\n") == f"invalid method 'GET\\n' ('\\n' is not allowed: {TOKEN})"
    assert refusal(check, "") == "invalid method '' (empty)"
    assert repr(check) == "<method validator>"


# -- the same rules as the kernel's send checks ----------------------------------------
_CHARS = st.characters(max_codepoint=0x17F) | st.sampled_from(" \t\u20ac\u212a")


@given(st.text(_CHARS, max_size=6))
def test_values_pass_exactly_when_the_kernel_would_send_them(value: str) -> None:
    try:
        wire = value.encode("latin-1")
    except UnicodeEncodeError:
        sendable = False
    else:
        sendable = VALUE.fullmatch(wire) is not None
    try:
        VALUE_CHECK(None, None, value)
    except ValueError:
        passed = False
    else:
        passed = True
    assert passed == sendable


@given(st.text(_CHARS, max_size=6))
def test_names_pass_exactly_when_the_kernel_would_send_them_lower_cased(name: str) -> None:
    try:
        wire = name.encode("latin-1").lower()
    except UnicodeEncodeError:
        sendable = False
    else:
        sendable = LOWER_NAME.fullmatch(wire) is not None
    assert sdk.is_token(name) == sendable


# -- in attrs classes: every bad item at its own path ----------------------------------
@attrs.frozen(kw_only=True)
class _Table:
    headers: dict[str, str] = attrs.field(
        factory=dict,
        validator=attrs.validators.deep_mapping(
            sdk.header_name_validator(), sdk.header_value_validator()
        ),
    )
    remove: list[str] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(sdk.header_name_validator())
    )
    methods: list[str] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(sdk.method_validator())
    )
    echo: str = attrs.field(default="", validator=sdk.header_name_validator(allow_empty=True))


def test_each_bad_item_is_listed_at_its_path_beside_one_of_the_wrong_type() -> None:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(
            {
                "headers": {"x-a": "1", "bad name": "2", "x-b": "v ", "x-c": 3, "x-d": "\u20ac"},
                "remove": ["ok", 5, "x:y", ""],
                "methods": ["GET", "G T"],
                "echo": "a b",
            },
            _Table,
            path="$.plugins.x",
        )
    assert info.value.problems == [
        f"$.plugins.x.headers[\"bad name\"]: invalid header name 'bad name' (' ' is not"
        f" allowed: {TOKEN})",
        "$.plugins.x.headers.x-b: invalid header value 'v ' (whitespace at the end)",
        "$.plugins.x.headers.x-c: must be a string, got 3",
        "$.plugins.x.headers.x-d: invalid header value '\u20ac' ('\u20ac' is not ISO-8859-1)",
        "$.plugins.x.remove[1]: must be a string, got 5",
        f"$.plugins.x.remove[2]: invalid header name 'x:y' (':' is not allowed: {TOKEN})",
        "$.plugins.x.remove[3]: invalid header name '' (empty)",
        f"$.plugins.x.methods[1]: invalid method 'G T' (' ' is not allowed: {TOKEN})",
        f"$.plugins.x.echo: invalid header name 'a b' (' ' is not allowed: {TOKEN})",
    ]
    good = sdk.structure(
        {"headers": {"X-A": "a\tb", "x-b": ""}, "remove": ["Cookie"], "methods": ["get"]},
        _Table,
        path="$.plugins.x",
    )
    assert good.headers == {"X-A": "a\tb", "x-b": ""}  # names keep their case
    assert good.echo == ""


# -- kernel check, as run by hand ------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
KERNEL = str(Path(sys.executable).with_name("kernel"))

BAD_FIELDS = """
[kernel]
plugins = ["router", "tracing", "headers", "respond", "trafficlog"]
watch_config = false

[[listeners]]
bind = "127.0.0.1:0"

[[routes]]
name = "a"
upstream = "http://127.0.0.1:9"

[plugins.router]
rules = [
  { route = "a", methods = ["GET", "GET\\n"], headers = { "x-a\\n" = "1", x-b = "\\u20ac" } },
]

[plugins.tracing]
response_header = "x trace id"

[plugins.headers]
request_remove = ["cookie", "x:y"]
response_add = { x-a = ["ok", "a\\u0000b", " padded is trimmed "] }

[plugins.respond]
headers = { x-c = "caf\\u00e9 \\u20ac" }

[plugins.trafficlog]
redact = ["authorization", "bad name"]
"""


def test_kernel_check_lists_every_bad_field_of_every_plugin_at_its_path(tmp_path: Path) -> None:
    """``kernel check`` in a child process: the builtins' names, values and
    methods, checked by the sdk's validators, each at its own path. The
    router's ``GET\\n`` and ``x-a\\n`` used to pass (its token regex ended in
    ``$``, which matches before a final newline) and could never match."""
    config = tmp_path / "c.toml"
    config.write_text(BAD_FIELDS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    done = subprocess.run(
        [KERNEL, "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].endswith("c.toml: 8 problem(s)"), done.stderr
    assert [line.strip() for line in lines[1:]] == [
        f"$.plugins.router.rules[0].methods[1]: invalid method 'GET\\n' ('\\n' is not allowed:"
        f" {TOKEN})",
        f"$.plugins.router.rules[0].headers[\"x-a\\n\"]: invalid header name 'x-a\\n' ('\\n' is"
        f" not allowed: {TOKEN})",
        "$.plugins.router.rules[0].headers.x-b: invalid header value '\u20ac' ('\u20ac' is not"
        " ISO-8859-1)",
        f"$.plugins.tracing.response_header: invalid header name 'x trace id' (' ' is not"
        f" allowed: {TOKEN})",
        f"$.plugins.headers.request_remove[1]: invalid header name 'x:y' (':' is not allowed:"
        f" {TOKEN})",
        "$.plugins.headers.response_add.x-a[1]: invalid header value 'a\\x00b' (a control"
        " character: '\\x00')",
        "$.plugins.respond.headers.x-c: invalid header value 'caf\xe9 \u20ac' ('\u20ac' is not"
        " ISO-8859-1)",
        f"$.plugins.trafficlog.redact[1]: invalid header name 'bad name' (' ' is not allowed:"
        f" {TOKEN})",
    ]
