"""Where users come from: the YAML users file and Oro's ``oro_user`` table.

The SQL tests run against private, throwaway PostgreSQL and MariaDB servers
(tests/support/services.py), one per test, so a test may restart "its"
database.  Without the server binaries they are skipped (failed under
``CI=true``).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from oro_sync.auth.interfaces import (
    MAX_LOOKUP_LENGTH,
    IUserProvider,
    UserLookupError,
    UserRecord,
)
from oro_sync.auth.sql_users import SqlUserProvider, sql_user_provider_from_url
from oro_sync.auth.yaml_users import UserFileError, YamlUserProvider
from tests.support import services
from tests.support.services import mariadb_server, postgres_server

# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------

USERS_YAML = """\
# oro-sync users file
users:
  - id: 1
    username: admin
    email: admin@example.com
    password: "c2VjcmV0LWhhc2g="
    roles: [ROLE_ADMINISTRATOR]
    organization_id: 1
  - id: 2
    username: jane
    password: "hash-jane"
  - id: 3
    username: gone
    email: gone@example.com
    password: "hash-gone"
    enabled: false
  - id: 4
    username: shared@example.com
    password: "hash-4"
  - id: 5
    username: other
    email: shared@example.com
    password: "hash-5"
"""


class YamlUserProviderTests(unittest.TestCase):
    def setUp(self) -> None:
        handle, self.path = tempfile.mkstemp(suffix=".yml")
        os.close(handle)
        self.addCleanup(os.unlink, self.path)
        self.write(USERS_YAML)
        self.provider = YamlUserProvider(self.path)

    def write(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.write(text)

    def find(self, name: Any) -> UserRecord | None:
        return self.successResultOf(self.provider.findUser(name))

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IUserProvider, self.provider))

    def test_find_by_username(self) -> None:
        self.assertEqual(
            self.find("admin"),
            UserRecord(
                id=1,
                username="admin",
                password="c2VjcmV0LWhhc2g=",
                email="admin@example.com",
                enabled=True,
                roles=("ROLE_ADMINISTRATOR",),
                organization_id=1,
            ),
        )
        jane = self.find("jane")
        self.assertEqual((jane.id, jane.email, jane.roles, jane.enabled), (2, None, (), True))

    def test_find_by_email(self) -> None:
        self.assertEqual(self.find("admin@example.com").id, 1)

    def test_username_before_email(self) -> None:
        """Oro tries the username first: user 4's name beats user 5's email."""
        self.assertEqual(self.find("shared@example.com").id, 4)

    def test_unknown_and_disabled(self) -> None:
        self.assertIsNone(self.find("nobody"))
        self.assertIsNone(self.find("Admin"))  # exact match, as PostgreSQL
        self.assertIsNone(self.find("gone"))
        self.assertIsNone(self.find("gone@example.com"))

    def test_unusable_input(self) -> None:
        for value in ("", None, 42, "a" * (MAX_LOOKUP_LENGTH + 1), "adm\x00in"):
            self.assertIsNone(self.find(value), value)

    def test_mapping_source(self) -> None:
        provider = YamlUserProvider({"users": [{"id": 7, "username": "u", "password": "p"}]})
        self.assertIsNone(provider.path)
        self.assertEqual(self.successResultOf(provider.findUser("u")).id, 7)
        self.assertEqual(YamlUserProvider({}).users, ())

    def test_reload(self) -> None:
        self.write("users:\n  - {id: 9, username: newbie, password: h}\n")
        self.provider.reload()
        self.assertEqual(self.find("newbie").id, 9)
        self.assertIsNone(self.find("admin"))

    def test_reload_keeps_old_table_on_error(self) -> None:
        self.write("users: [ {id: 1, username: x")  # broken YAML
        self.assertRaises(UserFileError, self.provider.reload)
        self.assertEqual(self.find("admin").id, 1)

    def test_invalid_documents(self) -> None:
        """Typos in a credentials file are errors, not silently ignored users."""
        bad = [
            ["not", "a", "mapping"],
            {"user": []},
            {"users": {"admin": {}}},
            {"users": ["admin"]},
            {"users": [{"id": 1, "username": "a", "password": "p", "passwd": "x"}]},
            {"users": [{"id": "1", "username": "a", "password": "p"}]},
            {"users": [{"id": True, "username": "a", "password": "p"}]},
            {"users": [{"id": 0, "username": "a", "password": "p"}]},
            {"users": [{"id": 1, "username": "", "password": "p"}]},
            {"users": [{"id": 1, "username": "a", "password": 12345}]},
            {"users": [{"id": 1, "username": "a"}]},
            {"users": [{"id": 1, "username": "a", "password": "p", "enabled": "yes"}]},
            {"users": [{"id": 1, "username": "a", "password": "p", "roles": "ROLE_X"}]},
            {"users": [{"id": 1, "username": "a", "password": "p", "organization_id": "1"}]},
            {"users": [{"id": 1, "username": "a", "password": "p"},
                       {"id": 1, "username": "b", "password": "p"}]},
            {"users": [{"id": 1, "username": "a", "password": "p"},
                       {"id": 2, "username": "a", "password": "p"}]},
            {"users": [{"id": 1, "username": "a", "email": "e", "password": "p"},
                       {"id": 2, "username": "b", "email": "e", "password": "p"}]},
        ]
        for document in bad:
            self.assertRaises(UserFileError, YamlUserProvider, document)

    def test_missing_file(self) -> None:
        error = self.assertRaises(UserFileError, YamlUserProvider, self.path + ".missing")
        self.assertIn(".missing", str(error))


# ---------------------------------------------------------------------------
# URL configuration (no database needed: the pool connects lazily)
# ---------------------------------------------------------------------------


class SqlUrlTests(unittest.TestCase):
    def provider(self, url: str, **kwargs: Any) -> SqlUserProvider:
        provider = sql_user_provider_from_url(url, **kwargs)
        self.addCleanup(provider.close)
        return provider

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IUserProvider, self.provider("postgresql://u@127.0.0.1:1/db")))

    def test_postgresql(self) -> None:
        provider = self.provider(
            "postgresql://oro%40app:p%3Ass%2Fword@db.example:6543/oro%20prod"
            "?sslmode=require&cache_ttl=10&miss_ttl=2&cache_size=5&cp_max=4"
        )
        pool = provider._pool
        self.assertEqual(pool.dbapiName, "psycopg2")
        self.assertEqual(pool.max, 4)
        self.assertTrue(pool.reconnect)
        self.assertFalse(pool.noisy)
        kw = pool.connkw
        self.assertEqual(
            (kw["user"], kw["password"], kw["host"], kw["port"], kw["dbname"], kw["sslmode"]),
            ("oro@app", "p:ss/word", "db.example", 6543, "oro prod", "require"),
        )
        self.assertEqual((provider.cache_ttl, provider.miss_ttl), (10.0, 2.0))
        self.assertNotIn("word", repr(provider))
        self.assertIn("***", provider.description)

    def test_mysql(self) -> None:
        for scheme in ("mysql", "mariadb", "mysql+pymysql"):
            provider = self.provider(
                f"{scheme}://root@127.0.0.1:3306/oro?read_timeout=7&ssl_verify_cert=true"
                "&table=crm.oro_user"
            )
            kw = provider._pool.connkw
            self.assertEqual(provider._pool.dbapiName, "pymysql")
            self.assertEqual(
                (kw["user"], kw["host"], kw["port"], kw["database"], kw["read_timeout"]),
                ("root", "127.0.0.1", 3306, "oro", 7),
            )
            self.assertIs(kw["ssl_verify_cert"], True)
            self.assertNotIn("password", kw)
            self.assertIn("FROM crm.oro_user", provider._sql)
            self.assertIn("%(key)s", provider._sql)

    def test_unusable_input_never_queries(self) -> None:
        # Port 1: nothing listens; a query would fail the lookup.
        provider = self.provider("postgresql://u@127.0.0.1:1/db")
        for value in ("", None, 42, "a" * (MAX_LOOKUP_LENGTH + 1), "adm\x00in"):
            self.assertIsNone(self.successResultOf(provider.findUser(value)), value)
        self.assertEqual(provider.stats["queries"], 0)

    def test_closed(self) -> None:
        provider = self.provider("mysql://u@127.0.0.1:1/db")
        provider.close()
        self.failureResultOf(provider.findUser("admin"), UserLookupError)

    def test_close_answers_pending_lookups(self) -> None:
        provider = self.provider("postgresql://u@127.0.0.1:1/db")
        pending = provider.findUser("admin")
        provider.close()
        self.failureResultOf(pending, UserLookupError)

    def test_rejected(self) -> None:
        for url in (
            "sqlite:///tmp/x.db",
            "mysql://root@h/db?no_such_option=1",
            "mysql://root@h/db?read_timeout=soon",
            "postgresql://u@h:notaport/db",
            "postgresql://u@h/db?cache_ttl=long",
            "postgresql://u@h/db?table=oro_user;DROP%20TABLE%20x",
            "postgresql://u@h/db?organization_column=org%20id",
        ):
            self.assertRaises(ValueError, sql_user_provider_from_url, url)


# ---------------------------------------------------------------------------
# SQL against real servers
# ---------------------------------------------------------------------------


class ServiceAvailabilityTests(unittest.TestCase):
    """A missing database server skips its tests -- but fails them under CI."""

    def setUp(self) -> None:
        self.patch(services, "_postgres_bindir", lambda: None)
        self.patch(services, "_mariadb_binaries", lambda: None)
        saved = os.environ.get("CI")
        self.addCleanup(
            lambda: os.environ.pop("CI", None)
            if saved is None
            else os.environ.__setitem__("CI", saved)
        )

    def test_skipped_outside_ci(self) -> None:
        os.environ.pop("CI", None)
        self.assertRaises(unittest.SkipTest, postgres_server, self)
        os.environ["CI"] = "false"
        self.assertRaises(unittest.SkipTest, mariadb_server, self)

    def test_failed_under_ci(self) -> None:
        os.environ["CI"] = "true"
        self.assertRaises(services.ServiceUnavailable, postgres_server, self)
        self.assertRaises(services.ServiceUnavailable, mariadb_server, self)

# (id, organization_id, username, email, password, enabled)
USERS = [
    (1, 1, "admin", "admin@example.com", "hash-admin", True),
    (2, 1, "jane", "jane@example.com", "hash-jane", True),
    (3, 2, "gone", "gone@example.com", "hash-gone", False),
    (4, 1, "o'brien", "obrien@example.com", "hash-obrien", True),
    # Username/email collisions: username wins; a disabled username match
    # is not bypassed through another user's email.
    (5, 1, "shared@example.com", "five@example.com", "hash-5", True),
    (6, 1, "six", "shared@example.com", "hash-6", True),
    (7, 1, "ghost@example.com", "seven@example.com", "hash-7", False),
    (8, 1, "eight", "ghost@example.com", "hash-8", True),
]

INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "admin' --",
    "admin'; DROP TABLE oro_user; --",
    "\\' OR 1=1 #",
    "admin\\",
    '" OR ""="',
    "%(key)s",
    "%s",
    "x' UNION SELECT 1, 'admin', 'a@b', 'pwned', 1, 1 --",
]


class _SqlProviderTests:
    """The same behaviour for every database; mixed into a TestCase per server."""

    timeout = 60
    schema: list[str] = []
    case_insensitive: bool
    start_server: Any = None

    def setUp(self) -> None:
        self.server = type(self).start_server(self)
        for statement in self.schema:
            self.server.execute(statement)
        for row in USERS:
            self.server.execute(
                "INSERT INTO oro_user (id, organization_id, username, email, password, enabled)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                row,
            )
        self.clock = Clock()
        self.provider = self.make_provider()

    def make_provider(self, **kwargs: Any) -> SqlUserProvider:
        kwargs.setdefault("clock", self.clock)
        kwargs.setdefault("cp_max", 2)
        provider = sql_user_provider_from_url(self.server.url(), **kwargs)
        self.addCleanup(provider.close)
        return provider

    @defer.inlineCallbacks
    def find_all(self, names, provider=None):
        """Look several names up concurrently; a dict name -> result."""
        provider = provider or self.provider
        results = yield defer.gatherResults(
            [provider.findUser(name) for name in names], consumeErrors=True
        )
        return dict(zip(names, results))

    @defer.inlineCallbacks
    def test_lookups(self):
        self.assertTrue(verifyObject(IUserProvider, self.provider))
        found = yield self.find_all(
            ["admin", "jane@example.com", "shared@example.com", "o'brien",
             "nobody", "gone", "gone@example.com", "ghost@example.com"]
        )
        self.assertEqual(
            found["admin"],
            UserRecord(id=1, username="admin", password="hash-admin",
                       email="admin@example.com", enabled=True),
        )
        self.assertEqual(found["jane@example.com"].id, 2)
        self.assertEqual(found["shared@example.com"].id, 5)
        self.assertEqual(found["o'brien"].password, "hash-obrien")
        for missing in ("nobody", "gone", "gone@example.com", "ghost@example.com"):
            self.assertIsNone(found[missing], missing)
        upper = yield self.provider.findUser("ADMIN")
        if self.case_insensitive:
            self.assertEqual(upper.username, "admin")
        else:
            self.assertIsNone(upper)

    @defer.inlineCallbacks
    def test_organization_column(self):
        provider = self.make_provider(organization_column="organization_id")
        user = yield provider.findUser("jane")
        self.assertEqual((user.id, user.organization_id), (2, 1))

    @defer.inlineCallbacks
    def test_found_user_cached_until_ttl(self):
        self.assertEqual((yield self.provider.findUser("admin")).password, "hash-admin")
        self.server.execute("UPDATE oro_user SET password = 'hash-new' WHERE id = 1")
        self.clock.advance(29.5)
        self.assertEqual((yield self.provider.findUser("admin")).password, "hash-admin")
        self.assertEqual(self.provider.stats["queries"], 1)
        self.clock.advance(0.5)
        self.assertEqual((yield self.provider.findUser("admin")).password, "hash-new")
        self.assertEqual(self.provider.stats["queries"], 2)

    @defer.inlineCallbacks
    def test_miss_cached_shorter(self):
        self.assertIsNone((yield self.provider.findUser("newbie")))
        self.server.execute(
            "INSERT INTO oro_user (id, username, email, password, enabled)"
            " VALUES (20, 'newbie', 'newbie@example.com', 'hash-newbie', %s)",
            (True,),
        )
        self.clock.advance(4.9)
        self.assertIsNone((yield self.provider.findUser("newbie")))
        self.clock.advance(0.1)
        self.assertEqual((yield self.provider.findUser("newbie")).id, 20)
        # Disabling is noticed once the positive entry expires (or is invalidated).
        self.server.execute("UPDATE oro_user SET enabled = %s WHERE id = 20", (False,))
        self.provider.invalidate("newbie")
        self.assertIsNone((yield self.provider.findUser("newbie")))

    @defer.inlineCallbacks
    def test_concurrent_lookups_share_one_query(self):
        first, second = self.provider.findUser("jane"), self.provider.findUser("jane")
        users = yield defer.gatherResults([first, second])
        self.assertEqual([u.id for u in users], [2, 2])
        self.assertEqual(self.provider.stats["queries"], 1)

    @defer.inlineCallbacks
    def test_bounded_cache(self):
        provider = self.make_provider(cache_size=3)
        yield self.find_all(["admin", "jane", "six", "eight", "nobody"], provider)
        self.assertEqual(provider.cached, 3)

    @defer.inlineCallbacks
    def test_injection_is_harmless(self):
        found = yield self.find_all(INJECTIONS)
        for text, user in found.items():
            self.assertIsNone(user, text)
        self.assertEqual(self.server.execute("SELECT COUNT(*) FROM oro_user"), [(len(USERS),)])
        self.assertEqual((yield self.provider.findUser("o'brien")).id, 4)

    @defer.inlineCallbacks
    def test_reconnects_after_restart(self):
        """Every pooled connection dies with the server; lookups still succeed."""
        yield self.find_all(["admin", "jane"])
        self.server.stop()
        self.server.start()
        self.provider.invalidate()
        found = yield self.find_all(["admin", "jane", "six", "eight", "nobody"])
        self.assertEqual(
            {name: user and user.id for name, user in found.items()},
            {"admin": 1, "jane": 2, "six": 6, "eight": 8, "nobody": None},
        )
        self.assertGreaterEqual(self.provider.stats["reconnects"], 1)

    @defer.inlineCallbacks
    def test_database_down_fails_then_recovers(self):
        """An outage is an error (not "no such user"), never cached."""
        yield self.provider.findUser("admin")
        self.server.stop()
        yield self.assertFailure(self.provider.findUser("jane"), UserLookupError)
        yield self.assertFailure(self.provider.findUser("jane"), UserLookupError)
        self.assertEqual((yield self.provider.findUser("admin")).id, 1)  # still cached
        self.server.start()
        self.assertEqual((yield self.provider.findUser("jane")).id, 2)

    @defer.inlineCallbacks
    def test_close(self):
        yield self.provider.findUser("admin")
        self.provider.close()
        self.provider.close()
        yield self.assertFailure(self.provider.findUser("admin"), UserLookupError)
        self.assertEqual(self.provider.cached, 0)


class PostgresUserProviderTests(_SqlProviderTests, unittest.TestCase):
    start_server = staticmethod(postgres_server)
    # The columns of Oro's oro_user that matter, as Oro creates them.
    schema = [
        "CREATE TABLE oro_user ("
        " id SERIAL NOT NULL, organization_id INT DEFAULT NULL,"
        " username VARCHAR(255) NOT NULL, email VARCHAR(255) NOT NULL,"
        " password VARCHAR(255) NOT NULL, salt VARCHAR(255) DEFAULT NULL,"
        " enabled BOOLEAN NOT NULL, PRIMARY KEY(id))",
        "CREATE UNIQUE INDEX uniq_f82840bcf85e0677 ON oro_user (username)",
        "CREATE UNIQUE INDEX uniq_f82840bce7927c74 ON oro_user (email)",
    ]

    case_insensitive = False


class MariaDBUserProviderTests(_SqlProviderTests, unittest.TestCase):
    start_server = staticmethod(mariadb_server)
    schema = [
        "CREATE TABLE oro_user ("
        " id INT AUTO_INCREMENT NOT NULL, organization_id INT DEFAULT NULL,"
        " username VARCHAR(255) NOT NULL, email VARCHAR(255) NOT NULL,"
        " password VARCHAR(255) NOT NULL, salt VARCHAR(255) DEFAULT NULL,"
        " enabled TINYINT(1) NOT NULL,"
        " UNIQUE INDEX UNIQ_F82840BCF85E0677 (username),"
        " UNIQUE INDEX UNIQ_F82840BCE7927C74 (email), PRIMARY KEY(id))"
        " DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci ENGINE = InnoDB",
    ]

    # MySQL's *_ci collation decides, as it does for Oro itself.
    case_insensitive = True
