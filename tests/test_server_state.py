"""Origins follow Oro's configuration without a restart: the server-state
poller against a PostgreSQL the test starts, its timer on a task.Clock."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from oro_sync.config import ConfigError, load_config
from oro_sync.oro.server_state import ServerStateWatcher
from oro_sync.server import build_server
from tests.support.client import HandshakeFailed, connect
from tests.support.oro_schema import bump_server_state, create_oro_tables, set_application_url
from tests.support.oro_server import start_oro_server
from tests.support.services import postgres_server
from tests.test_protection import LogCapture

INTERVAL = 10


class ServerStateWatcherTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.db = postgres_server(self)
        self.server = start_oro_server(self)
        self.clock = task.Clock()
        self.log = LogCapture(self)

    @defer.inlineCallbacks
    def watch(self):
        watcher = ServerStateWatcher(self.db.url(), self.server.factory.originPolicy, ["other.example"],
                                     "http://localhost", INTERVAL, clock=self.clock)
        watcher.startService()  # the first poll starts at once
        self.addCleanup(watcher.stopService)
        yield watcher.when_idle()
        return watcher

    @defer.inlineCallbacks
    def tick(self, watcher):
        """One poll interval passes; fires when that poll is done."""
        self.clock.advance(INTERVAL)
        yield watcher.when_idle()

    @defer.inlineCallbacks
    def connects(self, origin: str) -> defer.Deferred:
        """Whether a browser with ``origin`` may connect (the client is kept open)."""
        try:
            c = yield connect(self.server.number, path=self.server.path("admin"),
                              headers={"Origin": origin})
        except HandshakeFailed as e:
            self.assertIn("403", e.reason)
            return False
        self.addCleanup(c.abort)
        return c

    def lines(self, text: str) -> int:
        from twisted.logger import formatEvent
        return sum(text in formatEvent(e) for e in self.log.events)

    @defer.inlineCallbacks
    def test_reload_on_state_change_keeps_connections(self):
        create_oro_tables(self.db, "https://old.example.com/")
        self.assertFalse((yield self.connects("https://old.example.com")))  # configured: localhost
        watcher = yield self.watch()
        old = yield self.connects("https://old.example.com")
        self.assertTrue(old)
        self.assertTrue((yield self.connects("http://other.example")))  # origins.allowed stays
        self.assertFalse((yield self.connects("https://new.example.com")))
        self.assertFalse((yield self.connects("https://org-scope.example.com")))  # not the global scope
        old.subscribe("oro/maintenance")

        # The URL changes, but Oro has not signalled it yet: nothing is re-read.
        set_application_url(self.db, "https://new.example.com")
        yield self.tick(watcher)
        self.assertFalse((yield self.connects("https://new.example.com")))
        # Oro bumps the server state: reloaded in place.
        bump_server_state(self.db)
        yield self.tick(watcher)
        self.assertEqual(watcher.reloads, 2)
        self.assertTrue((yield self.connects("https://new.example.com")))
        self.assertFalse((yield self.connects("https://old.example.com")))
        # The connection made under the old origins is still served.
        self.assertTrue(old.is_open)
        backend = yield self.server.client(self)
        backend.publish("oro/maintenance", {"isOn": False}, [], [])
        self.assertEqual((yield old.next_message()), [8, "oro/maintenance", {"isOn": False}])

    @defer.inlineCallbacks
    def test_outage_is_logged_once_and_survived(self):
        create_oro_tables(self.db, "https://old.example.com")
        watcher = yield self.watch()
        hosts = self.server.factory.originPolicy.hosts
        self.db.stop()
        for _ in range(3):
            yield self.tick(watcher)
        self.assertEqual(self.lines("cannot read Oro's configuration"), 1)
        self.assertEqual(self.server.factory.originPolicy.hosts, hosts)  # unchanged meanwhile
        self.assertTrue((yield self.connects("https://old.example.com")))
        self.db.start()
        set_application_url(self.db, "https://back.example.com")
        bump_server_state(self.db)
        yield self.tick(watcher)
        self.assertEqual(self.lines("is reachable again"), 1)
        self.assertIn("back.example.com", self.server.factory.originPolicy.hosts)
        self.assertFalse([e for e in self.log.events if e.get("log_failure")])  # no traceback

    @defer.inlineCallbacks
    def test_older_oro_without_state_table(self):
        """Before 6.1.7 there is no signal: the URL itself is compared."""
        create_oro_tables(self.db, None, state=False)
        watcher = yield self.watch()
        self.assertIn("localhost", watcher.policy.hosts)  # no URL in the database: the configured one
        set_application_url(self.db, "https://crm.example.com")
        yield self.tick(watcher)
        yield self.tick(watcher)
        self.assertTrue((yield self.connects("https://crm.example.com")))
        self.assertEqual(self.lines("has no websocket server state"), 1)
        self.assertEqual(watcher.reloads, 2)

    @defer.inlineCallbacks
    def test_stop_waits_for_the_poll_and_closes_the_pool(self):
        create_oro_tables(self.db, "https://old.example.com")
        watcher = yield self.watch()
        self.clock.advance(INTERVAL)  # a poll in flight
        yield watcher.stopService()
        self.assertIsNone(watcher._pool)
        self.clock.advance(INTERVAL * 3)  # no more polls
        self.assertIsNone(watcher._running_poll)


class WatcherSettingsTests(unittest.TestCase):
    """Which configurations get a watcher (no database needed)."""

    def config(self, **origins):
        config = load_config()
        config.auth = {"secret": "s", "users": {"url": "postgresql://oro@127.0.0.1:5432/oro"}}
        config.origins.update(origins)
        return config

    def test_database_from_the_user_provider(self):
        watcher = build_server(self.config()).watcher
        self.assertIsInstance(watcher, ServerStateWatcher)
        self.assertEqual(watcher.interval, 10)
        self.assertEqual(watcher.description, "postgresql://oro@127.0.0.1:5432/oro")

    def test_explicit_database_and_interval(self):
        watcher = build_server(self.config(database_url="postgresql://x:pw@db:5432/oro",
                                           reload_interval=3)).watcher
        self.assertEqual((watcher.interval, watcher.description), (3, "postgresql://x:***@db:5432/oro"))

    def test_off(self):
        self.assertIsNone(build_server(self.config(reload_interval=0)).watcher)
        self.assertIsNone(build_server(self.config(check=False)).watcher)
        self.assertIsNone(build_server(load_config()).watcher)  # users from a file

    def test_bad_settings(self):
        for origins, where in (({"database_url": "redis://x"}, "origins.database_url"),
                               ({"database_url": 5}, "origins.database_url"),
                               ({"reload_interval": -1}, "origins.reload_interval"),
                               ({"reload_interval": float("nan")}, "origins.reload_interval")):
            with self.assertRaises(ConfigError) as e:
                build_server(self.config(**origins))
            self.assertIn(where, str(e.exception))

    def test_twistd_service_runs_it(self):
        from oro_sync.tap import Options, makeService

        options = Options()
        options.config = self.config()
        options["log-level"] = "info"
        top = makeService(options)
        self.assertTrue(any(isinstance(s, ServerStateWatcher) for s in top))
