"""The installed package, run the way operators run it: real processes.

Everything else in the suite imports ``oro_sync`` from the source tree, so it
cannot notice a packaging mistake: a dropin missing from the wheel, data
files (``etc/*.yml``) left out, a console script that is not generated.  These
tests run the virtualenv's own ``twistd`` and ``oro-sync`` executables as
child processes, from a temporary directory outside the source tree and with
a minimal environment (no ``PYTHONPATH``), so only the *installed* package can
answer.  Install it first, as ``make test`` does::

    .venv/bin/pip install -q --no-deps --force-reinstall .

No test sleeps: each waits on process output or on a Deferred, always with a
bounded timeout, and the server's port is chosen by the OS (``tcp:0``) and
read back from its log line.  Every child still running at cleanup is killed.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
from typing import Any, Callable
from urllib.parse import quote

import yaml
from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.trial import unittest

from oro_sync.auth.interfaces import UserRecord
from oro_sync.auth.ticket_signing import issue_ticket
from oro_sync.auth.tickets import check_ticket
from oro_sync.config import DEFAULT_CONFIG, load_config
from tests.support.client import HandshakeFailed, connect

#: The executables of the virtualenv running the tests (not whatever is on PATH).
BIN_DIR = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN_DIR, "twistd")
ORO_SYNC = os.path.join(BIN_DIR, "oro-sync")

#: The source tree: the children must not import from it.
SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Upper bound for any single wait on a child (startup imports Twisted,
#: Autobahn and the digest worker pool; a loaded CI machine is slow).
PROCESS_TIMEOUT = 20.0

LISTENING = re.compile(rb"oro-sync listening on 127\.0\.0\.1:(\d+)")

#: Runs a command in a process group of its own (``exec``, so the child *is*
#: the command): the server spawns ticket digest workers that inherit its
#: output pipes, and if a failed test must kill the server, the workers have
#: to go too, or they would outlive the test (and hold the pipes open).
NEW_GROUP_EXEC = "import os, sys; os.setpgid(0, 0); os.execv(sys.argv[1], sys.argv[1:])"


def shipped_config() -> Any:
    """The packaged configuration (same file as the installed package's)."""
    return load_config(DEFAULT_CONFIG)


def shipped_secret() -> str:
    """Oro's ``secret`` in the shipped config: anonymous tickets are signed with it."""
    return shipped_config().auth["secret"]


def shipped_users() -> dict[str, UserRecord]:
    """The users of the shipped ``users.yml``, by username and by email, to
    check user tickets the way the server's YAML provider would."""
    users_file = os.path.join(os.path.dirname(DEFAULT_CONFIG), shipped_config().auth["users"]["file"])
    with open(users_file, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    found: dict[str, UserRecord] = {}
    for row in data["users"]:
        user = UserRecord(id=row["id"], username=row["username"], password=row["password"],
                          email=row.get("email"), enabled=row.get("enabled", True),
                          roles=tuple(row.get("roles", ())),
                          organization_id=row.get("organization_id"))
        found[user.username] = user
        if user.email:
            found[user.email] = user
    return found


def clean_env() -> dict[str, str]:
    """A minimal environment: nothing that could point Python at the source
    tree (PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, a user site).  Unbuffered
    output so that log lines reach the pipe as they are written."""
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
    }


def describe(reason: Failure | None) -> str:
    """How a child ended, for assertion messages."""
    if reason is None:
        return "still running"
    value = reason.value
    if isinstance(value, error.ProcessDone):
        return "exit status 0"
    if isinstance(value, error.ProcessTerminated):
        if value.signal is not None:
            return f"killed by signal {value.signal}"
        return f"exit status {value.exitCode}"
    return repr(value)


class ChildTimeout(Exception):
    """A child did not print what was expected, or did not exit, in time."""


class ChildProcess(protocol.ProcessProtocol):
    """Collects a child's output and turns its progress into Deferreds.

    ``output`` interleaves stdout and stderr as they arrive (what an operator
    sees on a terminal); ``stdout`` alone is kept for commands whose output
    is data (a ticket).
    """

    def __init__(self, reactor: Any, args: list[str]) -> None:
        self.reactor = reactor
        self.args = args
        self.output = bytearray()
        self.stdout = bytearray()
        self.reason: Failure | None = None
        self._patterns: list[tuple[re.Pattern[bytes], defer.Deferred, IDelayedCall]] = []
        self._ended: list[tuple[defer.Deferred, IDelayedCall | None]] = []

    # -- what tests use --------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.reason is None

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def report(self) -> str:
        """Command, outcome and full output: the body of every failure message."""
        return (f"\n--- {' '.join(self.args)} ({describe(self.reason)}) ---\n"
                f"{self.text()}--- end of output ---")

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float = PROCESS_TIMEOUT) -> defer.Deferred:
        """Fire with the first match of ``pattern`` in the output; fail if the
        child exits, or ``timeout`` passes, without printing it."""
        match = pattern.search(self.output)
        if match is not None:
            return defer.succeed(match)
        if not self.running:
            return defer.fail(AssertionError(f"{pattern.pattern!r} never printed{self.report()}"))
        d: defer.Deferred = defer.Deferred()
        call = self.reactor.callLater(timeout, self._pattern_expired, d, pattern, timeout)
        self._patterns.append((pattern, d, call))
        return d

    def wait_ended(self, timeout: float = PROCESS_TIMEOUT) -> defer.Deferred:
        """Fire with this ChildProcess once it has exited (its ``reason`` is
        then set: a Failure, which a Deferred cannot carry as a result); fail with :class:`ChildTimeout` if the child is still alive after
        ``timeout`` (cleanup then kills it)."""
        if not self.running:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        call = self.reactor.callLater(timeout, self._end_expired, d, timeout) if timeout else None
        self._ended.append((d, call))
        return d

    def signal(self, name: str) -> None:
        if self.running and self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except error.ProcessExitedAlready:
                pass

    # -- ProcessProtocol -------------------------------------------------------

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        self._received(data)

    def errReceived(self, data: bytes) -> None:
        self._received(data)

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        patterns, self._patterns = self._patterns, []
        for pattern, d, call in patterns:
            call.cancel()
            d.errback(AssertionError(f"{pattern.pattern!r} never printed{self.report()}"))
        ended, self._ended = self._ended, []
        for d, call in ended:
            if call is not None and call.active():
                call.cancel()
            d.callback(self)

    # -- internals -------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        self.output += data
        waiting, self._patterns = self._patterns, []
        for pattern, d, call in waiting:
            match = pattern.search(self.output)
            if match is None:
                self._patterns.append((pattern, d, call))
            else:
                call.cancel()
                d.callback(match)

    def _pattern_expired(self, d: defer.Deferred, pattern: re.Pattern[bytes], timeout: float) -> None:
        self._patterns = [p for p in self._patterns if p[1] is not d]
        d.errback(ChildTimeout(f"{pattern.pattern!r} not printed within {timeout}s{self.report()}"))

    def _end_expired(self, d: defer.Deferred, timeout: float) -> None:
        self._ended = [e for e in self._ended if e[0] is not d]
        d.errback(ChildTimeout(f"still running after {timeout}s{self.report()}"))


