"""Drive third-party Node.js WAMP v1 clients from trial tests.

Why: unit tests of oro-sync's message grammar cannot tell whether a real
client library, speaking over a real socket, understands the server.  Each
:class:`NodeWampClient` is one ``node tests/node/driver.js`` process (the npm
``wamp1`` client on ``ws``) spawned in the trial reactor.  Commands go to its
stdin as JSON lines; its reports (WELCOME, EVENTs, call results, close) come
back on stdout as JSON lines and are turned into Deferreds, so a test can
orchestrate several peers without threads and without sleeping.

Every wait is bounded (:data:`DEFAULT_WAIT`): a missing message fails the
test with what the client did receive, instead of hanging until trial's
global timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from typing import Any, Callable

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest

#: tests/node: the driver script and its pinned npm dependencies.
NODE_DIR = FilePath(__file__).parent().parent().child("node")
DRIVER = NODE_DIR.child("driver.js")
#: The WAMP v2 driver (Autobahn|JS); same line protocol.
AUTOBAHN_V2 = NODE_DIR.child("autobahn_v2.js")

#: Seconds any single wait may take; generous for a loaded CI machine yet far
#: below the per-test timeout, so a lost message is reported precisely.
DEFAULT_WAIT = 10.0

Report = dict[str, Any]
Predicate = Callable[[Report], bool]


class NodeClientGone(Exception):
    """The driver process ended while a test was still waiting on it."""


def find_node() -> str:
    """Return the ``node`` executable, or skip (fail on CI) when the
    end-to-end environment is missing.

    Why the CI distinction: a developer without Node should still be able to
    run the Python suite, but on CI a missing Node or an un-installed
    ``node_modules`` would silently turn the interoperability tests into
    skips; there it must be a failure.
    """
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not on PATH (Node 20+ is needed for the end-to-end tests)"
    else:
        for package in ("wamp1", "ws", "autobahn"):
            if not NODE_DIR.descendant(["node_modules", package, "package.json"]).exists():
                problem = (f"npm package {package!r} is not installed in {NODE_DIR.path}: "
                           f"run `cd tests/node && npm ci`")
                break
    if problem is not None:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"end-to-end environment missing on CI: {problem}")
        raise SkipTest(problem)
    return node


class NodeWampClient(ProcessProtocol):
    """One ``driver.js`` process: a WAMP v1 peer the test talks through.

    ``reports`` keeps every line the driver wrote, in order; waits match
    against all of it (past and future), so a report that arrived before the
    test started waiting is not lost.
    """

    log = Logger()
    _tags = itertools.count()

    def __init__(self, name: str, reactor: Any):
        self.name = name
        self.reactor = reactor
        self.reports: list[Report] = []
        self.stderr = b""
        self._buffer = b""
        self._waiters: list[tuple[Predicate, Deferred]] = []
        self._end_waiters: list[Deferred] = []
        self._kill_call: Any = None
        self._killed_after: float | None = None
        self.exited = False
        self.session_id: str | None = None

    def __repr__(self) -> str:
        return f"<NodeWampClient {self.name} session={self.session_id}>"

    # -- spawning ---------------------------------------------------------------

    #: The driver script this class speaks to.
    script = DRIVER

    @classmethod
    def spawn(cls, reactor: Any, url: str, name: str, subprotocol: str = "wamp") -> "NodeWampClient":
        """Start a driver connected to ``url`` (it connects at once); for
        :class:`NodeWamp2Client` the last argument is the realm."""
        node = find_node()
        client = cls(name, reactor)
        reactor.spawnProcess(client, node, [node, cls.script.path, url, subprotocol],
                             env=dict(os.environ), path=NODE_DIR.path)
        return client

    async def welcomed(self, timeout: float = DEFAULT_WAIT) -> Report:
        """Wait for the WELCOME and remember the session id it carried."""
        report = await self.wait_for(lambda r: r["type"] == "welcome", "WELCOME", timeout)
        self.session_id = report["sessionId"]
        return report

    # -- ProcessProtocol ----------------------------------------------------------

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._report(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        if self.stderr:
            self.log.info("node client {name} stderr: {err}", name=self.name,
                          err=self.stderr.decode("utf-8", "replace"))
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(NodeClientGone(f"{self.name} exited ({reason.value}) while waited on; "
                                     f"stderr: {self.stderr!r}"))
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        end_waiters, self._end_waiters = self._end_waiters, []
        for d in end_waiters:
            if self._killed_after is not None:
                d.errback(AssertionError(f"{self.name} did not exit within {self._killed_after}s "
                                         f"and was killed; stderr {self.stderr!r}"))
            else:
                d.callback(None)

    def _report(self, report: Report) -> None:
        self.reports.append(report)
        if report["type"] == "error":
            self.log.warn("node client {name} reported: {msg}", name=self.name, msg=report.get("message"))
        still = []
        for predicate, d in self._waiters:
            if predicate(report):
                d.callback(report)
            else:
                still.append((predicate, d))
        self._waiters = still

    # -- waiting ------------------------------------------------------------------

    def wait_for(self, predicate: Predicate, what: str, timeout: float = DEFAULT_WAIT) -> Deferred:
        """A Deferred firing with the first report (ever) matching ``predicate``.

        Fails after ``timeout`` seconds with a message naming ``what`` and
        listing what the client did receive, so a missing EVENT is readable.
        """
        for report in self.reports:
            if predicate(report):
                return succeed(report)
        if self.exited:
            raise NodeClientGone(f"{self.name} already exited; cannot wait for {what}")
        d: Deferred = Deferred()
        entry = (predicate, d)
        self._waiters.append(entry)

        def timed_out(failure: Failure) -> Failure:
            if failure.check(TimeoutError):
                if entry in self._waiters:
                    self._waiters.remove(entry)
                raise AssertionError(f"{self.name} did not receive {what} within {timeout}s; "
                                     f"got {self.reports!r}; stderr {self.stderr!r}")
            return failure

        d.addTimeout(timeout, self.reactor)
        d.addErrback(timed_out)
        return d

    def events(self, topic: str | None = None) -> list[Report]:
        """The EVENT reports received so far (on ``topic`` if given)."""
        return [r for r in self.reports if r["type"] == "event" and (topic is None or r["topic"] == topic)]

    def wait_event(self, topic: str, event: Any, timeout: float = DEFAULT_WAIT) -> Deferred:
        """Wait for an EVENT with exactly this topic and payload."""
        return self.wait_for(lambda r: r["type"] == "event" and r["topic"] == topic and r["event"] == event,
                             f"EVENT {event!r} on {topic}", timeout)

    # -- commands -----------------------------------------------------------------

    def send(self, command: Report) -> None:
        """Write one command line to the driver."""
        self.transport.write(json.dumps(command).encode("utf-8") + b"\n")

    def prefix(self, prefix: str, uri: str) -> None:
        self.send({"op": "prefix", "prefix": prefix, "uri": uri})

    def subscribe(self, topic: str) -> None:
        self.send({"op": "subscribe", "topic": topic})

    def unsubscribe(self, topic: str) -> None:
        self.send({"op": "unsubscribe", "topic": topic})

    def publish(self, *args: Any) -> None:
        """Send ``[7, *args]`` through wamp1's ``publish``."""
        self.send({"op": "publish", "args": list(args)})

    def call(self, uri: str, *args: Any, timeout: float = DEFAULT_WAIT) -> Deferred:
        """CALL ``uri``; fires with the ``callresult`` or ``callerror`` report."""
        tag = f"{self.name}-{next(self._tags)}"
        d = self.wait_for(lambda r: r.get("tag") == tag, f"the answer to CALL {uri}", timeout)
        self.send({"op": "call", "tag": tag, "uri": uri, "args": list(args)})
        return d

    # -- ending -------------------------------------------------------------------

    def close(self, timeout: float = DEFAULT_WAIT) -> Deferred:
        """Close the WebSocket cleanly and wait for the process to exit
        (killing it if it does not, so no process outlives its test)."""
        d = self.ended(timeout)
        if not self.exited:
            self.send({"op": "close"})
            self.transport.closeStdin()
        return d

    def kill(self) -> Deferred:
        """Kill the process outright: the server sees the TCP connection drop
        without a WebSocket closing handshake."""
        d = self.ended()
        if not self.exited:
            self.transport.signalProcess("KILL")
        return d

    def ended(self, timeout: float = DEFAULT_WAIT) -> Deferred:
        """Fires once the process has exited.

        If it has not exited after ``timeout`` seconds it is killed (so no
        process outlives its test) and the Deferred fails once it is gone.
        """
        if self.exited:
            return succeed(None)
        d: Deferred = Deferred()
        self._end_waiters.append(d)
        if self._kill_call is None:
            self._kill_call = self.reactor.callLater(timeout, self._kill_on_timeout, timeout)
        return d

    def _kill_on_timeout(self, timeout: float) -> None:
        self._kill_call = None
        if not self.exited:
            self.log.warn("node client {name} still running after {t}s: killing it",
                          name=self.name, t=timeout)
            self._killed_after = timeout
            self.transport.signalProcess("KILL")


