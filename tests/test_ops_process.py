"""Operations on a real ``twistd -n oro-sync`` process: SIGHUP reload of the
routing and users files (a good file, then a bad one), JSON log lines,
the summary line and the admin listener on an OS-chosen port.

The server runs from the installed package (as in tests/test_plugin.py,
whose process helpers are reused); its WebSocket and admin ports are read
back from its log lines.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

import treq
import yaml
from twisted.internet import defer

import tests.test_plugin as plugin
from oro_sync.auth.ticket_signing import issue_ticket
from tests.support.client import HandshakeFailed, connect

SECRET = "ReloadTestSecret"
ADMIN_PORT = re.compile(rb"admin \(/health /metrics /status\) on 127\.0\.0\.1:(\d+)")
USERS = [{"id": 1, "username": "admin", "password": "hash-of-admin"}]
JANE = {"id": 2, "username": "jane", "password": "hash-of-jane"}
ROUTES = {
    "oro_sync.maintenance": {"channel": "oro/maintenance", "handler": {"callback": "oro_sync.maintenance"}},
    "oro_sync.data_update": {"channel": "oro/data/update", "handler": {"callback": "oro_sync.data_update"}},
}
SERVICES = {
    "oro_sync.topic.maintenance": {"class": "oro_sync.oro.topics.BroadcastTopic",
                                   "arguments": ["oro_sync.maintenance"]},
    "oro_sync.topic.data_update": {"class": "oro_sync.oro.topics.BroadcastTopic",
                                   "arguments": ["oro_sync.data_update"]},
}


class ReloadProcessTests(plugin.ProcessTestCase):
    timeout = 90

    def write(self, name: str, data) -> str:
        path = os.path.join(self.workdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    @defer.inlineCallbacks
    def client(self, server, port: int, user: str = ""):
        """A WAMP v1 client with a ticket; retried while the digest workers
        start (see test_plugin.ServerProcessTests.connect_client)."""
        password = {"admin": "hash-of-admin", "jane": "hash-of-jane"}.get(user, "")
        ticket = issue_ticket(SECRET, user, password) if user else issue_ticket(SECRET)
        deadline = self.reactor.seconds() + plugin.PROCESS_TIMEOUT
        while True:
            try:
                c = yield connect(port, path="/?ticket=" + quote(ticket, safe=""))
                break
            except HandshakeFailed as e:
                if not ("opening handshake timeout" in e.reason and self.reactor.seconds() < deadline):
                    raise AssertionError(f"cannot connect as {user or 'backend'}: {e!r}{server.report()}")
        self.addCleanup(c.abort)
        self.tickets.append(ticket)
        return c

    @defer.inlineCallbacks
    def subscribe(self, server, client, uri: str):
        client.subscribe(uri)
        call_id = client.call("urn:oro-sync-test:round-trip")
        msg = yield client.next_message()
        self.assertEqual(msg[:2], [4, call_id], server.report())

    @defer.inlineCallbacks
    def test_sighup_reload_good_then_bad_file_with_json_logs(self):
        self.tickets: list[str] = []
        routing = self.write("routing.yml", ROUTES)
        users = self.write("users.yml", {"users": USERS})
        config = self.write("oro-sync.yml", {
            "server": {"summary_interval": 1},
            "auth": {"secret": SECRET, "users": {"file": "users.yml"}},
            "routing": ["routing.yml"], "services": SERVICES})
        server = self.spawn([plugin.TWISTD, "-n", "--pidfile=", "oro-sync", "--config", config,
                             "--listen", "tcp:0:interface=127.0.0.1",
                             "--admin", "tcp:0:interface=127.0.0.1", "--log-format", "json"])
        port = int((yield server.wait_for(plugin.LISTENING)).group(1))
        admin_port = int((yield server.wait_for(ADMIN_PORT)).group(1))

        user = yield self.client(server, port, "admin")
        backend = yield self.client(server, port)
        yield self.subscribe(server, user, "oro/maintenance")
        yield self.subscribe(server, user, "oro/data/update")
        response = yield treq.get(f"http://127.0.0.1:{admin_port}/health", persistent=False)
        health = yield treq.json_content(response)
        self.assertEqual(response.code, 200, server.report())
        self.assertEqual(health["connections"]["by_protocol"], {"wamp": 2}, server.report())
        for path, expect in (("/status", "oro-sync status"), ("/metrics", 'oro_sync_sessions{protocol="wamp"} 2.0')):
            response = yield treq.get(f"http://127.0.0.1:{admin_port}{path}", persistent=False)
            body = yield treq.text_content(response, encoding="utf-8")
            self.assertEqual(response.code, 200, server.report())
            self.assertIn(expect, body)  # the page ships with the installed package

        # A good reload: one route less, one user more.
        self.write("routing.yml", {k: v for k, v in ROUTES.items() if k != "oro_sync.data_update"})
        self.write("users.yml", {"users": USERS + [JANE]})
        server.signal("HUP")
        yield server.wait_for(re.compile(rb"reloaded .*oro-sync\.yml: 1 routes, 2 handlers, 2 users, "
                                         rb"1 topic\(s\) closed"))
        self.assertRegex(server.text(), r"no route for oro/data/update any more: closed its 1 subscription")
        backend.send([7, "oro/data/update", "dropped", [], []])
        backend.send([7, "oro/maintenance", "after reload", [], []])
        msg = yield user.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "after reload"], server.report())
        jane = yield self.client(server, port, "jane")
        self.assertEqual(jane.welcome[0], 0, server.report())

        # A bad file: refused with one line naming it; the old configuration stays.
        self.write("routing.yml", "oro_sync.maintenance: {channel: [unclosed\n")
        server.signal("HUP")
        refused = yield server.wait_for(re.compile(rb'"text": "reload refused[^\n]*'))
        self.assertIn(routing.encode(), refused.group(0), server.report())
        self.assertEqual(server.text().count("reload refused"), 1, server.report())
        yield self.subscribe(server, jane, "oro/maintenance")
        backend.send([7, "oro/maintenance", "still served", [], []])
        for who in (user, jane):
            msg = yield who.next_message()
            self.assertEqual(msg, [8, "oro/maintenance", "still served"], server.report())
        self.write("routing.yml", ROUTES)
        self.write("users.yml", "users: [{id: 1}]\n")  # a bad users file is refused too, and the routes with it
        server.signal("HUP")
        refused = yield server.wait_for(re.compile(rb'"text": "reload refused[^\n]*users\.yml[^\n]*'))
        self.assertIn(users.encode(), refused.group(0), server.report())
        self.assertNotIn("restart", server.text(), server.report())  # nothing restart-only changed
        self.assertEqual(server.text().count("oro/data/update any more"), 1, server.report())
        yield server.wait_for(re.compile(rb'"event": "summary"'))

        # Shutting down: while clients are being sent away, /health says 503.
        # One client stops reading, so the server waits for its close reply.
        user.proto.transport.pauseProducing()
        server.signal("TERM")
        yield server.wait_for(re.compile(rb"closing \d+ WebSocket connections \(1001\)"))
        response = yield treq.get(f"http://127.0.0.1:{admin_port}/health", persistent=False)
        health = yield treq.json_content(response)
        self.assertEqual((response.code, health["status"]), (503, "shutting_down"), server.report())
        yield server.wait_ended()
        self.assertNoTraceback(server)
        lines = [line for line in server.stdout.decode("utf-8").splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]  # every line is one JSON object
        events = {p.get("event") for p in parsed}
        self.assertTrue({"connect", "disconnect", "reloaded", "reload_refused", "summary"} <= events, events)
        connects = [p for p in parsed if p.get("event") == "connect"]
        self.assertEqual(sorted(p["user"] for p in connects if not p["user"].startswith("anonymous")),
                         ["admin", "jane"])
        for ticket in self.tickets:
            self.assertNotIn(ticket, server.text())
            self.assertNotIn(quote(ticket, safe=""), server.text())
        self.assertNotIn(SECRET, server.text())
