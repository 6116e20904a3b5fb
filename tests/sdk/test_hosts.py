"""Host names and ``*.domain`` patterns (sdk/_hosts.py), shared by the plugins."""

from __future__ import annotations

import pytest

import sdk


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("Example.COM:8080", "example.com"),
        ("example.com.", "example.com"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("[::1]", "::1"),
        ("", ""),
    ],
)
def test_host_of(authority: str, host: str) -> None:
    assert sdk.host_of(authority) == host


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("*.Example.COM.", ("example.com", True)),
        (" api.test ", ("api.test", False)),
        ("[::1]", ("::1", False)),
        ("10.0.0.1", ("10.0.0.1", False)),
    ],
)
def test_parse_host_pattern(text: str, parsed: tuple[str, bool]) -> None:
    assert sdk.parse_host_pattern(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty domain ''"),
        ("*.", "'\\*.' needs a domain after it"),
        ("a.*.com", "invalid domain 'a.\\*.com': a wildcard is only allowed as the whole first"),
        ("example.com:80", "give the host without a port"),
        ("*.[::1]", "a wildcard needs a domain name"),
        ("a..b", "expected a name such as"),
        ("x" * 64 + ".com", "expected a name such as"),  # a DNS label is 63 at most
    ],
)
def test_parse_host_pattern_refuses_with_the_noun_given(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sdk.parse_host_pattern(text, noun="domain")


@pytest.mark.parametrize(
    ("host", "name", "wildcard", "matches"),
    [
        ("example.com", "example.com", False, True),
        ("a.example.com", "example.com", False, False),
        ("a.example.com", "example.com", True, True),
        ("a.b.example.com", "example.com", True, True),
        ("example.com", "example.com", True, False),  # not the domain itself
        ("badexample.com", "example.com", True, False),  # dot boundary
        (".example.com", "example.com", True, False),  # a label is needed before it
    ],
)
def test_host_matches(host: str, name: str, wildcard: bool, matches: bool) -> None:
    assert sdk.host_matches(host, name, wildcard) is matches
