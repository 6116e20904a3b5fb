"""The kernel's configuration: the attrs model and the loader that fills it.

``load_config(path)`` reads a TOML file with its includes, applies ``${VAR}``
substitution and ``TRELLIS_<SECTION>_<KEY>`` overrides, and structures the
result into :class:`Settings` with the strict converter from ``sdk``; any
problem raises ``sdk.ConfigError`` listing all of them. See
``docs/configuration.md`` for the file format.

May import: stdlib, attrs, cattrs, tomlkit, sdk, and its own submodules.
"""

from kernel.config.loader import LoadedConfig, load_config, loads_config
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
    "loads_config",
]
