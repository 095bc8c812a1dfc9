"""An Oro server on a real socket for end-to-end tests, built from the shipped config."""

from __future__ import annotations

import os
from typing import Any, Callable

import yaml
from twisted.internet import defer, reactor

from oro_sync.auth.ticket_signing import issue_ticket
from oro_sync.config import load_config
from oro_sync.server import build_server

SECRET = "TestSecretForOroSyncE2E"
USERS = [
    {"id": 1, "username": "admin", "email": "admin@example.com", "password": "hash-of-admin"},
    {"id": 2, "username": "jane", "email": "jane@example.com", "password": "hash-of-jane"},
    {"id": 3, "username": "gone", "password": "hash-of-gone", "enabled": False},
]


class OroServer:
    """A listening Oro server plus ticket helpers; stopped by the test's cleanup."""

    def __init__(self, built: Any, port: Any):
        #: The composition root's OroServer (for the admin site).
        self.built = built
        self.factory = built.factory
        self.router = built.router
        self.handlers = built.handlers
        #: The backend pushers' services (started by start_oro_server).
        self.pushers = list(getattr(built, "pushers", []))
        self.port = port
        self.number = port.getHost().port
        self.broker = built.factory.hub.broker
        self.metrics = built.metrics
        self.built = built

    def ticket(self, username: str = "") -> str:
        """A fresh valid ticket: anonymous (backend) or for a user of USERS."""
        if not username:
            return issue_ticket(SECRET)
        user = next(u for u in USERS if u["username"] == username)
        return issue_ticket(SECRET, username, user["password"])

    def path(self, username: str = "") -> str:
        from urllib.parse import quote
        return "/?ticket=" + quote(self.ticket(username), safe="")

    @defer.inlineCallbacks
    def client(self, testcase: Any, username: str = "") -> Any:
        """A WAMP v1 test client with a ticket (a backend's without ``username``),
        aborted by ``testcase``'s cleanup."""
        from tests.support.client import connect

        c = yield connect(self.number, path=self.path(username))
        testcase.addCleanup(c.abort)
        return c

    def topics(self) -> dict:
        return self.factory.hub.topics.topics

    def session_closed(self, session_id: str) -> defer.Deferred:
        """Fires once the server has finished closing the session (left its
        topics and been forgotten)."""
        d: defer.Deferred = defer.Deferred()
        factory = self.factory
        if session_id not in factory.hub.sessions:
            return defer.succeed(None)

        class Observer:
            def sessionOpened(self, session):
                pass

            def sessionClosed(self, session):
                if session.session_id == session_id and not d.called:
                    factory._session_observers.remove(self)
                    d.callback(None)

        factory.addSessionObserver(Observer())
        return d


def start_oro_server(testcase: Any, tweak: Callable[[Any], None] | None = None,
                     hub: Any = None) -> OroServer:
    """Build the shipped configuration with test users and secret, apply
    ``tweak(config)``, listen on 127.0.0.1 (a port the OS picks)."""
    base = os.path.abspath(testcase.mktemp())
    os.makedirs(base)
    users_file = os.path.join(base, "users.yml")
    with open(users_file, "w") as f:
        yaml.safe_dump({"users": USERS}, f)
    config = load_config()
    config.auth = {"secret": SECRET, "require_ticket": True, "users": {"file": users_file}}
    if tweak is not None:
        tweak(config)
    built = build_server(config, reactor, hub)
    factory = built.factory
    # The broker (Redis) and other services run as under twistd.
    for extra in built.services:
        extra.startService()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    server = OroServer(built, port)

    @defer.inlineCallbacks
    def stop():
        for pusher in reversed(server.pushers):
            yield defer.maybeDeferred(pusher.stopService)
        yield port.stopListening()
        for session in list(factory.hub.sessions.values()):
            session.connection.transport.abortConnection()
        if built.verifier is not None:
            yield built.verifier.shutdown()
        for handler in built.handlers.values():
            for call in list(getattr(handler, "timers", {}).values()):
                if call.running:
                    call.stop()
        for extra in reversed(built.services):
            yield extra.stopService()

    testcase.addCleanup(stop)
    for pusher in server.pushers:
        pusher.startService()
    return server
