"""The live status page in headless Chromium (Debian's ``chromium``).

The page is served by the admin site of an in-process server.  A harness
page from the same origin shows it in an iframe and reports what the status
page's DOM says (tests/support/browser.py's ``/report``) whenever it
changes, so the test can wait for the numbers to move while real WAMP
clients connect, subscribe and publish.  Then Chromium takes a screenshot
of the page by itself; the PNG is checked (size, not blank) and its DOM,
dumped by the same run, for the live figures.
"""

from __future__ import annotations

import os
import struct
import zlib

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest
from twisted.web import static

from tests.support.admin import start_admin
from tests.support.browser import Reports
from tests.support.ci import missing
from tests.support.oro_server import start_oro_server
from tests.test_ops import subscribe

HARNESS = b"""<!doctype html><meta charset=utf-8><title>status harness</title>
<iframe id=f src=/status style="width:1200px;height:900px"></iframe>
<script>
let last = "";
function read() {
  const d = document.getElementById("f").contentDocument;
  if (!d || !d.getElementById("connections")) return;
  const t = (id) => d.getElementById(id).textContent;
  const topics = [...d.querySelectorAll("#topics tr")].map((tr) => [...tr.children].map((td) => td.textContent));
  const report = {connections: t("connections"), v1: t("sessions-v1"), topics_count: t("topic-count"),
                  subscriptions: t("subscriptions"), total_in: t("total-in"), rate_in: t("rate-in"),
                  feed: t("feed-state"), topics: topics, updates: d.body.dataset.updates || "0",
                  lines: d.querySelectorAll("#chart polyline").length,
                  users: [...d.querySelectorAll("#session-list tr")].map((tr) => tr.children[1].textContent)};
  const key = JSON.stringify(Object.assign({}, report, {updates: 0, rate_in: 0}));
  if (key !== last) { last = key; fetch("/report", {method: "POST", body: JSON.stringify(report)}); }
}
setInterval(read, 100);
</script>"""

SHOT_SIZE = (1200, 1400)


class _Run(protocol.ProcessProtocol):
    """One Chromium process; ``finished`` says whether it has exited (a
    timeout on a wait must not be mistaken for that: cleanup kills it)."""

    def __init__(self) -> None:
        self.finished = False
        self._waiters: list[defer.Deferred] = []
        self.out = b""

    def ended(self, timeout: float | None = None) -> defer.Deferred:
        """Fires when the process has exited (fails after ``timeout`` seconds)."""
        if self.finished:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d.addTimeout(timeout, reactor) if timeout else d

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        pass

    def processEnded(self, reason) -> None:
        self.finished = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)


def png_summary(path: str) -> tuple[int, int, int]:
    """(width, height, distinct row signatures) of a PNG, read without a library."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    rows = {raw[i * stride + 1:(i + 1) * stride] for i in range(height)}
    return width, height, len(rows)


class StatusPageBrowserTests(unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        import shutil

        # Only the browser is needed here (not the npm WAMP clients of test_browser).
        self.chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if self.chromium is None:
            missing("chromium is not installed (Debian: apt-get install chromium)")

    def spawn_chromium(self, *args: str) -> _Run:
        profile = os.path.abspath(self.mktemp())
        os.makedirs(profile)
        run = _Run()
        argv = [self.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", f"--user-data-dir={profile}", *args]
        transport = reactor.spawnProcess(run, self.chromium, argv, env=dict(os.environ))

        def stop():
            if not run.finished:
                try:
                    transport.signalProcess("KILL")
                except Exception:
                    pass
            return run.ended(timeout=30)

        self.addCleanup(stop)
        return run

    @defer.inlineCallbacks
    def test_live_numbers_and_screenshot(self):
        server = start_oro_server(self)
        admin = start_admin(self, server.built, status_interval=0.2)
        reports = Reports()
        root = admin.site.resource
        root.putChild(b"harness", static.Data(HARNESS, "text/html; charset=utf-8"))
        root.putChild(b"report", reports)
        self.spawn_chromium(admin.url + "/harness")

        first = yield reports.wait_for(lambda r: r["feed"] == "live" and r["updates"] != "0",
                                       "the page receiving its first snapshot")
        self.assertEqual(first["connections"], "0", reports.items)

        user = yield server.client(self, "admin")
        backend = yield server.client(self)
        yield subscribe(user, "oro/maintenance")
        for i in range(5):
            backend.send([7, "oro/maintenance", {"isOn": bool(i % 2)}, [], []])
        for _ in range(5):
            yield user.next_message()
        moving = yield reports.wait_for(lambda r: float(r["rate_in"]) > 0, "a messages/s rate above 0")
        self.assertGreater(float(moving["rate_in"]), 0)
        live = yield reports.wait_for(
            lambda r: r["connections"] == "2" and r["topics"] == [["oro/maintenance", "1"]]
            and int(r["total_in"]) >= 7, "two connections, one topic, the publishes counted")
        self.assertEqual(live["v1"], "2")
        self.assertEqual(live["subscriptions"], "1")
        self.assertIn("admin", live["users"])
        self.assertEqual(live["lines"], 3, live)  # the three series of the chart

        # The screenshot, taken while the clients are connected.
        shot = os.path.abspath(self.mktemp() + ".png")
        run = self.spawn_chromium(f"--window-size={SHOT_SIZE[0]},{SHOT_SIZE[1]}", f"--screenshot={shot}",
                                  "--hide-scrollbars", admin.url + "/status")
        yield run.ended(timeout=60)
        self.assertTrue(os.path.exists(shot), "chromium wrote no screenshot")
        self.assertGreater(os.path.getsize(shot), 20000)
        width, height, distinct_rows = png_summary(shot)
        self.assertEqual((width, height), SHOT_SIZE)
        self.assertGreater(distinct_rows, 100)  # text, tables, a chart: not a blank page
        # Keep it for a look by a human (and the report of this change).
        keep = os.environ.get("ORO_SYNC_KEEP_SCREENSHOT")
        if keep:
            import shutil

            shutil.copy(shot, keep)

        # The page shows the snapshot it was served with at once (then the feed).
        dump = self.spawn_chromium("--dump-dom", admin.url + "/status")
        yield dump.ended(timeout=60)
        dom = dump.out.decode("utf-8", "replace")
        self.assertIn('<b id="connections">2</b>', dom)
        self.assertIn("<td>oro/maintenance</td>", dom)
        self.assertIn("LocalBroker", dom)
        self.assertEqual(dom.count("<polyline"), 3, "the charts start from the feed's history")
