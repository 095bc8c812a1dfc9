"""Throwaway ``redis-server`` processes for tests.

Each test that needs Redis starts its own server on a free port in a
temporary directory (no persistence), and can kill and restart it on the
same port to test outages.  The wait for readiness is a poll of a real
``PING`` with a deadline; servers run under ``setpriv --pdeathsig`` so they
die with the test runner, and the test's cleanup stops them otherwise.
A missing ``redis-server`` skips the test, and fails it under ``CI=true``.
(A module of its own rather than a part of :mod:`tests.support.services`,
so branches adding other servers there merge without conflicts.)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from tests.support.ci import missing
from tests.support.services import _as_user, _free_port

START_TIMEOUT = 20.0


def redis_argv(binary: str, port: int, directory: str, password: str | None = None,
               tls: tuple[str, str] | None = None, logfile: str = "") -> list[str]:
    """The command line of a private redis-server on 127.0.0.1:``port``:
    no persistence, in the foreground, optionally with a password and TLS only
    (``tls``: key file, certificate file).  Shared by every Redis the tests
    start (this module's and :class:`tests.support.push_services.PushRedis`)."""
    ports = ["--port", str(port)]
    if tls:
        key, cert = tls
        ports = ["--port", "0", "--tls-port", str(port), "--tls-key-file", key,
                 "--tls-cert-file", cert, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
    argv = [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory), "--daemonize", "no"]
    if logfile:
        argv += ["--loglevel", "warning", "--logfile", logfile]
    if password:
        argv += ["--requirepass", password]
    return argv


class RedisServer:
    """One redis-server on 127.0.0.1; :meth:`kill` and :meth:`start` again
    keep the same port."""

    def __init__(self, password: str | None = None, tls: tuple[str, str] | None = None) -> None:
        #: (key file, certificate file): serve TLS only (rediss://), the
        #: certificate being its own authority.
        self.tls = tls
        self.binary = shutil.which("redis-server", path=os.pathsep.join(
            [os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin"]))
        if self.binary is None:
            missing("redis-server is not installed")
        self.cli = shutil.which("redis-cli", path=os.pathsep.join(
            [os.environ.get("PATH", ""), "/usr/bin"]))
        self.password = password
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.directory = tempfile.mkdtemp(prefix="oro-sync-redis-")
        self._process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}localhost:{self.port}/{db}"
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def start(self) -> None:
        argv = redis_argv(self.binary, self.port, self.directory, self.password, self.tls,
                          logfile=os.path.join(self.directory, "redis.log"))
        self._process = subprocess.Popen(_as_user(argv, None, pdeathsig=True),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: "
                                   f"{self._log_tail()}")
            if self._ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT:.0f} s")

    def _ping(self) -> bool:
        try:
            with self._socket() as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _socket(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=1)
        if self.tls:
            import ssl

            context = ssl.create_default_context(cafile=self.tls[1])
            s = context.wrap_socket(s, server_hostname="localhost")
        return s

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log"), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the server (an outage as abrupt as a crash) and wait for it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def command(self, *args: Any) -> list[str]:
        """Run one command through ``redis-cli``; its output lines."""
        if self.cli is None:
            missing("redis-cli is not installed")
        argv = [self.cli, "-h", self.host, "-p", str(self.port)]
        if self.tls:
            argv += ["--tls", "--cacert", self.tls[1], "--sni", "localhost"]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        out = subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        return [line for line in out.splitlines() if line]

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def redis_server(testcase: Any, password: str | None = None,
                 tls: tuple[str, str] | None = None) -> RedisServer:
    """Start a private redis-server for ``testcase``; stopped in its cleanup."""
    server = RedisServer(password, tls)
    testcase.addCleanup(server.destroy)
    server.start()
    return server