class ProcessTestCase(unittest.TestCase):
    """Spawns children in a scratch directory and never leaves one behind."""

    timeout = 45

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        # Outside the source tree, so the current directory cannot supply oro_sync.
        self.workdir = tempfile.mkdtemp(prefix="oro-sync-plugin-test-")
        self.addCleanup(self._remove_workdir)
        for exe in (TWISTD, ORO_SYNC):
            if not os.access(exe, os.X_OK):
                self.fail(f"{exe} is missing: install the package into the virtualenv first "
                          f"(.venv/bin/pip install --no-deps --force-reinstall .)")

    def _remove_workdir(self) -> None:
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)

    def spawn(self, args: list[str]) -> ChildProcess:
        """Start ``args`` in the scratch directory with :func:`clean_env`."""
        child = ChildProcess(self.reactor, args)
        wrapped = [sys.executable, "-c", NEW_GROUP_EXEC, *args]
        self.reactor.spawnProcess(child, wrapped[0], wrapped, env=clean_env(), path=self.workdir)
        self.addCleanup(self._reap, child)
        return child

    @defer.inlineCallbacks
    def _reap(self, child: ChildProcess):
        """Kill a child a failed test left running, with its process group
        (its own, see NEW_GROUP_EXEC), and wait until it is gone (trial would
        otherwise report a dirty reactor).  Until processEnded, the group
        still has a member, so its id cannot belong to anybody else."""
        if child.running:
            pid = getattr(child.transport, "pid", None)
            try:
                if pid is not None:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    child.signal("KILL")
            except (ProcessLookupError, PermissionError):
                pass
            yield child.wait_ended(timeout=PROCESS_TIMEOUT)

    @defer.inlineCallbacks
    def run_to_end(self, args: list[str]):
        """Run a command to completion; return the ChildProcess (output and reason)."""
        child = self.spawn(args)
        yield child.wait_ended()
        return child

    def exit_status(self, child: ChildProcess) -> int | None:
        """The exit status, or None if the child was killed by a signal."""
        value = child.reason.value if child.reason is not None else None
        if isinstance(value, error.ProcessDone):
            return 0
        if isinstance(value, error.ProcessTerminated):
            return value.exitCode
        self.fail(f"unexpected end: {value!r}{child.report()}")

    def assertNoTraceback(self, child: ChildProcess) -> None:
        self.assertNotIn("Traceback", child.text(), f"a Python traceback was printed{child.report()}")