__all__ = ["DEFAULT_WAIT", "NodeClientGone", "NodeWampClient", "find_node"]


class NodeWamp2Client(NodeWampClient):
    """An Autobahn|JS WAMP v2 session (``autobahn_v2.js``), spawned with
    ``NodeWamp2Client.spawn(reactor, url, name, realm)``."""

    script = AUTOBAHN_V2

    def subscribe(self, topic: str, timeout: float = DEFAULT_WAIT) -> Deferred:
        """Fires with the ``subscribed`` (or ``error``) report."""
        d = self.wait_for(lambda r: r["type"] in ("subscribed", "error") and r.get("topic", r.get("tag")) == topic,
                          f"SUBSCRIBED for {topic}", timeout)
        self.send({"op": "subscribe", "topic": topic})
        return d

    def publish_v2(self, topic: str, args: list, kwargs: dict | None = None,
                   options: dict | None = None, timeout: float = DEFAULT_WAIT) -> Deferred | None:
        """PUBLISH; with ``acknowledge`` in ``options`` fires with the
        ``published`` or ``error`` report."""
        tag = f"{self.name}-{next(self._tags)}"
        d = None
        if options and options.get("acknowledge"):
            d = self.wait_for(lambda r: r.get("tag") == tag, f"PUBLISHED for {topic}", timeout)
        self.send({"op": "publish", "tag": tag, "topic": topic, "args": args, "kwargs": kwargs or {},
                   "options": options or {}})
        return d

    def call(self, uri: str, *args: Any, timeout: float = DEFAULT_WAIT) -> Deferred:
        tag = f"{self.name}-{next(self._tags)}"
        d = self.wait_for(lambda r: r.get("tag") == tag, f"the answer to CALL {uri}", timeout)
        self.send({"op": "call", "tag": tag, "procedure": uri, "args": list(args)})
        return d

    def register(self, uri: str, behaviour: str = "double", timeout: float = DEFAULT_WAIT) -> Deferred:
        """REGISTER ``uri`` answering ``args[0] * 2`` (or, with ``"fail"``,
        ApplicationError ``com.example.refused``); fires with the report."""
        tag = f"{self.name}-{next(self._tags)}"
        d = self.wait_for(lambda r: r.get("tag") == tag, f"REGISTERED for {uri}", timeout)
        self.send({"op": "register", "tag": tag, "procedure": uri, "behaviour": behaviour})
        return d

    @classmethod
    def spawn_v2(cls, reactor: Any, url: str, name: str, realm: str, serializer: str = "",
                 ticket: str = "") -> "NodeWamp2Client":
        """Start a session offering only ``serializer`` (all of Autobahn|JS's
        defaults if empty), authenticating with WAMP-Ticket if ``ticket``
        (passed in the environment, not on the command line)."""
        node = find_node()
        client = cls(name, reactor)
        env = dict(os.environ)
        if ticket:
            env["ORO_TICKET"] = ticket
        argv = [node, cls.script.path, url, realm] + ([serializer] if serializer else [])
        reactor.spawnProcess(client, node, argv, env=env, path=NODE_DIR.path)
        return client
