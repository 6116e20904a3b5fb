"""The hooks pluggy calls itself, never awaiting: lifecycle, groups, failures.

Part of :mod:`sdk.hookspecs`, which re-exports every hook here (and says
what the two kinds of hooks are): the plugin author's reference is there.
These are the :data:`LIFECYCLE_HOOKS`: called on every plugin instance of a
configuration generation (or on the one a group names), plain ``def`` only.

May import: sdk._markers; types only under TYPE_CHECKING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdk._markers import hookspec

if TYPE_CHECKING:
    import pluggy

    from sdk._balance import Balancer, Group, Target
    from sdk._errors import PluginError
    from sdk._lifecycle import StartupContext

__all__ = [
    "LIFECYCLE_HOOKS",
    "trellis_addhooks",
    "trellis_balancer",
    "trellis_config_check",
    "trellis_health_probe",
    "trellis_plugin_error",
    "trellis_shutdown",
    "trellis_startup",
    "trellis_target_health",
]

# ---------------------------------------------------------------------------
# Lifecycle hooks (plain def)
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def trellis_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Register new hook specifications that other plugins may implement.

    Called once when the plugin is registered, and also for plugins registered
    later (historic), so a plugin can offer its own extension point
    (``pluginmanager.add_hookspecs(module)``), as pytest's ``pytest_addhooks``.

    :param pluginmanager: the generation's :class:`pluggy.PluginManager`.
    """


@hookspec
def trellis_config_check(
    routes: tuple[str, ...], groups: tuple[str, ...], listeners: tuple[str, ...]
) -> list[str] | None:
    """Check this instance's configuration against the rest of the config.

    Called on every plugin instance while a configuration is validated
    (``kernel check``, start, every reload), after each instance was built from
    its table. A non-empty list fails the whole configuration: at start the
    process exits with code 1, on reload the old generation keeps serving.

    When the table itself has problems, the kernel builds the instance once
    more from the table with the refused values left out (their defaults
    stand in) and calls this hook on it, so both kinds are listed in one pass;
    what it returns at, under or above a refused value's path is dropped.
    When that cannot be done (a required key missing or refused, a list item
    itself wrong, the constructor refusing the rest), the hook is not called.
    ``__init__`` must therefore do no I/O (as always) and accept any valid
    config instance.

    :param routes: the names of the configured routes.
    :param groups: the names of the configured upstream groups (``[[groups]]``).
    :param listeners: the names of the configured listeners.
    :return: problems, each ``"<key path inside the table>: <message>"`` such as
        ``"rules[2].route: no route named 'api'"``; the kernel prefixes the
        table's path (``$.plugins.router.``). ``None`` or ``[]`` when fine.

    Builtin users: ``router`` (rules must name existing routes), ``canary``
    and ``mirror`` (their ``group`` must exist), ``metrics`` and ``health``
    (their ``listener`` must exist).
    """


@hookspec
def trellis_startup(context: StartupContext) -> None:
    """The configuration generation this instance belongs to goes live.

    Called once per generation, after every listener is bound and before the
    first flow of the generation. Open resources here (not in ``__init__``,
    which must do no I/O). Long-running work (health checks, flushers) is
    started with ``context.start_soon(async_fn)``; it is cancelled when the
    generation is retired.

    Raising fails the generation: at start the process exits (3 for an
    :class:`OSError`, a storage error such as a log directory that cannot be
    made; 1 otherwise), and a reload is refused while the old generation
    keeps serving. ``trellis_shutdown`` is then called on the instances
    whose ``trellis_startup`` had already run, not on the one that raised.

    :param context: the generation number and ``start_soon``.
    """


@hookspec
def trellis_shutdown() -> None:
    """The generation is retired: its last flow has ended, or the process exits.

    Close what ``trellis_startup`` opened. Background tasks started through the
    startup context have already been cancelled.
    """


# ---------------------------------------------------------------------------
# Upstream groups (plain def; called by the kernel, not on a chain)
# ---------------------------------------------------------------------------


@hookspec
def trellis_balancer(group: Group) -> Balancer | None:
    """Make the load balancer of an upstream group whose ``strategy`` names this instance.

    Called while a configuration is built, on the one plugin instance that
    ``[[groups]] strategy`` names (not on a chain), once per group that is
    new or changed; an unchanged group keeps its balancer, and so its state,
    across a reload. Plain ``def``: it must only build an object.

    :param group: the group's name and its targets (their live state is
        kept by the kernel and may be read at every pick).
    :return: an object with ``pick(flow, candidates)`` (see
        :class:`~sdk.Balancer`). ``None`` is a configuration error for the
        group. A plugin may refuse a group it cannot serve by raising
        :class:`~sdk.ConfigError`.

    Builtin users: ``roundrobin``, ``weighted``, ``random``, ``leastconn``,
    ``p2c``, ``hash``.
    """


@hookspec
def trellis_target_health(target: Target, available: bool, reason: str) -> None:
    """A target of an upstream group became available or unavailable.

    Called on every plugin instance of the live generation when an active
    health check crosses its threshold, when passive checks eject a target
    or let it back, or when a drained target comes back. Plain ``def``, on
    the event loop: keep it quick. The kernel logs every change itself.

    :param target: the target (``target.group`` names its group).
    :param available: its new state.
    :param reason: why, such as ``"health check: 3 failures (connect refused)"``.

    Intended users: metrics, health endpoint, alerting plugins.
    """


@hookspec
def trellis_health_probe(target: Target, healthy: bool, duration_s: float, detail: str) -> None:
    """One active health probe of a group target finished.

    Called on every plugin instance of the live generation after each probe
    (``[groups.health]``), whatever its result; ``trellis_target_health``
    reports only the changes. Plain ``def``, on the event loop: keep it quick.

    :param target: the probed target.
    :param healthy: this probe's verdict (before thresholds).
    :param duration_s: seconds the probe took, connect included.
    :param detail: what was seen, such as ``"status 200"`` or the error.

    Intended users: metrics (a health-check duration histogram).
    """


# ---------------------------------------------------------------------------
# The fault boundary
# ---------------------------------------------------------------------------


@hookspec
def trellis_plugin_error(plugin: str, hook: str, error: PluginError, fail_open: bool) -> None:
    """A plugin failed inside a flow hook and the fault boundary caught it.

    Called on every plugin instance of the live generation for every such
    failure, after the kernel's log line for it (which is rate-limited: a
    failure repeating on every request is logged a few times, then
    summarised), whether the flow then failed (``fail_closed``) or went on
    (``fail_open``). Plain ``def``; an implementation that raises here is
    logged and ignored (never reported again through this hook).

    :param plugin: the failing instance's name.
    :param hook: the hook it failed in.
    :param error: the error (its ``__cause__`` is the original exception).
    :param fail_open: whether the flow went on as if the plugin returned ``None``.

    Intended users: metrics, alerting.
    """


#: Hooks pluggy calls itself, never awaiting: plain ``def`` only.
LIFECYCLE_HOOKS = (
    "trellis_addhooks", "trellis_config_check", "trellis_startup", "trellis_shutdown",
    "trellis_balancer", "trellis_target_health", "trellis_health_probe", "trellis_plugin_error",
)  # fmt: skip
