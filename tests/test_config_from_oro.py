"""``oro-sync config-from-oro``: an application tree made by the test, a
PostgreSQL with Oro's tables started by the test, and the written file
served for real."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from urllib.parse import quote

import yaml
from twisted.internet import defer, reactor
from twisted.trial import unittest

from oro_sync import cli
from oro_sync.auth.ticket_signing import issue_ticket
from oro_sync.config import ConfigError, load_config
from oro_sync.oro import app_config as ac
from oro_sync.oro.app_env import load_app_env, parse_dotenv, parse_dumped_env
from oro_sync.oro.config_from_oro import gather
from oro_sync.oro.oro_db import decode_config_text
from oro_sync.server import build_server
from tests.support.client import connect
from tests.support.oro_schema import create_oro_tables
from tests.support.services import postgres_server

SECRET = "The-Real-Secret-4f1c"
DB_PASSWORD = "db-pass-9a7e"

SYNC_ROUTES = """\
oro_sync.ping:
    channel: 'oro/ping'
    handler: {callback: 'oro_sync.ping'}
oro_sync.maintenance:
    channel: 'oro/maintenance'
    handler: {callback: 'oro_sync.maintenance'}
"""
# A bundle of the application (src/) with handlers oro-sync does not ship.
ACME_ROUTES = """\
acme_demo.news:
    channel: 'acme/news'
    handler: {callback: 'acme_demo.news'}
acme_demo.note:
    channel: 'acme/note/{user_id}'
    handler: {callback: 'acme_demo.note'}
    requirements:
        user_id: {pattern: '\\d+'}
"""


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def bundle_routing(app: str, *parts: str) -> str:
    return os.path.join(app, *parts, "Resources", "config", "oro", "websocket_routing.yml")


def make_app(testcase: unittest.TestCase, db_url: str | None) -> str:
    """An Oro 5.1+ application tree as Oro ships it, with local overrides."""
    app = os.path.abspath(testcase.mktemp())
    write(os.path.join(app, ".env-app"), """\
