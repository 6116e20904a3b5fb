"""The trio shell around the sans-IO protocol code: listeners, connections,
exchanges, the upstream pool and timeouts.

May import: stdlib, trio, sdk, kernel.protocol, kernel.dispatch,
kernel.generation, kernel.config.
"""
