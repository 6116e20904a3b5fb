"""The kernel's configuration: the attrs model and the loader that fills it.

``load_config(path)`` reads a TOML file with its includes, applies ``${VAR}``
substitution and ``TRELLIS_<SECTION>_<KEY>`` overrides, and structures the
result into :class:`Settings` with the strict converter from ``sdk``; any
problem raises ``sdk.ConfigError`` listing all of them. ``load_document``
loads again what one load read (its :class:`Document`), without the files. See
``docs/configuration.md`` for the file format.

May import: stdlib, attrs, cattrs, tomlkit, sdk, and its own submodules.
"""

from kernel.config.loader import Document, LoadedConfig, load_config, load_document, loads_config
from kernel.config.model import (
    CertificateConfig,
    H2Section,
    KernelSection,
    ListenerConfig,
    ListenerTls,
    PluginPolicy,
    RetryConfig,
    RouteConfig,
    ServerSection,
    Settings,
    TransportConfig,
    UpstreamSection,
    UpstreamTls,
)

__all__ = [
    "CertificateConfig",
    "Document",
    "H2Section",
    "KernelSection",
    "ListenerConfig",
    "ListenerTls",
    "LoadedConfig",
    "PluginPolicy",
    "RetryConfig",
    "RouteConfig",
    "ServerSection",
    "Settings",
    "TransportConfig",
    "UpstreamSection",
    "UpstreamTls",
    "load_config",
    "load_document",
    "loads_config",
]
