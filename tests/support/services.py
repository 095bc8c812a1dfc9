"""Throwaway PostgreSQL and MariaDB servers for tests.

Tests that talk to a real database start their own server, on a free port,
in a temporary directory, and stop it in their clean-up -- they never touch
the machine's own database services, and they can stop and restart "their"
server to test reconnection.

Cost is kept low by initialising a data directory once per test process
(``initdb`` / ``mariadb-install-db``) and reusing it: successive servers of
one kind run on the same data directory (copying ~30 MB of small files for
every test took longer than the test itself), and each server empties the
test database on its first start, so every test still starts from a clean
database.  Only if that directory is busy (two servers of one kind at once)
does a server initialise a private one.

Robustness:

* every wait is a poll with a deadline (readiness = a real client connect
  succeeding), never a fixed sleep, and a server that exits early is
  reported with the tail of its log;
* servers are started through ``setpriv --pdeathsig`` when available, so
  they die even if the test runner is killed; an ``atexit`` hook and the
  test clean-ups stop them otherwise;
* PostgreSQL refuses to run as root, so under root it runs as the
  ``postgres`` (or ``nobody``) user, owning its temporary directory;
  MariaDB runs as the current user (``--user=root`` under root) with
  ``--skip-grant-tables``, so any user name works without a password.

Missing binaries or drivers skip the test -- except when ``CI=true``, where a
missing service is a failure, so CI cannot silently stop testing databases.
Binaries can be pointed at with ``ORO_SYNC_PG_BINDIR`` and
``ORO_SYNC_MARIADB_BINDIR``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SkipTest

__all__ = [
    "DatabaseServer",
    "MariaDBServer",
    "PostgresServer",
    "ServiceUnavailable",
    "mariadb_server",
    "postgres_server",
]

log = Logger()

#: Upper bound for a server to accept connections / to shut down.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class ServiceUnavailable(RuntimeError):
    """A database server needed by a test is not installed (fatal under CI)."""


def _unavailable(reason: str) -> None:
    """Skip the calling test, or fail it when running under CI."""
    if os.environ.get("CI") == "true":
        raise ServiceUnavailable(f"{reason} (CI=true: database tests are required)")
    raise SkipTest(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _run(argv: list[str], log_path: Path, timeout: float, user: str | None) -> None:
    """Run a set-up command (initdb...) to completion, bounded in time."""
    with open(log_path, "ab") as output:
        try:
            result = subprocess.run(
                _as_user(argv, user, pdeathsig=True),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{argv[0]} did not finish within {timeout:.0f} s:\n{_tail(log_path)}"
            ) from None
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed with exit status {result.returncode}:\n{_tail(log_path)}"
        )


_SETPRIV = shutil.which("setpriv")


def _as_user(argv: list[str], user: str | None, pdeathsig: bool, signame: str = "TERM") -> list[str]:
    """Wrap ``argv`` to run as ``user`` and to die with the test process.

    ``setpriv`` sets the parent-death signal after switching user (a change
    of credentials would clear it) and then execs, so the process we hold is
    the server itself, not a wrapper that would have to forward signals.
    """
    if _SETPRIV is None:
        if user is not None:
            raise RuntimeError("setpriv (util-linux) is needed to run a server as another user")
        return argv
    prefix = [_SETPRIV]
    if user is not None:
        prefix += ["--reuid", user, "--regid", user, "--init-groups"]
    if pdeathsig:
        prefix += ["--pdeathsig", signame]
    return prefix + ["--"] + argv


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


# One scratch directory per test process, holding the shared data
# directories and every server's own directory; removed at exit.
_scratch: Path | None = None
# kind -> the shared, initialised data directory (or why it could not be made)
_shared: dict[str, Path | BaseException] = {}
# kind -> the server currently using it
_shared_users: dict[str, "DatabaseServer"] = {}
_live: set["DatabaseServer"] = set()


_SCRATCH_PREFIX = "oro-sync-db-"


def _scratch_dir() -> Path:
    global _scratch
    if _scratch is None:
        _sweep_abandoned()
        _scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX))
        (_scratch / "owner.pid").write_text(str(os.getpid()))
        # Servers may run as another user (postgres): let them traverse it.
        os.chmod(_scratch, 0o711)
        atexit.register(_cleanup_everything)
    return _scratch


def _sweep_abandoned() -> None:
    """Remove scratch directories of test processes that were killed.

    Their servers died with them (parent-death signal); only files remain.
    """
    for path in glob.glob(os.path.join(tempfile.gettempdir(), _SCRATCH_PREFIX + "*")):
        try:
            owner = int(Path(path, "owner.pid").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            continue  # alive (or not ours to judge)


def _cleanup_everything() -> None:
    """Last resort at interpreter exit: stop what tests failed to stop."""
    for server in list(_live):
        try:
            server.destroy()
        except Exception:
            pass
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)


class DatabaseServer:
    """A private database server process with a fixed port across restarts."""

    kind = "database"
    #: Signal for a quick but clean shutdown.
    stop_signal = signal.SIGTERM
    #: Signal the server gets if the test process dies without stopping it.
    death_signal = signal.SIGTERM
    host = "127.0.0.1"
    user = "root"
    database = "oro"

    def __init__(self) -> None:
        self.run_as = self._run_as()
        # Socket, pid file, log: per server, so a stale one cannot confuse us.
        self.directory = Path(tempfile.mkdtemp(prefix=f"{self.kind}-", dir=_scratch_dir()))
        self.log_path = self.directory / "server.log"
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._database_reset = False
        self._destroyed = False
        try:
            if self.run_as is not None:
                _chown_tree(self.directory, self.run_as)
            if self.kind not in _shared_users:
                self.data_dir = self._shared_data_dir()
                _shared_users[self.kind] = self
            else:
                self.data_dir = self.directory / "data"
                self._initialise(self.data_dir)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        _live.add(self)

    # -- to be provided by subclasses ------------------------------------

    def _run_as(self) -> str | None:
        return None

    def _make_data_dir(self, target: Path) -> None:
        """Initialise a data directory at ``target`` (initdb...)."""
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def connect(self, database: str | None = None) -> Any:
        """A blocking driver connection (autocommit) for test set-up."""
        raise NotImplementedError

    def _reset_database(self) -> None:
        """Make ``self.database`` exist and be empty."""
        raise NotImplementedError

    def url(self) -> str:
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------

    def _initialise(self, target: Path) -> None:
        if self.run_as is not None:
            target.mkdir(exist_ok=True)
            _chown_tree(target, self.run_as)
        self._make_data_dir(target)

    def _shared_data_dir(self) -> Path:
        cached = _shared.get(self.kind)
        if isinstance(cached, BaseException):
            raise cached
        if cached is None:
            # Unique: a directory abandoned by an unkillable server stays put.
            target = Path(tempfile.mkdtemp(prefix=f"data-{self.kind}-", dir=_scratch_dir()))
            try:
                self._initialise(target)
            except (SkipTest, ServiceUnavailable):
                raise
            except BaseException as exc:
                # Do not pay for a failing initdb in every test.
                _shared[self.kind] = exc
                raise
            _shared[self.kind] = cached = target
        return cached

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it accepts connections.

        The first start picks a free port (retrying if another process won
        the race for it); later starts reuse it, as a restarted production
        database would.
        """
        if self._destroyed:
            raise RuntimeError("server already destroyed")
        if self.running:
            return
        first_start = self.port is None
        attempts = 3 if first_start else 1
        for attempt in range(attempts):
            if first_start:
                self.port = _free_port()
            try:
                self._spawn_and_wait(timeout)
                break
            except _EarlyExit as exc:
                if attempt + 1 < attempts and "in use" in exc.log:
                    continue
                raise RuntimeError(str(exc)) from None
        if not self._database_reset:
            self._reset_database()
            self._database_reset = True

    def _spawn_and_wait(self, timeout: float) -> None:
        with open(self.log_path, "ab") as output:
            output.write(f"--- starting on port {self.port}\n".encode())
            output.flush()
            self._process = subprocess.Popen(
                _as_user(
                    self._command(),
                    self.run_as,
                    pdeathsig=True,
                    signame=self.death_signal.name[3:],
                ),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        deadline = time.monotonic() + timeout
        delay = 0.05
        last_error: Exception | None = None
        while True:
            if self._process.poll() is not None:
                status = self._process.returncode
                self._process = None
                raise _EarlyExit(
                    f"{self.kind} exited with status {status} while starting:\n"
                    f"{_tail(self.log_path)}",
                    _tail(self.log_path),
                )
            try:
                self.connect(database=self._bootstrap_database()).close()
                log.debug("{kind} ready on port {port}", kind=self.kind, port=self.port)
                return
            except Exception as exc:  # not accepting connections yet
                last_error = exc
            if time.monotonic() >= deadline:
                self._kill()
                raise RuntimeError(
                    f"{self.kind} did not accept connections within {timeout:.0f} s"
                    f" ({last_error}):\n{_tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _bootstrap_database(self) -> str | None:
        return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shut the server down cleanly (killing it past ``timeout``)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warn("{kind} did not stop in time; killing it", kind=self.kind)
                self._kill()
                return
        self._process = None

    def _kill(self) -> None:
        """SIGKILL; ``_process`` stays set if even that did not end it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                return
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and delete its directory (idempotent)."""
        if self._destroyed:
            return
        try:
            self.stop()
        finally:
            self._destroyed = True
            _live.discard(self)
            shutil.rmtree(self.directory, ignore_errors=True)
            if _shared_users.get(self.kind) is self:
                if self._process is None:
                    del _shared_users[self.kind]
                else:
                    # Could not be stopped: nobody else may use its data;
                    # the next server initialises a new directory.
                    _shared.pop(self.kind, None)
                    del _shared_users[self.kind]

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh autocommit connection; return its rows."""
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            rows = list(cursor.fetchall()) if cursor.description else []
            cursor.close()
            return rows
        finally:
            conn.close()


class _EarlyExit(Exception):
    def __init__(self, message: str, log_tail: str):
        super().__init__(message)
        self.log = log_tail


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


def _postgres_bindir() -> Path | None:
    candidates: list[str] = []
    if os.environ.get("ORO_SYNC_PG_BINDIR"):
        candidates.append(os.environ["ORO_SYNC_PG_BINDIR"])

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    return None


class PostgresServer(DatabaseServer):
    kind = "postgresql"
    # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected at
    # once, which is what a restart looks like to the provider.
    stop_signal = signal.SIGINT
    death_signal = signal.SIGINT
    user = "postgres"

    def __init__(self) -> None:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            _unavailable("psycopg2 is not installed")
        bindir = _postgres_bindir()
        if bindir is None:
            _unavailable("PostgreSQL server binaries (initdb, postgres) not found")
        self.bindir = bindir
        super().__init__()

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
                return candidate
            except KeyError:
                continue
        _unavailable("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
        return None

    def _make_data_dir(self, target: Path) -> None:
        log_path = self.directory / "initdb.log"
        _run(
            [
                str(self.bindir / "initdb"),
                "-D", str(target),
                "-U", self.user,
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            log_path,
            timeout=120,
            user=self.run_as,
        )

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            # Throwaway data: durability only costs time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "autovacuum": "off",
            "shared_buffers": "16MB",
            "max_connections": "30",
            "logging_collector": "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def connect(self, database: str | None = None) -> Any:
        import psycopg2

        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=database or self.database,
            connect_timeout=2,
        )
        conn.autocommit = True
        return conn

    def _bootstrap_database(self) -> str:
        return "postgres"

    def _reset_database(self) -> None:
        conn = self.connect(database="postgres")
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()
        # Emptying the schema is much cheaper than re-creating the database.
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("DROP SCHEMA IF EXISTS public CASCADE")
                cursor.execute("CREATE SCHEMA public")
        finally:
            conn.close()

    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


# ---------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------


def _mariadb_binaries() -> tuple[str, str] | None:
    search = os.pathsep.join(
        filter(
            None,
            [
                os.environ.get("ORO_SYNC_MARIADB_BINDIR"),
                os.environ.get("PATH"),
                "/usr/sbin",
                "/usr/bin",
                "/usr/libexec",
            ],
        )
    )
    server = shutil.which("mariadbd", path=search) or shutil.which("mysqld", path=search)
    install = shutil.which("mariadb-install-db", path=search) or shutil.which(
        "mysql_install_db", path=search
    )
    if server and install:
        return server, install
    return None


class MariaDBServer(DatabaseServer):
    kind = "mariadb"
    stop_signal = signal.SIGTERM
    # A SIGTERM that arrives while mariadbd is still starting can be lost,
    # leaving an orphan; its data is disposable once the tests are gone.
    death_signal = signal.SIGKILL
    user = "root"

    #: InnoDB settings shared by mariadb-install-db and every server (the
    #: redo log size must agree), small so that starts are cheap.
    _innodb = [
        "--innodb-log-file-size=8M",
        "--innodb-buffer-pool-size=16M",
        "--innodb-use-native-aio=0",
    ]

    def __init__(self) -> None:
        try:
            import pymysql  # noqa: F401
        except ImportError:
            _unavailable("PyMySQL is not installed")
        binaries = _mariadb_binaries()
        if binaries is None:
            _unavailable("MariaDB server binaries (mariadbd, mariadb-install-db) not found")
        self.server_binary, self.install_binary = binaries
        super().__init__()

    def _user_option(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; switching to
        # another user itself would clear the parent-death signal.
        return ["--user=root"] if os.geteuid() == 0 else []

    def _make_data_dir(self, target: Path) -> None:
        log_path = self.directory / "install-db.log"
        _run(
            [
                self.install_binary,
                "--no-defaults",
                f"--datadir={target}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user_option(),
                *self._innodb,
            ],
            log_path,
            timeout=120,
            user=None,
        )

    def _command(self) -> list[str]:
        return [
            self.server_binary,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--socket={self.directory / 'mysqld.sock'}",
            f"--pid-file={self.directory / 'mysqld.pid'}",
            f"--tmpdir={self.directory}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            "--skip-grant-tables",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--performance-schema=OFF",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--max-connections=50",
            *self._user_option(),
            *self._innodb,
        ]

    def connect(self, database: str | None = None) -> Any:
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password="",
            database=database,
            connect_timeout=2,
            read_timeout=10,
            write_timeout=10,
            autocommit=True,
            charset="utf8mb4",
            # PyMySQL otherwise tries TLS and loads the system CA store on
            # every connect (~50 ms): pointless for a private local server.
            ssl_disabled=True,
        )

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect(database=self.database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def _reset_database(self) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
                cursor.execute(
                    f"CREATE DATABASE `{self.database}`"
                    " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
        finally:
            conn.close()

    def url(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


# ---------------------------------------------------------------------------
# Test helpers
# ---------------------------------------------------------------------------


def _started(server_class: type[DatabaseServer], testcase: Any) -> DatabaseServer:
    server = server_class()
    # Registered before start() so a server that fails to come up is still
    # stopped and its directory removed.
    testcase.addCleanup(server.destroy)
    server.start()
    return server


def postgres_server(testcase: Any) -> PostgresServer:
    """Start a private PostgreSQL for ``testcase``; stopped in its clean-up."""
    return _started(PostgresServer, testcase)  # type: ignore[return-value]


def mariadb_server(testcase: Any) -> MariaDBServer:
    """Start a private MariaDB for ``testcase``; stopped in its clean-up."""
    return _started(MariaDBServer, testcase)  # type: ignore[return-value]
