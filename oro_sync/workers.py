"""``--workers N``: N server processes on one machine sharing one port.

The parent serves nobody itself.  It reserves the listening address (a
socket bound with ``SO_REUSEPORT`` that never listens, so an ephemeral port
is chosen once and stays taken), then runs N children, each a complete
``twistd oro-sync`` that listens on the same address with ``SO_REUSEPORT``:
the kernel spreads new connections over the children, and no process sits
in the path of any connection or event.  Workers reach each other only
through the broker (Redis), so ``--workers`` requires one.

A worker that dies is logged and started again after a back-off (0.5 s,
doubling up to 30 s while workers keep dying young; back to 0.5 s after one
lived a minute).  SIGTERM (or SIGINT) to the parent is passed to every
worker, each closes its clients with 1001 and exits, and the parent exits
once all are gone (killing any still there after the shutdown timeout).
SIGHUP to the parent is passed to every worker: each reloads in place.
A worker whose parent is gone (killed with SIGKILL) notices its closed
stdin pipe and shuts down the same way.  Only ``tcp:`` listen endpoints
are supported (terminate TLS in front of the workers).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, error, main, protocol
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from oro_sync.logs import Logger

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
#: A worker that lived this long resets the back-off.
HEALTHY_AFTER = 60.0

_TWISTD = "from twisted.scripts.twistd import run; run()"


def tcp_address(listen: str, reactor: Any) -> tuple[str, int, int]:
    """(interface, port, backlog) of a ``tcp:``/``tcp6:`` endpoint string;
    ValueError for any other kind."""
    from twisted.internet import endpoints

    try:
        ep = endpoints.serverFromString(reactor, listen)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"bad listen endpoint {listen!r}: {e}") from None
    if not isinstance(ep, (endpoints.TCP4ServerEndpoint, endpoints.TCP6ServerEndpoint)):
        raise ValueError("--workers needs a tcp: listen endpoint (put TLS in front of the workers)")
    default = "::" if isinstance(ep, endpoints.TCP6ServerEndpoint) else "0.0.0.0"
    return ep._interface or default, ep._port, ep._backlog


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT (not listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class ReusePortEndpoint:
    """A worker's listening endpoint: its own SO_REUSEPORT socket on the
    address the parent reserved (an IStreamServerEndpoint)."""

    def __init__(self, reactor: Any, host: str, port: int, backlog: int):
        self.reactor, self.host, self.port, self.backlog = reactor, host, port, backlog

    def listen(self, factory: Any) -> defer.Deferred:
        try:
            sock = reuseport_socket(self.host, self.port)
            sock.listen(self.backlog)
            sock.setblocking(False)
            try:
                port = self.reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
            finally:
                sock.close()  # the reactor holds its own copy of the descriptor
        except OSError as e:
            return defer.fail(error.CannotListenError(self.host, self.port, e))
        return defer.succeed(port)


@implementer(IReadDescriptor)
class ParentWatch:
    """Calls ``gone`` when the parent's end of our stdin pipe closes."""

    def __init__(self, gone: Callable[[], None]):
        self._gone = gone
        self._told = False

    def gone(self) -> None:
        if not self._told:
            self._told = True
            self._gone()

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.gone()
            return main.CONNECTION_DONE
        return None

    def connectionLost(self, reason: Any) -> None:
        # epoll reports a closed pipe as a hang-up, without a read.
        self.gone()

    def logPrefix(self) -> str:
        return "parent-watch"


class ParentWatchService(service.Service):
    """In a worker: stop the reactor (closing clients with 1001) when the
    parent is gone."""

    log = Logger()

    def __init__(self, reactor: Any):
        self.reactor = reactor
        self._watch = ParentWatch(self._gone)

    def startService(self) -> None:
        super().startService()
        self.reactor.addReader(self._watch)

    def stopService(self) -> None:
        super().stopService()
        self._watch._told = True
        self.reactor.removeReader(self._watch)

    def _gone(self) -> None:
        self.log.warn("the parent of this worker is gone: shutting down")
        self.reactor.callLater(0, self.reactor.stop)


