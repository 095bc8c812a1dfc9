"""oro-sync in a real browser: headless Chromium against the shipped Oro configuration.

WAMP v1 goes through Chromium's own WebSocket with the messages autobahn.js
0.8 sends (the 0.8 library itself is not published on npm); WAMP v2 uses
Autobahn|JS's browser build.  The page comes from ``localhost``, the
configured application host, so the Origin check passes as it would for an
Oro page; a page from another host is refused.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.browser import open_page
from tests.support.oro_server import start_oro_server

WAMP1_PAGE = """
const ws = new WebSocket(%(url)s, ["wamp"]);
ws.onopen = () => report({type: "open", protocol: ws.protocol, extensions: ws.extensions});
ws.onmessage = (e) => {
  const msg = JSON.parse(e.data);
  report({type: "message", msg});
  if (msg[0] === 0) {  // WELCOME: subscribe, then a CALL whose CALLERROR proves it was processed
    ws.send(JSON.stringify([5, %(topic)s]));
    ws.send(JSON.stringify([2, "barrier", "urn:oro-sync-test:barrier"]));
  }
};
ws.onclose = (e) => report({type: "close", code: e.code, reason: e.reason});
"""

WAMP2_PAGE = """
const options = {url: %(url)s, realm: "oro", max_retries: 0};
if (%(msgpack)s) {  // Autobahn|JS's own choice when told to use MessagePack
  options.serializers = [new autobahn.serializer.MsgpackSerializer()];
}
const connection = new autobahn.Connection(options);
connection.onopen = (session, details) => {
  report({type: "joined", session: session.id, authid: details.authid,
          protocol: connection.transport.info.protocol});
  session.subscribe(%(topic)s, (args, kwargs) => report({type: "event", args, kwargs})).then(
    (sub) => report({type: "subscribed", id: sub.id}),
    (e) => report({type: "error", error: e.error}));
  session.call("wamp.session.count").then(
    (n) => report({type: "count", n}), (e) => report({type: "count", error: e.error}));
};
connection.onclose = (reason) => { report({type: "closed", reason}); return true; };
connection.open();
"""


class BrowserTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = start_oro_server(self)

    def ws_url(self, user: str) -> str:
        return json.dumps(f"ws://127.0.0.1:{self.server.number}{self.server.path(user)}")

    @defer.inlineCallbacks
    def test_wamp1_in_chromium(self) -> Any:
        page = open_page(self, WAMP1_PAGE % {"url": self.ws_url("admin"), "topic": '"oro/maintenance"'})
        opened = yield page.wait_for(lambda r: r["type"] == "open", "the WebSocket opening")
        # Chromium offers permessage-deflate; the server declines it.
        self.assertEqual((opened["protocol"], opened["extensions"]), ("wamp", ""))
        welcome = yield page.message(lambda m: m[0] == 0, "WELCOME")
        self.assertEqual(welcome["msg"][2], 1)
        self.assertIn(welcome["msg"][1], self.server.factory.hub.sessions)
        yield page.message(lambda m: m[:2] == [4, "barrier"], "the barrier's CALLERROR")
        backend = yield self.server.client(self)
        backend.publish("oro/maintenance", {"isOn": True, "userId": None}, [], [])
        event = yield page.message(lambda m: m[0] == 8, "the EVENT")
        self.assertEqual(event["msg"], [8, "oro/maintenance", {"isOn": True, "userId": None}])

    @defer.inlineCallbacks
    def test_page_from_another_origin_is_refused(self) -> Any:
        page = open_page(self, WAMP1_PAGE % {"url": self.ws_url("admin"), "topic": '"oro/maintenance"'},
                         host="127.0.0.2")  # loopback, but neither localhost nor the application host
        closed = yield page.wait_for(lambda r: r["type"] == "close", "the WebSocket closing")
        self.assertEqual(closed["code"], 1006)  # the handshake got HTTP 403
        self.assertFalse(any(r["type"] == "open" for r in page.items))
        self.assertEqual(self.server.factory.hub.sessions, {})

    def test_wamp2_autobahn_js_in_chromium(self) -> Any:
        return self._wamp2_in_chromium(msgpack=False)

    def test_wamp2_msgpack_in_chromium(self) -> Any:
        return self._wamp2_in_chromium(msgpack=True)

    @defer.inlineCallbacks
    def _wamp2_in_chromium(self, msgpack: bool) -> Any:
        page = open_page(self, WAMP2_PAGE % {"url": self.ws_url("admin"), "topic": '"oro/maintenance"',
                                             "msgpack": json.dumps(msgpack)})
        joined = yield page.wait_for(lambda r: r["type"] == "joined", "joining the realm")
        self.assertEqual((joined["authid"], joined["protocol"]),
                         ("admin", "wamp.2.msgpack" if msgpack else "wamp.2.json"))
        session = self.server.factory.hub.sessions[str(joined["session"])]
        self.assertEqual(session.serializer.binary, msgpack)
        yield page.wait_for(lambda r: r["type"] == "subscribed", "SUBSCRIBED")
        # A user in a browser may not look at who else is connected.
        count = yield page.wait_for(lambda r: r["type"] == "count", "the meta call's answer")
        self.assertEqual(count.get("error"), "wamp.error.not_authorized")
        backend = yield self.server.client(self)
        backend.publish("oro/maintenance", {"isOn": False, "userId": None}, [], [])
        event = yield page.wait_for(lambda r: r["type"] == "event", "the EVENT")
        self.assertEqual(event["args"], [{"isOn": False, "userId": None}])
