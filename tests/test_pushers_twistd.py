"""``twistd -n oro-sync`` with pushers configured: the service tree runs them.

A real process from the installed package (as tests/test_plugin.py): the
Redis channel and ``POST /publish`` both reach a WAMP v1 subscriber, and
SIGTERM still ends in a clean shutdown with the pushers stopped first.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

import treq
import yaml
from twisted.internet import defer
from twisted.trial import unittest  # noqa: F401  (the runner finds ProcessTestCase's subclass)

from oro_sync.auth.ticket_signing import issue_ticket
from oro_sync.config import DEFAULT_CONFIG
from tests.support.client import connect
from tests.support.push_services import PushRedis
from tests.test_plugin import LISTENING, TWISTD, ProcessTestCase, shipped_secret, shipped_users

HTTP_LISTENING = re.compile(rb"HTTP pusher listening on 127\.0\.0\.1:(\d+)")
REDIS_READY = re.compile(rb"Redis push channel .*: connected")


class TwistdPushersTests(ProcessTestCase):
    def write_config(self, redis_port: int) -> str:
        etc = os.path.dirname(DEFAULT_CONFIG)
        with open(DEFAULT_CONFIG, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        config["routing"] = [os.path.join(etc, "websocket_routing.yml")]
        config["auth"]["users"] = {"file": os.path.join(etc, "users.yml")}
        config["pushers"] = {"redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
                             "http": {"listen": "tcp:0:interface=127.0.0.1"}}
        path = os.path.join(self.workdir, "oro-sync.yml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        return path

    @defer.inlineCallbacks
    def test_pushers_run_under_twistd(self):
        redis = PushRedis.shared()
        server = self.spawn([TWISTD, "-n", "--pidfile=", "oro-sync", "--admin", "none", "--listen",
                             "tcp:0:interface=127.0.0.1", "--config", self.write_config(redis.port)])
        port = int((yield server.wait_for(LISTENING)).group(1))
        http_port = int((yield server.wait_for(HTTP_LISTENING)).group(1))
        yield server.wait_for(REDIS_READY)
        admin = shipped_users()["admin"]
        ticket = issue_ticket(shipped_secret(), admin.username, admin.password)
        client = yield connect(port, path="/?ticket=" + quote(ticket, safe=""), timeout=20)
        self.addCleanup(client.abort)
        client.subscribe("oro/maintenance")
        call_id = client.call("urn:oro-sync-test:round-trip")
        msg = yield client.next_message()
        self.assertEqual(msg[:2], [4, call_id], server.report())

        self.assertEqual(redis.publish("oro-sync:push", json.dumps(
            {"topic": "oro/maintenance", "data": "via redis"}).encode()), 1)
        msg = yield client.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "via redis"], server.report())

        response = yield treq.post(f"http://127.0.0.1:{http_port}/publish", persistent=False,
                                   data=json.dumps({"topic": "oro/maintenance", "data": "via http"}).encode(),
                                   headers={b"Authorization": [f"Bearer {shipped_secret()}".encode()]})
        yield response.content()
        self.assertEqual(response.code, 200, server.report())
        msg = yield client.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "via http"], server.report())

        server.signal("TERM")
        yield server.wait_ended()
        self.assertIn("Server Shut Down.", server.text(), server.report())
        self.assertNoTraceback(server)
