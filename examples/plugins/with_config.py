"""A plugin with a config table: refuse requests whose path is under a denied prefix.

The ``[plugins.deny]`` table is described by an attrs class (:class:`DenyConfig`),
named by the plugin's ``config_class``. The kernel structures the table with
its strict converter (unknown keys and wrong types are errors with their
path) and calls ``DenyPlugin(config)``; a named instance
``[plugins.deny.admin]`` gets its own ``DenyPlugin``. Validators in the
config class report at config time, so the hook itself has nothing to check.

Load it with::

    [kernel.modules]
    deny = "examples.plugins.with_config:DenyPlugin"

    [kernel]
    plugins = ["deny"]

    [plugins.deny]
    prefixes = ["/admin", "/.git"]

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

from typing import Any

import attrs

import sdk


def _prefix(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # One item, in a deep_iterable: each bad prefix is reported at its own
    # index ($.plugins.deny.prefixes[1]), even beside one that is no string.
    if not value.startswith("/"):
        raise ValueError(f"must start with '/', got {value!r}")


@attrs.frozen(kw_only=True)
class DenyConfig:
    """The ``[plugins.deny]`` table."""

    # Path prefixes to refuse, matched on a segment boundary ("/admin" also covers
    # "/admin/x" and "/admin?x", not "/administrator").
    prefixes: list[str] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(_prefix)
    )
    # Status of the refusal (a 4xx).
    status: int = attrs.field(
        default=403, validator=[attrs.validators.ge(400), attrs.validators.le(499)]
    )
    # Body of the refusal.
    message: str = "forbidden\n"


class DenyPlugin:
    """Answer 403 (or the configured status) for requests under configured path prefixes."""

    config_class = DenyConfig

    def __init__(self, config: DenyConfig) -> None:
        self.config = config
        # Done once: no per-request normalisation.
        self._prefixes = tuple(p.rstrip("/") for p in config.prefixes)

    def denies(self, path: str) -> bool:
        """Whether ``path`` (query included or not) is under a denied prefix."""
        bare = path.partition("?")[0]
        for prefix in self._prefixes:
            if bare.startswith(prefix) and (len(bare) == len(prefix) or bare[len(prefix)] == "/"):
                return True
        return False

    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> sdk.Response | None:
        if not self.denies(flow.request.path):
            return None
        flow.record(f"deny: {flow.request.path_only}")
        return sdk.Response.make(self.config.status, self.config.message)
