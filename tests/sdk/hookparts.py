"""Helpers for the tests of sdk.hookspecs' parts (not a test module)."""

from __future__ import annotations

import inspect
from types import ModuleType

import pluggy

import sdk
import sdk.hookspecs


def plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with every hookspec."""
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    return pm


def hooks_of(module: ModuleType) -> list[str]:
    """The hooks a part of sdk.hookspecs defines, in source order."""
    found = [
        fn
        for name, fn in vars(module).items()
        if inspect.isfunction(fn) and name.startswith(sdk.HOOK_PREFIX)
    ]
    return [fn.__name__ for fn in sorted(found, key=lambda fn: fn.__code__.co_firstlineno)]
