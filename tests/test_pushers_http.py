"""``POST /publish`` over real HTTP (treq), and the resource mounted elsewhere."""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from oro_sync.pushers.http import PublishResource
from tests.support import wamp2
from tests.support.oro_server import SECRET
from tests.support.pushing import LogCapture, start_pushing_server, subscriber

AUTH = {b"Authorization": [f"Bearer {SECRET}".encode()]}


def message(topic, data) -> bytes:
    return json.dumps({"topic": topic, "data": data}).encode()


class HttpPusherTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> Any:
        self.logs = LogCapture(self)
        self.server = start_pushing_server(self, {
            "max_message_size": 4096, "log_interval": 3600,
            "http": {"listen": "tcp:0:interface=127.0.0.1"}})
        (self.pusher,) = [p for p in self.server.pushers if type(p).__name__ == "HttpPusher"]
        return self.pusher.when_listening().addCallback(self._listening)

    def _listening(self, port: Any) -> None:
        self.url = f"http://127.0.0.1:{port.getHost().port}/publish"

    @defer.inlineCallbacks
    def post(self, body: bytes, headers: Any = AUTH, url: str | None = None) -> Any:
        response = yield treq.post(url or self.url, data=body, headers=headers, persistent=False)
        content = yield response.content()
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = content
        return response.code, decoded, response

    @defer.inlineCallbacks
    def test_publish_reaches_v1_and_v2_subscribers_with_the_returned_id(self):
        c = yield subscriber(self.server, self, "oro/maintenance")
        v2 = yield wamp2.join(self, self.server.number, path=self.server.path("admin"))
        events, _ = yield wamp2.events(v2, "oro/maintenance")
        code, body, _ = yield self.post(message("oro/maintenance", {"isOn": True}))
        self.assertEqual(code, 200)
        self.assertTrue(body["published"])
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", {"isOn": True}])
        args, _kwargs, details = yield events.next()
        self.assertEqual(args, [{"isOn": True}])
        self.assertEqual(details.publication, body["id"])

    @defer.inlineCallbacks
    def test_onpush_is_called_for_a_pushable_handler(self):
        c = yield subscriber(self.server, self, "test/pushable/9")
        code, _, _ = yield self.post(message("test/pushable/9", "hello"))
        self.assertEqual(code, 200)
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "test/pushable/9", {"pushed": "hello", "via": "http"}])
        self.assertEqual(self.server.handlers["test.pushable"].pushes,
                         [("test/pushable/9", {"id": "9"}, "hello", "http")])

    @defer.inlineCallbacks
    def test_authentication(self):
        c = yield subscriber(self.server, self, "oro/maintenance")
        code, body, response = yield self.post(message("oro/maintenance", 1), headers={})
        self.assertEqual(code, 401)
        self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="oro-sync"'])
        code, _, _ = yield self.post(message("oro/maintenance", 1),
                                     headers={b"Authorization": [b"Basic eDp5"]})
        self.assertEqual(code, 401)
        code, body, _ = yield self.post(message("oro/maintenance", 1),
                                        headers={b"Authorization": [b"Bearer wrong-secret"]})
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        response = yield treq.get(self.url, headers=AUTH, persistent=False)
        yield response.content()
        self.assertEqual(response.code, 405)
        code, _, _ = yield self.post(message("oro/maintenance", "ok"))
        self.assertEqual(code, 200)
        msg = yield c.next_message()  # the refused ones delivered nothing
        self.assertEqual(msg, [8, "oro/maintenance", "ok"])

    @defer.inlineCallbacks
    def test_bad_messages_get_their_status_and_a_good_one_follows(self):
        c = yield subscriber(self.server, self, "oro/maintenance")
        cases = [(b"nope", 400, "not JSON"), (b"[]", 400, "not a JSON object"),
                 (b'{"data": 1}', 400, "no topic"), (b'{"topic": null, "data": 1}', 400,
                                                      "topic not a non-empty string"),
                 (b'{"topic": "oro/maintenance"}', 400, "no data"),
                 (message("no/route/here", 1), 404, "unrouted topic"),
                 (message("oro/maintenance", "z" * 5000), 413, "oversized")]
        for body, status, reason in cases:
            code, answer, _ = yield self.post(body)
            self.assertEqual((code, answer["error"]), (status, reason), body)
        code, _, _ = yield self.post(message("oro/maintenance", "good"))
        self.assertEqual(code, 200)
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", "good"])
        self.assertEqual(self.server.factory.metrics["pushes_dropped"], len(cases))
        self.assertEqual(len(self.logs.matching("dropped")), 1, self.logs.lines)

    @defer.inlineCallbacks
    def test_a_huge_body_is_not_buffered(self):
        """Past max_message_size the site stops keeping the body (413)."""
        code, answer, _ = yield self.post(b"{" + b" " * 200_000 + b"}")
        self.assertEqual((code, answer["error"]), (413, "oversized"))
        self.assertEqual(self.pusher.site.bodies_cut, 1)

    @defer.inlineCallbacks
    def test_resource_mounts_on_another_site(self):
        """The resource is a plain twisted.web resource (e.g. for an admin listener)."""
        dispatcher = self.pusher.site.resource.children[b"publish"].dispatcher
        root = resource.Resource()
        root.putChild(b"publish", PublishResource(dispatcher, "another-secret"))
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        c = yield subscriber(self.server, self, "oro/maintenance")
        url = f"http://127.0.0.1:{port.getHost().port}/publish"
        code, _, _ = yield self.post(message("oro/maintenance", 5), url=url,
                                     headers={b"Authorization": [b"Bearer another-secret"]})
        self.assertEqual(code, 200)
        msg = yield c.next_message()
        self.assertEqual(msg, [8, "oro/maintenance", 5])