class InstalledPackageTests(ProcessTestCase):
    """The children see the installed package, and twistd finds the plugin in it."""

    @defer.inlineCallbacks
    def test_children_import_the_installed_package(self):
        """If this fails, every other test here would be testing the source
        tree, not the install; say so plainly."""
        python = sys.executable
        child = yield self.run_to_end(
            [python, "-c", "import oro_sync, twisted.plugins.oro_sync_plugin as p; "
                           "print(oro_sync.__file__); print(p.__file__)"])
        self.assertEqual(self.exit_status(child), 0, child.report())
        paths = child.stdout.decode().split()
        self.assertEqual(len(paths), 2, child.report())
        for path, in_tree in zip(paths, ("oro_sync", "twisted")):
            self.assertFalse(os.path.realpath(path).startswith(os.path.join(SOURCE_TREE, in_tree) + os.sep),
                             f"{path} comes from the source tree, not the install{child.report()}")
            self.assertIn("site-packages", path, child.report())

    @defer.inlineCallbacks
    def test_twistd_help_lists_the_plugin(self):
        child = yield self.run_to_end([TWISTD, "--help"])
        self.assertEqual(self.exit_status(child), 0, child.report())
        self.assertTrue(re.search(r"^\s+oro-sync\s+\S", child.text(), re.MULTILINE),
                        f"'oro-sync' is not among twistd's commands{child.report()}")
        self.assertNoTraceback(child)


