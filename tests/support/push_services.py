"""Throwaway Redis and RabbitMQ servers for the backend pusher tests.

Same rules as :mod:`tests.support.services` (PostgreSQL, MariaDB): each
server runs in a temporary directory on a port the OS picked, is started
by the test itself, can be killed (SIGKILL, as a crash) and started again
on the same port, and is stopped by the test's clean-up (with an
``atexit`` hook and a parent-death signal as last resorts).  Readiness is
a real client's request succeeding (Redis ``PING``; an AMQP handshake with
pika), polled with a deadline, never a fixed sleep.

RabbitMQ runs as a private node: its own node name, AMQP and distribution
ports, Mnesia and log directories, an empty plugin list, and a
configuration file of its own, so the machine's ``/etc/rabbitmq`` (which
fixes port 5672) does not apply.  It takes several seconds to boot, so
tests share one (:meth:`_Server.shared`).

A missing ``redis-server`` or ``rabbitmq-server`` skips, except under
``CI=true`` where it fails (:func:`tests.support.ci.missing`).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.ci import missing
from tests.support.services import _as_user, _free_port, _tail

__all__ = ["PushRabbitMQ", "PushRedis"]

START_TIMEOUT = 60.0
_live: set = set()
_shared: dict = {}


def _cleanup() -> None:
    for server in list(_live):
        try:
            server.destroy()
        except Exception:
            pass


atexit.register(_cleanup)


class _Server:
    """A server process in a private directory, on a port kept across restarts."""

    kind = "server"

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=f"oro-sync-push-{self.kind}-"))
        self.log_path = self.directory / "server.log"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        _live.add(self)

    @classmethod
    def shared(cls) -> "_Server":
        """One server of this kind for the whole test run (trial has no
        setUpClass), started on first use and brought back if a test left it
        stopped; destroyed at exit."""
        server = _shared.get(cls)
        if server is None:
            server = _shared[cls] = cls()
        if server.process is None or server.process.poll() is not None:
            server.process = None
            server.start()
        return server

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    def server_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process (from the reactor's thread: the parent-death
        signal fires when the *thread* that started a child ends, so a
        server spawned from a pool thread could die with that thread)."""
        with open(self.log_path, "ab") as out:
            out.write(f"--- starting on port {self.port}\n".encode())
            out.flush()
            self.process = subprocess.Popen(_as_user(self.command(), None, pdeathsig=True),
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, cwd=self.directory,
                                            env=self.environment())

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll until a client is served (blocking: may run in a thread)."""
        process = self.process
        assert process is not None, "not spawned"
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if process.poll() is not None:
                self.process = None
                raise RuntimeError(f"{self.kind} exited with status {process.returncode} while "
                                   f"starting:\n{_tail(self.log_path)}")
            if self.ready():
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(f"{self.kind} not ready within {timeout:.0f} s:\n"
                                   f"{_tail(self.log_path)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def kill(self) -> None:
        """SIGKILL, as a crash; :meth:`start` brings it back on the same port."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        process = self.process
        if process is None:
            return
        pid = self.server_pid()
        try:
            if pid is not None:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        self.process = None

    def destroy(self) -> None:
        try:
            self.kill()
        finally:
            _live.discard(self)
            shutil.rmtree(self.directory, ignore_errors=True)


class PushRedis(_Server):
    """A private ``redis-server`` (no persistence)."""

    kind = "redis"

    def __init__(self, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            missing("redis-server is not installed (Debian: redis-server)")
        self.password = password
        super().__init__()

    def command(self) -> list[str]:
        from tests.support.redis_server import redis_argv

        # Its log on stdout, into server.log (shown when it fails to start).
        return redis_argv(self.binary, self.port, str(self.directory), self.password)

    def ready(self) -> bool:
        try:
            return self.command_reply(b"PING") == b"+PONG"
        except OSError:
            return False

    def command_reply(self, *args: bytes) -> bytes:
        """Send one command, return its first reply line (for test set-up)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            if self.password:
                self._exchange(s, b"AUTH", self.password.encode())
            return self._exchange(s, *args)

    @staticmethod
    def _exchange(s: socket.socket, *args: bytes) -> bytes:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0]

    def publish(self, channel: str, message: bytes) -> int:
        """PUBLISH; the number of subscribers that got it."""
        reply = self.command_reply(b"PUBLISH", channel.encode(), message)
        return int(reply[1:])


class PushRabbitMQ(_Server):
    """A private RabbitMQ node (guest/guest on 127.0.0.1)."""

    kind = "rabbitmq"

    def __init__(self) -> None:
        bindir = os.environ.get("ORO_SYNC_RABBITMQ_BINDIR", "/usr/lib/rabbitmq/bin")
        self.binary = os.path.join(bindir, "rabbitmq-server")
        if not os.access(self.binary, os.X_OK):
            missing(f"rabbitmq-server is not installed ({self.binary}; Debian: rabbitmq-server)")
        try:
            import pika  # noqa: F401
        except ImportError:
            missing("pika is not installed")
        super().__init__()
        self.dist_port = _free_port()
        self.node = f"orosync{os.getpid()}{secrets.token_hex(3)}@localhost"
        d = self.directory
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
                                         "log.console = true\nlog.console.level = warning\n")
        (d / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def command(self) -> list[str]:
        return [self.binary]

    def environment(self) -> dict[str, str]:
        d = self.directory
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(d),  # the Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
        })
        return env

    def server_pid(self) -> int | None:
        # The script starts the Erlang VM as its child: signal the VM itself.
        try:
            return int((self.directory / "rabbit.pid").read_text().strip())
        except (OSError, ValueError):
            return super().server_pid()

    def ready(self) -> bool:
        import pika

        try:
            conn = pika.BlockingConnection(pika.URLParameters(
                self.url + "?connection_attempts=1&socket_timeout=2&blocked_connection_timeout=2"))
        except Exception:
            return False
        conn.close()
        return True

    def blocking(self):
        """A blocking pika connection for test set-up and publishing."""
        import pika

        return pika.BlockingConnection(pika.URLParameters(self.url))

    def _signal(self, sig: int) -> None:
        super()._signal(sig)
        try:
            (self.directory / "rabbit.pid").unlink()
        except OSError:
            pass
