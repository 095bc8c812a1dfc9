"""Tickets from application servers whose clocks run ahead (Oro >= 5.1
accepts tickets dated up to 30 s in the future, and so does oro-sync by default)."""

from __future__ import annotations

import time
from urllib.parse import quote

from twisted.internet import defer
from twisted.trial import unittest

from oro_sync.auth.ticket_signing import issue_ticket
from oro_sync.config import load_config
from tests.support.client import HandshakeFailed, connect
from tests.support.oro_server import SECRET, USERS, start_oro_server


def path(ticket: str) -> str:
    return "/ws?ticket=" + quote(ticket, safe="")


class ClockLeewayTests(unittest.TestCase):
    timeout = 30

    def tickets(self, ahead: float) -> list[str]:
        """A backend ticket and a user ticket dated ``ahead`` seconds from now."""
        admin = USERS[0]
        when = time.time() + ahead
        return [issue_ticket(SECRET, now=when),
                issue_ticket(SECRET, admin["username"], admin["password"], now=when)]

    @defer.inlineCallbacks
    def refused(self, port: int, ticket: str) -> defer.Deferred:
        try:
            c = yield connect(port, path=path(ticket))
        except HandshakeFailed as e:
            return e.reason
        c.abort()
        self.fail("a ticket from the future was accepted")

    @defer.inlineCallbacks
    def test_default_accepts_20s_ahead_refuses_40s(self):
        self.assertEqual(load_config().auth.get("clock_leeway"), 30)  # the shipped file says so
        server = start_oro_server(self)  # an auth section without clock_leeway: the default
        self.assertEqual(server.factory.authenticator.verifier.leeway, 30)
        for ticket in self.tickets(20):
            c = yield connect(server.number, path=path(ticket))
            self.addCleanup(c.abort)
            self.assertEqual(c.welcome[0], 0)
        for ticket in self.tickets(40):
            reason = yield self.refused(server.number, ticket)
            self.assertIn("403", reason)

    @defer.inlineCallbacks
    def test_zero_leeway_refuses_any_future_date(self):
        server = start_oro_server(self, lambda c: c.auth.update(clock_leeway=0))
        for ticket in self.tickets(20):
            reason = yield self.refused(server.number, ticket)
            self.assertIn("403", reason)
