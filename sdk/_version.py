"""The SDK's API version.

``API_VERSION`` changes its major number when a hook or data-model change
would break existing plugins. May import: nothing.
"""

API_VERSION = "1.0"
