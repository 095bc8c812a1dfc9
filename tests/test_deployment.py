"""The deployment files in etc/: the systemd unit and the nginx example.

The unit's ExecStart must be a command line ``twistd oro-sync`` accepts
(checked with the real option parser, with the shipped hardened config in
place of /etc/oro-sync/oro-sync.yml), and systemd itself must accept the
unit (``systemd-analyze verify``, on a copy pointing at this virtualenv's
twistd).  nginx is not installed here: its example is checked for what a
WebSocket proxy cannot work without.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

from twisted.trial import unittest

from oro_sync.tap import Options
from tests.support.ci import missing

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "oro_sync", "etc")
UNIT = os.path.join(ETC, "oro-sync.service")
NGINX = os.path.join(ETC, "nginx-oro-sync.conf")


def exec_start(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    line = next(line for line in joined.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


class SystemdUnitTests(unittest.TestCase):
    def test_exec_start_is_accepted_by_twistd_oro_sync(self):
        with open(UNIT, encoding="utf-8") as f:
            argv = exec_start(f.read())
        self.assertTrue(argv[0].endswith("/twistd"), argv)
        self.assertIn("--nodaemon", argv)
        plugin_args = argv[argv.index("oro-sync") + 1:]
        config = plugin_args.index("--config") + 1
        plugin_args[config] = os.path.join(ETC, "oro-sync.hardened.yml")
        options = Options()
        options.parseOptions(plugin_args)
        self.assertEqual(options.config.server.log_format, "json")
        self.assertTrue(options.config.auth["one_time_tickets"])

    def test_the_workers_command_line_is_accepted_and_spreads_admin_ports(self):
        from oro_sync.workers import worker_argv

        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        self.assertNotIn("does not exist", text)
        line = next(line for line in text.splitlines() if line.startswith("#ExecStart="))
        argv = shlex.split(line[len("#ExecStart="):])
        plugin_args = argv[argv.index("oro-sync") + 1:]
        plugin_args[plugin_args.index("--config") + 1] = os.path.join(ETC, "oro-sync.hardened.yml")
        options = Options()
        options.parseOptions(plugin_args)
        self.assertEqual(options["workers"], 4)
        workers = worker_argv(options)
        admins = [w[w.index("--admin") + 1] for w in (workers(i, "fd:3") for i in range(4))]
        self.assertEqual(admins, [f"tcp:{9101 + i}:interface=127.0.0.1" for i in range(4)])
        # The parent passes SIGTERM on: systemd must not also signal the workers.
        self.assertIn("KillMode=mixed", text)

    def test_reload_is_sighup_and_stop_is_sigterm(self):
        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("ExecReload=/bin/kill -HUP $MAINPID", text)
        self.assertIn("KillSignal=SIGTERM", text)

    def test_systemd_accepts_the_unit(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            missing("systemd-analyze is not installed")
        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        copy = os.path.join(os.path.abspath(self.mktemp()), "oro-sync.service")
        os.makedirs(os.path.dirname(copy))
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace("/opt/oro-sync/bin/twistd", twistd))
        result = subprocess.run([analyze, "verify", copy], capture_output=True, text=True, timeout=60)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if "oro-sync.service" in line]
        self.assertEqual(problems, [], result.stdout + result.stderr)


class NginxExampleTests(unittest.TestCase):
    def test_websocket_proxy_essentials(self):
        with open(NGINX, encoding="utf-8") as f:
            text = f.read()
        location = re.search(r"location /ws \{(.*?)\n    \}", text, re.S)
        self.assertIsNotNone(location, "no location /ws")
        body = location.group(1)
        for needed in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                       "proxy_set_header Connection $connection_upgrade;", "proxy_read_timeout 86400s;",
                       "proxy_pass http://oro_sync;"):
            self.assertIn(needed, body)
        self.assertIn("server 127.0.0.1:8080;", text)
        self.assertEqual(text.count("{"), text.count("}"))
