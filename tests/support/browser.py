"""A real browser (headless Chromium) as a test client.

Why: a browser's WebSocket differs from library clients in what it sends
(an Origin, a permessage-deflate offer, its own framing) and those
differences broke a server before.  The test serves a page from a Twisted
web server on ``localhost`` (the Oro application's host); the page's script
talks to oro-sync and POSTs what it sees back to ``/report``, where
:class:`Reports` turns it into Deferreds.  Chromium runs as a child process
with a fresh profile and is killed with the test.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest
from twisted.web import resource, server, static

NODE_MODULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "node", "node_modules")
#: Autobahn|JS's browser build (npm autobahn-browser): the WAMP v2 client pages load.
AUTOBAHN_BROWSER = os.path.join(NODE_MODULES, "autobahn-browser", "autobahn.min.js")

WAIT = 20.0


def find_chromium() -> str:
    """The Chromium executable; skip without one (fail on CI, where a
    missing browser must not pass as a skip)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    problem = None
    if path is None:
        problem = "chromium is not installed (Debian: apt-get install chromium)"
    elif not os.path.exists(AUTOBAHN_BROWSER):
        problem = "npm package autobahn-browser is missing: run `cd tests/node && npm ci`"
    if problem is not None:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"browser test environment missing on CI: {problem}")
        raise SkipTest(problem)
    return path


class Reports(resource.Resource):
    """``POST /report`` bodies (JSON), in arrival order, with waits on them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict] = []
        self._waiters: list[tuple[Callable[[dict], bool], defer.Deferred]] = []

    def render_POST(self, request: Any) -> bytes:
        item = json.loads(request.content.read())
        self.items.append(item)
        still = []
        for predicate, d in self._waiters:
            if predicate(item):
                d.callback(item)
            else:
                still.append((predicate, d))
        self._waiters = still
        return b"ok"

    def wait_for(self, predicate: Callable[[dict], bool], what: str, timeout: float = WAIT) -> defer.Deferred:
        for item in self.items:
            if predicate(item):
                return defer.succeed(item)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((predicate, d))

        def timed_out(failure: Any) -> Any:
            if failure.check(defer.TimeoutError):
                raise AssertionError(f"the browser did not report {what} within {timeout}s; "
                                     f"it reported {self.items!r}")
            return failure

        return d.addTimeout(timeout, reactor).addErrback(timed_out)

    def message(self, predicate: Callable[[Any], bool], what: str) -> defer.Deferred:
        """A WebSocket message the page received, matching ``predicate``."""
        return self.wait_for(lambda r: r.get("type") == "message" and predicate(r["msg"]), what)


class _Chromium(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()
        self.stderr = b""

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-20000:]

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


def open_page(testcase: Any, script: str, host: str = "localhost") -> Reports:
    """Serve a page running ``script`` (after ``report(obj)`` is defined) at
    ``http://host:<port>/`` and open it in headless Chromium."""
    chromium = find_chromium()
    reports = Reports()
    root = resource.Resource()
    page = ("<!doctype html><meta charset=utf-8><title>oro-sync browser test</title>"
            "<script src=/autobahn.min.js></script><script>\n"
            "let seq = 0;\n"
            "function report(obj) { obj.seq = seq++; fetch('/report', {method: 'POST', "
            "body: JSON.stringify(obj)}); }\n"
            "window.onerror = (msg) => report({type: 'script-error', message: String(msg)});\n"
            + script + "\n</script>")
    root.putChild(b"", static.Data(page.encode("utf-8"), "text/html; charset=utf-8"))
    root.putChild(b"autobahn.min.js", static.File(AUTOBAHN_BROWSER, defaultType="application/javascript"))
    root.putChild(b"report", reports)
    site = server.Site(root)
    site.noisy = False
    # A page from another loopback address (127.0.0.2) has another Origin.
    port = reactor.listenTCP(0, site, interface=host if host[0].isdigit() else "127.0.0.1")
    testcase.addCleanup(port.stopListening)
    profile = os.path.abspath(testcase.mktemp())
    os.makedirs(profile)
    url = f"http://{host}:{port.getHost().port}/"
    proc = _Chromium()
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", f"--user-data-dir={profile}", url]
    transport = reactor.spawnProcess(proc, chromium, args, env=dict(os.environ))

    def stop() -> defer.Deferred:
        if not proc.ended.called:
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass
        return proc.ended

    testcase.addCleanup(stop)
    reports.process = proc
    return reports
