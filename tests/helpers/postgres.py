"""A real PostgreSQL server for tests: Debian's ``postgresql`` package, in a temporary directory.

:class:`PostgresServer` runs ``initdb`` and ``postgres`` from
``/usr/lib/postgresql/<newest>/bin`` (the Makefile installs Debian's
``postgresql``; the system service is not used) on a free loopback port,
with trust authentication for the ``postgres`` role, the Unix socket in the
same temporary directory, and durability off (``fsync=off``: test data
only). It is stopped by PID: SIGINT (PostgreSQL's *fast* shutdown), then
SIGKILL if it has not exited within 10 s, and its directory is removed.

``initdb`` refuses to run as root, and CI runs as root. Then the server's
files belong to the ``postgres`` system user and both programs run as that
user (``subprocess`` switches uid/gid in the child, as ``setpriv`` would).
The directory is made with :func:`tempfile.mkdtemp` under ``/tmp`` rather
than pytest's ``tmp_path``, whose ancestors are private to root
(``/tmp/pytest-of-root`` is mode 0700) and so unreachable by ``postgres``.
The tests are skipped, saying why, only when there is no PostgreSQL
installation or when running as root without a ``postgres`` user.

Fixtures (import them into a ``conftest.py``):

- ``postgres_server`` (session): the running :class:`PostgresServer`;
- ``postgres_url`` (function): a fresh, empty database for the test, as a
  ``postgresql://postgres@127.0.0.1:PORT/NAME`` URL.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.sockets import free_port

__all__ = ["PostgresServer", "find_bindir", "postgres_server", "postgres_url"]

#: How long a fresh cluster may take to accept connections.
START_TIMEOUT = 30.0


def find_bindir() -> Path | None:
    """The ``bin`` directory of the newest installed PostgreSQL, or ``None``."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates = [
        d
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if os.access(os.path.join(d, "initdb"), os.X_OK)
        and os.access(os.path.join(d, "postgres"), os.X_OK)
    ]
    return Path(max(candidates, key=version)) if candidates else None


class PostgresServer:
    """One throwaway PostgreSQL cluster and its ``postgres`` process."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.host = "127.0.0.1"
        self.port = 0
        self.user = "postgres"
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        #: Switch to this (uid, gid) in the children (when we are root).
        self._as: tuple[int, int] | None = None
        self._names = itertools.count(1)

    # ------------------------------------------------------------ start
    @classmethod
    def available(cls) -> tuple[Path | None, str]:
        """``(bindir, "")`` when a server can be started here, else ``(None, reason)``."""
        bindir = find_bindir()
        if bindir is None:
            return None, "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return None, "running as root and there is no 'postgres' user for initdb"
        return bindir, ""

    def _run_as(self) -> dict[str, Any]:
        if self._as is None:
            return {}
        uid, gid = self._as
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self._as = (entry.pw_uid, entry.pw_gid)
        self.root = root = Path(tempfile.mkdtemp(prefix="trellis-pg-"))
        (root / "sock").mkdir()
        if self._as is not None:
            for path in (root, root / "sock"):
                os.chown(path, *self._as)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        done = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                self.user,
                "--auth=trust",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
            ],
            capture_output=True,
            env=env,
            check=False,
            **self._run_as(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr.decode()}")
        last_error = ""
        for _attempt in range(3):  # a free port may be taken by the time postgres binds
            self.port = free_port()
            try:
                self._launch(env)
                return
            except RuntimeError as exc:
                last_error = str(exc)
        raise RuntimeError(last_error)

    def _launch(self, env: dict[str, str]) -> None:
        assert self.root is not None
        log_path = self.root / "server.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.root / "data"),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root / "sock"),
                    "-c",
                    f"listen_addresses={self.host}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # a Ctrl-C on pytest is not a shutdown request
                **self._run_as(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                text = log_path.read_text(errors="replace")
                self.proc = None
                raise RuntimeError(f"postgres exited before accepting connections:\n{text}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres not ready after {START_TIMEOUT}s")
            time.sleep(0.05)  # noqa: TID251 (sync fixture code, no trio loop)

    def _ready(self) -> bool:
        done = subprocess.run(
            [*self._client("pg_isready"), "-q", "-t", "1"],
            check=False,
        )
        return done.returncode == 0

    def _client(self, tool: str) -> list[str]:
        """The argv of a PostgreSQL client program pointed at this server."""
        return [str(self.bindir / tool), "-h", self.host, "-p", str(self.port), "-U", self.user]

    # -------------------------------------------------------------- use
    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; returns its URL."""
        name = name or f"test_{os.getpid()}_{next(self._names)}"
        done = subprocess.run(
            [*self._client("createdb"), name],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name} failed:\n{done.stderr.decode()}")
        return self.url(name)

    # ------------------------------------------------------------- stop
    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL after 10 s; then remove the files."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir, reason = PostgresServer.available()
    if bindir is None:
        pytest.skip(reason)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()