class _Worker(protocol.ProcessProtocol):
    def __init__(self, pool: "WorkerPool", index: int):
        self.pool, self.index = pool, index
        self.started = pool.reactor.seconds()
        self.ended: defer.Deferred = defer.Deferred()
        self.pid: int | None = None

    def processEnded(self, reason: Any) -> None:
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(service.Service):
    """The parent of ``--workers N``: see the module docstring.

    :param argv: the command line of worker ``index`` listening on ``listen``.
    """

    log = Logger()

    def __init__(self, n: int, listen: str, argv: Callable[[int, str], list[str]], reactor: Any,
                 shutdown_timeout: float = 3.0):
        self.n = n
        self.listen = listen
        self.argv = argv
        self.reactor = reactor
        self.shutdown_timeout = shutdown_timeout
        self.workers: dict[int, _Worker] = {}
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, Any] = {}
        self._reserved: socket.socket | None = None
        self.child_listen = ""
        self._previous_hup: Any = None

    def startService(self) -> None:
        super().startService()
        host, port, backlog = tcp_address(self.listen, self.reactor)
        try:
            self._reserved = reuseport_socket(host, port)
        except OSError as e:
            self.log.critical("oro-sync cannot listen on {listen}: {why}", listen=self.listen, why=str(e))
            self.reactor.callWhenRunning(self.reactor.stop)
            return
        port = self._reserved.getsockname()[1]
        self.child_listen = child_endpoint(host, port, backlog)
        self.log.info("oro-sync workers: {n} processes sharing {host}:{port}", n=self.n, host=host,
                      port=port)
        for index in range(self.n):
            self._spawn(index)
        # SIGHUP (systemctl reload) is for the workers, which reload in place;
        # left at its default it would end the parent and with it every worker.
        self._previous_hup = signal.signal(signal.SIGHUP, self._hup)

    def _hup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Pass SIGHUP on to every worker (each re-reads its files)."""
        workers = list(self.workers.values())
        self.log.info("SIGHUP: reloading {n} workers", n=len(workers))
        for w in workers:
            self._signal(w, "HUP")

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if not self.running:
            return
        worker = _Worker(self, index)
        argv = self.argv(index, self.child_listen)
        transport = self.reactor.spawnProcess(worker, argv[0], argv, env=os.environ.copy(),
                                              childFDs={0: "w", 1: 1, 2: 2})
        worker.pid = transport.pid
        self.workers[index] = worker
        self.log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)

    def _ended(self, worker: _Worker, reason: Any) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        value = reason.value
        how = (f"signal {value.signal}" if getattr(value, "signal", None)
               else f"exit status {getattr(value, 'exitCode', 0) or 0}")
        if not self.running:
            self.log.info("worker {index} (pid {pid}) ended: {how}", index=worker.index,
                          pid=worker.pid, how=how)
            return
        lived = self.reactor.seconds() - worker.started
        failures = 0 if lived >= HEALTHY_AFTER else self._failures.get(worker.index, 0)
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** failures)
        self._failures[worker.index] = failures + 1
        self.log.warn("worker {index} (pid {pid}) died ({how}) after {lived:.1f} s; "
                      "starting it again in {delay:.1f} s", index=worker.index, pid=worker.pid,
                      how=how, lived=lived, delay=delay)
        self._restarts[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[override]
        super().stopService()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        workers = list(self.workers.values())
        for w in workers:
            self._signal(w, "TERM")
        if workers:
            done = defer.DeferredList([w.ended for w in workers])
            late = self.reactor.callLater(self.shutdown_timeout + 5, self._kill_all)
            yield done
            if late.active():
                late.cancel()
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    def _kill_all(self) -> None:
        for w in list(self.workers.values()):
            self.log.warn("worker {index} (pid {pid}) did not stop in time: killing it",
                          index=w.index, pid=w.pid)
            self._signal(w, "KILL")

    @staticmethod
    def _signal(worker: _Worker, name: str) -> None:
        try:
            worker.transport.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass


def worker_argv(options: Any) -> Callable[[int, str], list[str]]:
    """How the parent runs worker ``index``: the same twistd options as its
    own, minus ``--workers``, plus ``--worker INDEX`` and the reserved address."""
    base = [sys.executable, "-c", _TWISTD, "-n", "--pidfile=", "oro-sync"]
    if options["config"]:
        base += ["--config", os.path.abspath(options["config"])]
    for path in options["routing"]:
        base += ["--routing", path]
    for name in ("ping-interval", "log-level", "broker", "log-format"):
        if options.get(name) is not None:
            base += [f"--{name}", str(options[name])]
    admin = options.get("admin")
    if admin is None:
        admin = getattr(getattr(options, "config", None), "server", None)
        admin = getattr(admin, "admin", None)

    def argv(index: int, listen: str) -> list[str]:
        extra = [] if admin is None else ["--admin", worker_admin(str(admin), index)]
        return base + extra + ["--listen", listen, "--worker", str(index)]
    return argv


def child_endpoint(host: str, port: int, backlog: int) -> str:
    """The endpoint string of the reserved address for the workers: an IPv6
    host's colons escaped, as Twisted's endpoint syntax wants them."""
    if ":" in host:
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}:backlog={backlog}"
    return f"tcp:{port}:interface={host}:backlog={backlog}"


_PORTED = re.compile(r"^(tcp6?|ssl):(?:port=)?(\d+)(?=:|$)")


def worker_admin(endpoint: str, index: int) -> str:
    """Worker ``index``'s admin listener: each worker has its own /health and
    /metrics (a shared port would answer for a random worker), on the
    configured port plus the worker's index (``tcp:9101`` -> 9101, 9102, ...).
    A port of 0 stays 0 (the OS chooses); an endpoint without a port number
    (a UNIX socket) is served by worker 0 only; ``none`` stays off."""
    m = _PORTED.match(endpoint.strip())
    if m is None:
        return endpoint if index == 0 else "none"
    port = int(m.group(2))
    if port == 0:
        return endpoint
    return f"{m.group(1)}:{port + index}{endpoint.strip()[m.end():]}"