class ServerProcessTests(ProcessTestCase):
    """``twistd -n oro-sync``: serves, relays an event, shuts down politely."""

    def start_server(self, *extra: str) -> ChildProcess:
        # Never the admin listener's fixed default port (9101): other
        # engineers' suites run on this machine at the same time.
        return self.spawn([TWISTD, "-n", "--pidfile=", "oro-sync",
                           "--listen", "tcp:0:interface=127.0.0.1",
                           "--admin", "tcp:0:interface=127.0.0.1", *extra])

    @defer.inlineCallbacks
    def connect_client(self, server: ChildProcess, port: int, ticket: str, patience: float = 0.0):
        """A WAMP client with ``ticket``, WELCOME received.

        The server logs "listening" before its ticket digest workers (fresh
        interpreters, spawned at start-up) have started, and the first
        ticket check waits for them: on a loaded machine that can outlast
        the test client's 5 s opening-handshake timeout.  With ``patience``
        that one failure is retried until that many seconds have passed
        (each attempt is itself bounded); anything else fails at once.
        """
        deadline = self.reactor.seconds() + patience
        while True:
            try:
                client = yield connect(port, path="/?ticket=" + quote(ticket, safe=""))
                break
            except HandshakeFailed as e:
                if not ("opening handshake timeout" in e.reason and server.running
                        and self.reactor.seconds() < deadline):
                    self.fail(f"cannot connect: {e!r}{server.report()}")
            except Exception as e:
                self.fail(f"cannot connect: {e!r}{server.report()}")
        self.addCleanup(client.abort)
        return client

    @defer.inlineCallbacks
    def wait_closed(self, server: ChildProcess, client: Any, who: str):
        """``client.closed``'s (wasClean, code, reason), waited for at most
        PROCESS_TIMEOUT (the server's shutdown timeout is 3 s)."""
        d: defer.Deferred = defer.Deferred()
        client.closed.addBoth(lambda r: (d.called or d.callback(r), r)[1])
        d.addTimeout(PROCESS_TIMEOUT, self.reactor)
        try:
            info = yield d
        except Exception as e:
            self.fail(f"{who}: no close: {e!r}{server.report()}")
        return info

    @defer.inlineCallbacks
    def expect_message(self, server: ChildProcess, client: Any, accept: Callable[[Any], bool]):
        """The next message, checked; a failure shows the server's log."""
        try:
            msg = yield client.next_message()
        except Exception as e:
            self.fail(f"no message: {e!r}{server.report()}")
        self.assertTrue(accept(msg), f"unexpected message {msg!r}{server.report()}")
        return msg

    @defer.inlineCallbacks
    def test_serves_relays_and_shuts_down_with_1001(self):
        server = self.start_server()
        match = yield server.wait_for(LISTENING)
        port = int(match.group(1))

        secret = shipped_secret()
        admin = shipped_users()["admin"]
        user = yield self.connect_client(server, port, issue_ticket(secret, admin.username, admin.password),
                                         patience=PROCESS_TIMEOUT)
        self.assertEqual(user.welcome[0], 0, f"not a WELCOME: {user.welcome!r}{server.report()}")
        self.assertEqual(user.subprotocol, "wamp")

        user.subscribe("oro/maintenance")
        # A CALL to an unknown procedure is answered by CALLERROR: once it is
        # back, the SUBSCRIBE sent before it has been processed.
        call_id = user.call("urn:oro-sync-test:round-trip")
        yield self.expect_message(server, user, lambda m: m[:2] == [4, call_id])

        backend = yield self.connect_client(server, port, issue_ticket(secret))
        self.assertEqual(backend.welcome[0], 0, f"not a WELCOME: {backend.welcome!r}{server.report()}")
        event = {"isOn": True, "userId": None}
        backend.send([7, "oro/maintenance", event, [], []])
        yield self.expect_message(server, user, lambda m: m == [8, "oro/maintenance", event])

        server.signal("TERM")
        for who, client in (("user", user), ("backend", backend)):
            was_clean, code, reason = yield self.wait_closed(server, client, who)
            self.assertEqual(code, 1001, f"{who}: close ({was_clean}, {code}, {reason!r}){server.report()}")
        yield server.wait_ended()
        self.assertIn("Server Shut Down.", server.text(),
                      f"twistd did not complete its shutdown{server.report()}")
        self.assertNoTraceback(server)
        # A clean exit.  twistd re-raises the signal that stopped the reactor
        # once it has shut down (twisted.application.app._exitWithSignal), so
        # that supervisors see "terminated by SIGTERM", which they count as a
        # normal stop; status 0 is accepted too.  Anything else (a non-zero
        # status, another signal) is a crash.  "Server Shut Down." above is
        # what tells this apart from dying of SIGTERM without handling it.
        assert server.reason is not None
        value = server.reason.value
        self.assertTrue(
            isinstance(value, error.ProcessDone)
            or (isinstance(value, error.ProcessTerminated) and value.exitCode is None
                and value.signal == signal.SIGTERM),
            f"not a clean exit: {describe(server.reason)}{server.report()}")

    @defer.inlineCallbacks
    def check_refused_config(self, config_path: str, names: str):
        """twistd exits non-zero with one clear line naming ``names``, no traceback."""
        server = self.start_server("--config", config_path)
        yield server.wait_ended()
        status = self.exit_status(server)
        self.assertTrue(status is not None and status != 0, f"exit status {status!r}{server.report()}")
        self.assertNoTraceback(server)
        lines = [line for line in server.text().splitlines() if names in line]
        self.assertTrue(lines, f"no line names {names}{server.report()}")
        self.assertNotIn("listening", server.text(), server.report())

    def test_nonexistent_config(self):
        path = os.path.join(self.workdir, "no-such-dir", "oro-sync.yml")
        return self.check_refused_config(path, path)

    def test_config_with_bad_routing_file(self):
        """A routing file with a broken route is reported by name; the error
        comes from makeService (routes load with the factory), not from
        option parsing."""
        routing = os.path.join(self.workdir, "websocket_routing.yml")
        with open(routing, "w", encoding="utf-8") as f:
            f.write("broken.route:\n    channel: ''\n    handler: {callback: 'oro_sync.ping'}\n")
        config = os.path.join(self.workdir, "oro-sync.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("routing: [websocket_routing.yml]\n")
        return self.check_refused_config(config, routing)

    def test_config_with_missing_routing_file(self):
        config = os.path.join(self.workdir, "oro-sync.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("routing: [missing_routing.yml]\n")
        return self.check_refused_config(config, os.path.join(self.workdir, "missing_routing.yml"))


class TicketCommandTests(ProcessTestCase):
    """``oro-sync ticket`` prints tickets the server's checks accept."""

    @defer.inlineCallbacks
    def issue(self, *args: str):
        child = yield self.run_to_end([ORO_SYNC, "ticket", *args])
        return child

    def verified(self, child: ChildProcess) -> Any:
        self.assertEqual(self.exit_status(child), 0, child.report())
        lines = child.stdout.decode().split()
        self.assertEqual(len(lines), 1, f"expected one ticket on stdout{child.report()}")
        users = shipped_users()
        try:
            return check_ticket(lines[0], shipped_secret(), users.get)
        except Exception as e:
            self.fail(f"ticket refused: {e!r}{child.report()}")

    @defer.inlineCallbacks
    def test_anonymous_ticket(self):
        child = yield self.issue()
        ticket = self.verified(child)
        self.assertEqual(ticket.username, "")
        self.assertTrue(ticket.backend, child.report())

    @defer.inlineCallbacks
    def test_user_ticket(self):
        child = yield self.issue("--user", "admin")
        ticket = self.verified(child)
        self.assertEqual(ticket.username, "admin", child.report())
        self.assertFalse(ticket.backend, child.report())

    @defer.inlineCallbacks
    def test_unknown_user(self):
        child = yield self.issue("--user", "nobody")
        self.assertEqual(self.exit_status(child), 1, child.report())
        self.assertEqual(child.stdout.strip(), b"", f"printed something on stdout{child.report()}")
        self.assertIn("nobody", child.text(), child.report())
        self.assertNoTraceback(child)
