"""sdk._version: API_VERSION."""

from __future__ import annotations

import re

import sdk
from sdk._version import API_VERSION


def test_api_version_is_major_minor() -> None:
    assert sdk.API_VERSION is API_VERSION
    match = re.fullmatch(r"(\d+)\.(\d+)", API_VERSION)
    assert match is not None, API_VERSION
    major, minor = (int(g) for g in match.groups())
    assert major >= 1
    assert minor >= 0


def test_api_version_is_one_for_now() -> None:
    # Bumping the major number breaks every plugin: do it deliberately.
    assert API_VERSION.split(".")[0] == "1"
