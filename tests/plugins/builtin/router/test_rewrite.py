"""Path rewriting: base joining, strip_prefix, replace_path; the query always survives."""

from __future__ import annotations

import pytest

from plugins.builtin.router.rewrite import PathRewrite, join_base, replace_path, strip_prefix


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/api/x", "/api", "/x"),
        ("/api/x/y?q=1", "/api", "/x/y?q=1"),
        ("/api", "/api", "/"),
        ("/api/", "/api", "/"),
        ("/api?q=1", "/api", "/?q=1"),
        ("/api/?q=1", "/api", "/?q=1"),
        ("/x", "", "/x"),
    ],
)
def test_strip_prefix(path: str, prefix: str, expected: str) -> None:
    assert strip_prefix(path, prefix) == expected


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [("", "/x?q", "/x?q"), ("/v1", "/x?q", "/v1/x?q"), ("/v1", "/", "/v1/")],
)
def test_join_base(base: str, path: str, expected: str) -> None:
    assert join_base(base, path) == expected


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("/health", "/anything/at/all?x=1&y", "/health?x=1&y"),
        ("/health", "/anything", "/health"),
        ("", "/anything?x=1", "/?x=1"),
        ("", "/anything", "/"),
        ("/a/b", "/?", "/a/b?"),
    ],
)
def test_replace_path(base: str, path: str, expected: str) -> None:
    assert replace_path(base, path) == expected


# The table in docs/routing-basics.md, row by row (base /v1, prefix /api).
@pytest.mark.parametrize(
    ("rewrite", "path", "expected"),
    [
        (PathRewrite(base="/v1"), "/api/x?q=1", "/v1/api/x?q=1"),
        (PathRewrite(base="/v1"), "/api", "/v1/api"),
        (PathRewrite(base="/v1", strip="/api"), "/api/x?q=1", "/v1/x?q=1"),
        (PathRewrite(base="/v1", strip="/api"), "/api", "/v1/"),
        (PathRewrite(base="/v1", strip="/api"), "/api?q=1", "/v1/?q=1"),
        (PathRewrite(base="/v1", replace=True), "/api/x?q=1", "/v1?q=1"),
        (PathRewrite(base="/v1", replace=True), "/api", "/v1"),
        (PathRewrite(strip="/api"), "/api/x?q=1", "/x?q=1"),
        (PathRewrite(strip="/api"), "/api", "/"),
        (PathRewrite(replace=True), "/api/x?q=1", "/?q=1"),
        (PathRewrite(base="/v1"), "*", "*"),  # OPTIONS * is left alone
    ],
)
def test_path_rewrite(rewrite: PathRewrite, path: str, expected: str) -> None:
    assert rewrite.apply(path) == expected


def test_identity() -> None:
    assert PathRewrite().is_identity
    assert not PathRewrite(base="/v1").is_identity
    assert not PathRewrite(strip="/a").is_identity
    assert not PathRewrite(replace=True).is_identity
