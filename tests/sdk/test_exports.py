"""The public door of the SDK (L5): ``sdk.__all__`` is pinned here.

Changing the list below is a deliberate act: update it together with the
CHANGELOG entry that announces the change to plugin authors.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import sdk

EXPECTED_ALL = [
    "API_VERSION",
    "AUTH_USER",
    "Balancer",
    "ClientDisconnected",
    "ClientInfo",
    "ConfigError",
    "ENTRY_POINT_GROUP",
    "EnvText",
    "Flow",
    "Group",
    "HOOK_PREFIX",
    "Headers",
    "LocalProtocolError",
    "Origin",
    "PROJECT",
    "PluginError",
    "ProtocolError",
    "ProxyError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ServerInfo",
    "StartupContext",
    "Stash",
    "StashKey",
    "TRACE",
    "Target",
    "Timings",
    "TlsCertificate",
    "TraceContext",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "header_name_validator",
    "header_value_validator",
    "hookimpl",
    "host_matches",
    "host_of",
    "is_token",
    "make_converter",
    "method_validator",
    "one_or_many",
    "parse_host_pattern",
    "structure",
    "unstructure",
]

#: The only submodules a plugin author may import; everything else is ``sdk._*``.
PUBLIC_SUBMODULES = {"hookspecs", "testing"}


def test_all_is_pinned() -> None:
    assert sorted(EXPECTED_ALL) == EXPECTED_ALL, "keep the pinned list sorted"
    assert sorted(sdk.__all__) == EXPECTED_ALL
    assert len(set(sdk.__all__)) == len(sdk.__all__), "duplicate names in sdk.__all__"


def test_every_name_resolves() -> None:
    for name in sdk.__all__:
        assert hasattr(sdk, name), f"sdk.__all__ names {name!r} but sdk has no such attribute"
        assert getattr(sdk, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from sdk import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == EXPECTED_ALL


def test_reexported_classes_and_functions_say_sdk() -> None:
    objects = [getattr(sdk, n) for n in sdk.__all__]
    classes = [o for o in objects if inspect.isclass(o)]
    functions = [o for o in objects if inspect.isfunction(o)]
    # Every CamelCase name is a class; every lower_case name but the marker a function.
    camel = {n for n in EXPECTED_ALL if n[0].isupper() and not n.isupper()}
    assert {c.__name__ for c in classes} == camel
    assert {f.__name__ for f in functions} == {
        "header_name_validator",
        "header_value_validator",
        "host_matches",
        "host_of",
        "is_token",
        "make_converter",
        "method_validator",
        "one_or_many",
        "parse_host_pattern",
        "structure",
        "unstructure",
    }
    for obj in classes + functions:
        assert obj.__module__ == "sdk", f"{obj.__qualname__}.__module__ is {obj.__module__!r}"
    assert repr(sdk.Flow) == "<class 'sdk.Flow'>"


def test_constants() -> None:
    assert sdk.PROJECT == "trellis"
    assert sdk.HOOK_PREFIX == "trellis_"
    assert sdk.ENTRY_POINT_GROUP == "trellis.plugins"
    assert sdk.AUTH_USER.name == "auth_user"
    assert isinstance(sdk.AUTH_USER, sdk.StashKey)
    assert sdk.hookimpl.project_name == sdk.PROJECT


def test_only_hookspecs_and_testing_are_public_submodules() -> None:
    names = {m.name for m in pkgutil.iter_modules(sdk.__path__)}
    public = {n for n in names if not n.startswith("_")}
    assert public == PUBLIC_SUBMODULES
    assert all(n.startswith("_") for n in names - PUBLIC_SUBMODULES)
    for name in names:  # every submodule imports cleanly on its own
        importlib.import_module(f"sdk.{name}")


def test_private_modules_not_reachable_as_public_attributes() -> None:
    # ``sdk.flow`` must not exist by accident (only ``sdk._flow``).
    for name in ("flow", "http", "stash", "errors", "markers", "lifecycle", "config", "version"):
        assert not hasattr(sdk, name), f"sdk.{name} looks public"
