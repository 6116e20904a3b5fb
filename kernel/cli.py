"""The ``kernel`` command: ``run``, ``check``, ``explain``, ``plugins``.

Exit codes (ARCHITECTURE.md): 0 ok, 1 configuration error (a wrong command
line too), 2 bind failure, 3 storage error. Configuration problems are
printed one per line, each with its path, so every mistake can be fixed in
one pass.

May import: everything in kernel, sdk, attrs, tomlkit.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import attrs
import tomlkit

from kernel import snapshot
from kernel.app import EXIT_CONFIG, EXIT_CRASH, EXIT_OK, App
from kernel.config import Settings, load_config, load_document
from kernel.explain import explain as explain_text
from kernel.generation import load_generation
from kernel.log import configure_logging
from kernel.pluginhost import available_plugins
from kernel.supervisor import WORKER_ENV, Supervisor, worker_argv, worker_identity
from sdk import ConfigError

__all__ = ["main"]

DEFAULT_CONFIG = "config/default.toml"


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1, as configuration errors do: 2 means a bind failure."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="kernel", description="Trellis: a programmable HTTP proxy whose features are plugins."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c",
            "--config",
            default=os.environ.get("TRELLIS_CONFIG", DEFAULT_CONFIG),
            help=f"config file (default: $TRELLIS_CONFIG or {DEFAULT_CONFIG})",
        )
        sp.add_argument(
            "--plugins",
            metavar="A,B,C",
            help="the global plugin chain, replacing [kernel] plugins",
        )
        sp.add_argument(
            "-p",
            dest="block",
            action="append",
            default=[],
            metavar="no:NAME",
            help="block a plugin by name (repeatable), as pytest's -p no:NAME",
        )

    run = sub.add_parser("run", help="run the proxy")
    config_arg(run)
    run.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    check = sub.add_parser("check", help="validate a config; exit 1 listing every problem")
    config_arg(check)
    explain = sub.add_parser("explain", help="print each route's effective plugin chain")
    config_arg(explain)
    plugins = sub.add_parser("plugins", help="list installed plugins and their config tables")
    plugins.add_argument(
        "-c", "--config", help="also list the [kernel.modules] of this config (none by default)"
    )
    return p


def _blocked(values: Sequence[str]) -> list[str]:
    out = []
    for v in values:
        if not v.startswith("no:") or len(v) == 3:
            raise SystemExit(f"kernel: -p takes no:NAME, got {v!r}")
        out.append(v[3:])
    return out


def _chain(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [p.strip() for p in value.split(",") if p.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(raw)
    # [kernel.modules] references resolve from the working directory, as they
    # do under ``python -m kernel``; last on the path, so that a file there
    # never shadows an installed module.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)
    try:
        if args.command == "plugins":
            code = _cmd_plugins(args.config)
        else:
            chain, blocked = _chain(args.plugins), _blocked(args.block)
            if args.command == "run":
                code = _cmd_run(args.config, chain, blocked, args.verbose, raw)
            else:
                code = _cmd_check(args.config, chain, blocked, explain=args.command == "explain")
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader stopped (``kernel explain | head``): no traceback, and
        # none either when Python flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _cmd_run(
    config: str, chain: list[str] | None, blocked: list[str], verbose: int, raw: list[str]
) -> int:
    spec = os.environ.get("TRELLIS_LOG")
    level, log_format, workers, grace, abort, delay = "info", "console", 1, 10.0, 5.0, 0.0
    worker, _ = worker_identity()
    in_worker = WORKER_ENV in os.environ
    # A worker (re)started while its set has a snapshot starts from it, the
    # settings read only at start included (kernel/snapshot.py).
    snapshots = snapshot.snapshot_dir() if in_worker else None
    found, unreadable = snapshot.scan(snapshots) if snapshots is not None else ([], [])
    start = snapshot.newest(found)
    settings: Settings | None = None
    if start is not None:
        try:
            settings = load_document(start.document).settings
        except ConfigError:
            pass  # App.run says so, and loads the file
    if settings is None:
        try:
            settings = load_config(config).settings
        except ConfigError:
            pass  # App.run reports it properly below
    if settings is not None:
        level, log_format = settings.kernel.log_level, settings.kernel.log_format
        workers, grace = settings.server.workers, settings.kernel.shutdown_grace_s
        abort, delay = settings.kernel.shutdown_abort_s, settings.kernel.shutdown_delay_s
    try:
        configure_logging(
            level,
            verbosity=verbose,
            spec=spec,
            fmt=os.environ.get("TRELLIS_LOG_FORMAT") or log_format,
            worker=worker if in_worker else None,
        )
    except ValueError as exc:
        print(f"kernel: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for problem in unreadable:
        logging.getLogger("kernel.snapshot").warning("a snapshot is not readable: %s", problem)
    if workers > 1 and not in_worker:
        # (Port 0 is refused with workers by the config's cross-checks.)
        supervisor = Supervisor(
            worker_argv(raw), workers, grace, abort, delay_s=delay, config=config
        )
        return _crash_guarded(supervisor.run)
    worker, count = worker_identity() if in_worker else (0, 1)
    app = App(
        config,
        plugins=chain,
        blocked=blocked,
        settle_heap=True,
        exit_on_abort=True,
        worker=worker,
        workers=count,
        snapshots=snapshots,
        start_from=start,
    )
    return _crash_guarded(app.run)


def _crash_guarded(run: Callable[[], Awaitable[int]]) -> int:
    """``trio.run(run)``; an exception that escapes it is a crash: logged
    with its traceback, exit :data:`~kernel.app.EXIT_CRASH` (not Python's 1,
    which says "config error")."""
    import trio

    try:
        return trio.run(run)
    except Exception:
        logging.getLogger("kernel.app").critical(
            "the kernel crashed: an internal error, not a config problem"
            " (please report it with this traceback)",
            exc_info=True,
        )
        return EXIT_CRASH


def _cmd_check(config: str, chain: list[str] | None, blocked: list[str], *, explain: bool) -> int:
    try:
        gen = load_generation(config, plugins=chain, blocked=blocked)
    except ConfigError as exc:
        print(f"{config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if explain:
        print(explain_text(gen))
    else:
        names = ", ".join(gen.host.instances) or "none"
        print(
            f"{config}: ok ({len(gen.listeners)} listener(s), {len(gen.routes)} route(s),"
            f" plugin instances: {names})"
        )
    return EXIT_OK


def _cmd_plugins(config: str | None) -> int:
    modules: dict[str, str] = {}
    blocked: list[str] = []
    if config is not None:  # its [kernel.modules] are listed too
        try:
            kernel = load_config(config).settings.kernel
        except ConfigError as exc:
            print(f"{config}: {len(exc.problems)} problem(s)", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_CONFIG
        modules, blocked = kernel.modules, kernel.blocked
    found, problems = available_plugins(modules, blocked=blocked)
    for name in sorted(found):
        info = found[name]
        print(f"{name:<12} {info.summary.replace('``', '`')}")
        print(f"{'':<12} from {info.source}")
        cls = info.config_class
        if cls is not None and attrs.has(cls):
            print(f"{'':<12} [plugins.{name}]")
            for field in attrs.fields(cls):
                print(f"{'':<14} {_toml_default(field.name, field.default)}")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return EXIT_OK


def _toml_default(name: str, default: object) -> str:
    """A config key and its default as TOML, or a comment when it has none."""
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()  # type: ignore[attr-defined]
    if default is attrs.NOTHING:
        return f"{name} = ...  # required"
    if default is None:
        return f"# {name} = ...  (optional, unset by default)"
    if isinstance(default, dict):
        table = tomlkit.inline_table()
        table.update(default)
        return f"{name} = {table.as_string()}"
    return f"{name} = {tomlkit.item(default).as_string()}"