# Oro's committed defaults
ORO_ENV=prod
ORO_SECRET=ThisTokenIsNotSoSecretChangeIt
ORO_DB_URL=postgres://oro_db_user:oro_db_pass@127.0.0.1:5432/oro_db?sslmode=disable&charset=utf8&serverVersion=13.7
ORO_DB_DSN=${ORO_DB_URL}
# websocket server DSN example: //0.0.0.0:8080
ORO_WEBSOCKET_SERVER_DSN=
ORO_WEBSOCKET_FRONTEND_DSN=
ORO_WEBSOCKET_BACKEND_DSN=
""")
    local = f"ORO_SECRET='{SECRET}'\nORO_WEBSOCKET_FRONTEND_DSN=//*:443/ws\n"
    if db_url is not None:
        local += f'ORO_DB_URL="{db_url}?sslmode=disable&charset=utf8&serverVersion=15"\n'
    write(os.path.join(app, ".env-app.local"), local)
    write(bundle_routing(app, "vendor", "oro", "platform", "src", "Oro", "Bundle", "SyncBundle"),
          SYNC_ROUTES)
    write(bundle_routing(app, "src", "Acme", "Bundle", "DemoBundle"), ACME_ROUTES)
    # Not loaded by Oro: a test bundle, and a broken file that is reported.
    write(bundle_routing(app, "vendor", "oro", "platform", "src", "Oro", "Bundle", "SyncBundle",
                         "Tests", "Functional"), "test_only:\n    channel: 'x'\n    handler: {callback: 'x'}\n")
    write(bundle_routing(app, "vendor", "acme", "broken", "src"), "broken:\n    channel: 5\n")
    return app


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class ConfigFromOroDatabaseTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.db = postgres_server(self)
        create_oro_tables(self.db, "https://crm.example.com/")
        base = self.db.url()  # postgresql://postgres@host:port/db (trust: any password)
        self.db_url = base.replace("postgresql://postgres@", f"postgres://postgres:{DB_PASSWORD}@")
        self.app = make_app(self, self.db_url)
        self.output = os.path.join(os.path.abspath(self.mktemp()), "oro-sync.yml")
        os.makedirs(os.path.dirname(self.output))
        # A real environment variable beats the files.
        self.patch(os, "environ", {**os.environ, "ORO_WEBSOCKET_SERVER_DSN": "//127.0.0.1:8091"})

    def test_writes_a_configuration_from_the_application(self):
        code, out, err = run_cli("config-from-oro", self.app, "-o", self.output)
        self.assertEqual((code, err), (0, ""))
        self.assertNotIn(SECRET, out)  # never printed
        self.assertNotIn(DB_PASSWORD, out)
        self.assertEqual(stat.S_IMODE(os.stat(self.output).st_mode), 0o600)
        config = load_config(self.output)
        self.assertEqual(config.auth["secret"], SECRET)  # .env-app.local over .env-app
        self.assertEqual(config.auth["users"]["url"], self.db_url.replace("postgres://", "postgresql://")
                         + "?sslmode=disable")  # Doctrine's charset/serverVersion dropped
        self.assertEqual(config.server.listen, "tcp:8091:interface=127.0.0.1:backlog=4096")
        self.assertEqual(config.origins["application_url"], "https://crm.example.com/")
        self.assertEqual([os.path.relpath(p, self.app) for p in config.routing], [
            "vendor/oro/platform/src/Oro/Bundle/SyncBundle/Resources/config/oro/websocket_routing.yml",
            "src/Acme/Bundle/DemoBundle/Resources/config/oro/websocket_routing.yml"])
        self.assertEqual(config.services["oro_sync.generated.acme_demo.news"]["class"],
                         "oro_sync.oro.topics.BroadcastTopic")
        self.assertEqual(config.services["oro_sync.generated.acme_demo.note"]["class"],
                         "oro_sync.oro.topics.SecuredTopic")
        # What it found and what it could not.
        for text in ("https://crm.example.com/", "4 routes in 2 websocket_routing.yml files",
                     "ORO_SECRET (not shown)", "dropped Doctrine options charset, serverVersion",
                     "//*:443/ws", "browsers use port 443", "tcp://127.0.0.1:8080",
                     "acme_demo.news", "broken", "postgresql://postgres:***@"):
            self.assertIn(text, out)
        self.assertNotIn("test_only", open(self.output).read())
        # Written once; not replaced without --force.
        code, _, err = run_cli("config-from-oro", self.app, "-o", self.output)
        self.assertEqual(code, 2)
        self.assertIn("--force", err)
        # Replacing a file someone made world-readable leaves it 0600 (it holds the secret).
        os.chmod(self.output, 0o644)
        self.assertEqual(run_cli("config-from-oro", self.app, "-o", self.output, "--force")[0], 0)
        self.assertEqual(stat.S_IMODE(os.stat(self.output).st_mode), 0o600)
        self.assertEqual([n for n in os.listdir(os.path.dirname(self.output)) if ".tmp-" in n], [])

    @defer.inlineCallbacks
    def test_the_written_file_serves_the_application(self):
        """Users from oro_user, the Origin of the application URL, the routes of its bundles."""
        self.assertEqual(run_cli("config-from-oro", self.app, "-o", self.output)[0], 0)
        config = load_config(self.output)
        built = build_server(config, reactor)
        self.assertIsNotNone(built.watcher)  # follows Oro's configuration changes
        port = reactor.listenTCP(0, built.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(built.verifier._users.close)
        self.addCleanup(built.verifier.shutdown)
        number = port.getHost().port
        ticket = issue_ticket(SECRET, "admin", "hash-of-admin")
        user = yield connect(number, path="/ws?ticket=" + quote(ticket, safe=""),
                             headers={"Origin": "https://crm.example.com"})
        self.addCleanup(user.abort)
        user.subscribe("acme/note/1")
        user.subscribe("acme/news")
        backend = yield connect(number, path="/ws?ticket=" + quote(issue_ticket(SECRET), safe=""))
        self.addCleanup(backend.abort)
        backend.publish("acme/note/1", {"note": "hello"}, [], [])
        backend.publish("acme/news", "extra!", [], [])
        self.assertEqual((yield user.next_message()), [8, "acme/note/1", {"note": "hello"}])
        self.assertEqual((yield user.next_message()), [8, "acme/news", "extra!"])


class ConfigFromOroFilesTests(unittest.TestCase):
    """Without a database (or with one that does not answer)."""

    def test_unreachable_database_is_reported(self):
        app = make_app(self, "postgres://oro:pw@127.0.0.1:1/oro")
        data, found = gather(app, {})
        self.assertEqual(data["origins"]["application_url"], "http://localhost")
        self.assertTrue(any("cannot read it from the database" in m for m in found.missing))
        self.assertEqual(data["server"]["listen"], "tcp:8080:interface=0.0.0.0:backlog=4096")

    def test_no_database_option(self):
        app = make_app(self, None)
        out = os.path.join(os.path.abspath(self.mktemp()), "o.yml")
        os.makedirs(os.path.dirname(out))
        code, text, _ = run_cli("config-from-oro", app, "-o", out, "--no-database")
        self.assertEqual(code, 0)
        self.assertIn("database not asked", text)
        # .env-app's own DSN (no local override)
        self.assertIn("postgresql://oro_db_user:***@127.0.0.1:5432/oro_db", text)

    def test_no_secret_writes_nothing(self):
        app = os.path.abspath(self.mktemp())
        write(os.path.join(app, ".env-app"), "ORO_ENV=prod\n")
        out = os.path.join(app, "oro-sync.yml")
        code, _, err = run_cli("config-from-oro", app, "-o", out)
        self.assertEqual(code, 2)
        self.assertIn("no ORO_SECRET", err)
        self.assertFalse(os.path.exists(out))

    def test_oro_4_parameters_yml(self):
        app = os.path.abspath(self.mktemp())
        write(os.path.join(app, "config", "parameters.yml"), yaml.safe_dump({"parameters": {
            "secret": "s3", "database_driver": "pdo_mysql", "database_host": "db", "database_port": None,
            "database_name": "oro", "database_user": "oro", "database_password": "p@ss",
            "websocket_bind_address": "0.0.0.0", "websocket_bind_port": 8081,
            "websocket_frontend_host": "*", "websocket_frontend_port": 8081,
            "websocket_backend_host": "*", "websocket_backend_port": 8081}}))
        data, found = gather(app, {}, read_url=None)
        self.assertEqual(data["auth"]["secret"], "s3")
        self.assertEqual(data["auth"]["users"]["url"], "mysql://oro:p%40ss@db/oro")
        self.assertEqual(data["server"]["listen"], "tcp:8081:interface=0.0.0.0:backlog=4096")
        self.assertIn(("settings", "Oro 3.x/4.x config/parameters.yml"), found.found)
        self.assertTrue(any("tcp://127.0.0.1:8081" in text for _, text in found.found))
        self.assertTrue(any("no Resources/config/oro/websocket_routing.yml" in m for m in found.missing))

    def test_environment_files_and_precedence(self):
        app = os.path.abspath(self.mktemp())
        write(os.path.join(app, ".env-app"), "ORO_ENV=dev\nA=1\nB=1\nC=1\nD=1\n")
        write(os.path.join(app, ".env-app.local"), "B=2\nC=2\nD=2\n")
        write(os.path.join(app, ".env-app.dev"), "C=3\nD=3\n")
        write(os.path.join(app, ".env-app.dev.local"), "D=4\nE=${A}${B}\n")
        write(os.path.join(app, ".env-app.prod"), "D=wrong\n")
        values, files = load_app_env(app, {"A": "env"})
        self.assertEqual({k: values[k] for k in "ABCDE"}, {"A": "env", "B": "2", "C": "3", "D": "4", "E": "env2"})
        self.assertEqual(files, [".env-app", ".env-app.local", ".env-app.dev", ".env-app.dev.local"])
        write(os.path.join(app, ".env-app.local.php"),
              "<?php\n\nreturn array (\n  'ORO_ENV' => 'prod',\n  'ORO_SECRET' => 'it\\'s',\n);\n")
        values, files = load_app_env(app, {})
        self.assertEqual((values["ORO_SECRET"], files), ("it's", [".env-app.local.php"]))


class PureParsingTests(unittest.TestCase):
    def test_dotenv(self):
        text = ('# comment\nexport A=1\nB="x $A \\$A\\n"\nC=\'lit $A\'\nD=${A}/2 # note\n'
                'E=${NONE:-dflt}\nF="two\nlines"\nG=\nH=a#b\n')
        self.assertEqual(parse_dotenv(text), {"A": "1", "B": "x 1 $A\n", "C": "lit $A", "D": "1/2",
                                              "E": "dflt", "F": "two\nlines", "G": "", "H": "a#b"})
        self.assertRaises(ValueError, parse_dotenv, "no equals sign\n")
        self.assertRaises(ValueError, parse_dotenv, 'A="never closed\n')
        self.assertEqual(parse_dumped_env("return array('X' => true, 'N' => 8080);"), {"X": "1", "N": "8080"})

    def test_websocket_dsns(self):
        self.assertEqual(ac.parse_websocket_dsn("//0.0.0.0:8080"), ("", "0.0.0.0", 8080, ""))
        self.assertEqual(ac.parse_websocket_dsn("//*:8080/ws"), ("", "*", 8080, "/ws"))
        self.assertEqual(ac.parse_websocket_dsn("tcp://127.0.0.1:8080"), ("tcp", "127.0.0.1", 8080, ""))
        self.assertEqual(ac.parse_websocket_dsn("ssl://[::1]:8443/ws"), ("ssl", "::1", 8443, "/ws"))
        self.assertEqual(ac.parse_websocket_dsn("//shop.example.com/ws"), ("", "shop.example.com", None, "/ws"))
        self.assertEqual(ac.parse_websocket_dsn("ssl://*:443/ws?context_options[verify_peer]=false"),
                         ("ssl", "*", 443, "/ws"))
        self.assertRaises(ValueError, ac.listen_endpoint, ac.parse_websocket_dsn("//host"))
        for bad in ("0.0.0.0:8080", "//:8080", "//host:0", "//host:x"):
            self.assertRaises(ValueError, ac.parse_websocket_dsn, bad)
        self.assertEqual(ac.listen_endpoint(ac.parse_websocket_dsn("//*:8080")),
                         "tcp:8080:interface=0.0.0.0:backlog=4096")
        self.assertEqual(ac.listen_endpoint(ac.parse_websocket_dsn("//[::]:8080")),
                         "tcp:8080:interface=\\:\\::backlog=4096")

    def test_database_dsns(self):
        self.assertEqual(ac.database_url("postgres://u:p%2F@h:5432/db?sslmode=require&serverVersion=13"),
                         ("postgresql://u:p%2F@h:5432/db?sslmode=require", ["serverVersion"]))
        self.assertEqual(ac.database_url("pdo-mysql://u@h/db"), ("mysql://u@h/db", []))
        self.assertRaises(ValueError, ac.database_url, "sqlite:///x.db")

    def test_config_text(self):
        self.assertEqual(decode_config_text("https://a.example/ "), "https://a.example/")
        self.assertEqual(decode_config_text('s:17:"https://b.example";'), "https://b.example")
        self.assertIsNone(decode_config_text("  "))
        self.assertIsNone(decode_config_text(None))

    def test_no_such_directory(self):
        self.assertRaises(ConfigError, gather, os.path.abspath(self.mktemp()), {})
