"""``twistd oro-sync --workers 2 --broker redis://...``: real processes on one
port, meeting in a test-started redis-server."""

from __future__ import annotations

import os
import re
import signal

import yaml
from twisted.internet import defer, error, task
from twisted.trial import unittest

from oro_sync.config import DEFAULT_CONFIG
from tests.support.client import connect
from tests.support.redis_server import redis_server
from tests.test_plugin import PROCESS_TIMEOUT, TWISTD, ProcessTestCase

TOPIC = "oro/maintenance"
CHANNEL = "oro-sync:topic:" + TOPIC
STARTED = r"worker %d started \(pid (\d+)\)"


def listening(n: int) -> re.Pattern:
    return re.compile(rb"(?s)" + rb".*?".join([rb"oro-sync listening on 127\.0\.0\.1:(\d+)"] * n))


class WorkerTests(ProcessTestCase):
    timeout = 90

    def open_config(self) -> str:
        """The shipped configuration without its auth section: an open hub
        (no tickets, anyone publishes), routing paths made absolute."""
        with open(DEFAULT_CONFIG) as f:
            data = yaml.safe_load(f)
        data.pop("auth", None)
        base = os.path.dirname(DEFAULT_CONFIG)
        routing = data.get("routing") or []
        data["routing"] = [os.path.join(base, p) for p in ([routing] if isinstance(routing, str) else routing)]
        path = os.path.join(self.workdir, "open.yml")
        with open(path, "w") as f:
            yaml.safe_dump(data, f)
        return path

    @defer.inlineCallbacks
    def numsub(self, redis, want: int, server):
        """Wait (bounded) until ``want`` nodes subscribe in Redis to TOPIC: the
        workers' SUBSCRIBEs travel on their own connections."""
        for _ in range(200):
            if redis.command("PUBSUB", "NUMSUB", CHANNEL) == [CHANNEL, str(want)]:
                return
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        self.fail(f"never {want} subscribed nodes: {redis.command('PUBSUB', 'NUMSUB', CHANNEL)}"
                  f"{server.report()}")

    @defer.inlineCallbacks
    def subscriber(self, port):
        c = yield connect(port)
        self.addCleanup(c.abort)
        c.subscribe(TOPIC)
        call_id = c.call("urn:oro-sync-test:round-trip")
        msg = yield c.next_message()
        self.assertEqual(msg[:2], [4, call_id])
        return c

    @defer.inlineCallbacks
    def test_workers_share_a_port_restart_and_stop_with_1001(self):
        redis = redis_server(self)
        server = self.spawn([TWISTD, "-n", "--pidfile=", "oro-sync", "--config", self.open_config(),
                             "--listen", "tcp:0:interface=127.0.0.1", "--workers", "2",
                             "--admin", "tcp:0:interface=127.0.0.1",
                             "--broker", redis.url()])
        match = yield server.wait_for(listening(2), PROCESS_TIMEOUT * 2)
        port = int(match.group(1))
        # The kernel spreads connections over the workers; keep connecting
        # until both have a subscriber (bounded: 24 clients all landing on
        # one worker has a probability of 2^-23).
        clients = []
        for _ in range(24):
            clients.append((yield self.subscriber(port)))
            if len(clients) >= 2 and redis.command("PUBSUB", "NUMSUB", CHANNEL) == [CHANNEL, "2"]:
                break
        yield self.numsub(redis, 2, server)
        clients[0].publish(TOPIC, "across workers")
        for c in clients:
            msg = yield c.next_message()
            self.assertEqual(msg, [8, TOPIC, "across workers"], server.report())

        # Kill worker 0: it is logged and comes back.
        pid = int((yield server.wait_for(re.compile((STARTED % 0).encode()))).group(1))
        os.kill(pid, signal.SIGKILL)
        yield server.wait_for(re.compile(rb"worker 0 \(pid %d\) died \(signal 9\)" % pid))
        restarted = re.compile(rb"worker 0 started \(pid (?!%d\))(\d+)\)" % pid)
        new_pid = int((yield server.wait_for(restarted)).group(1))
        self.assertNotEqual(new_pid, pid)
        yield server.wait_for(listening(3), PROCESS_TIMEOUT * 2)
        alive = [c for c in clients if c.close_info is None]
        self.assertTrue(alive, "the clients of worker 1 should have stayed")
        newcomer = yield self.subscriber(port)
        newcomer.publish(TOPIC, "after the restart")
        for c in alive + [newcomer]:
            msg = yield c.next_message()
            self.assertEqual(msg, [8, TOPIC, "after the restart"], server.report())

        # SIGHUP to the parent (systemctl reload) reaches every worker, each
        # reloads in place; nobody is disconnected and the parent stays.
        server.signal("HUP")
        yield server.wait_for(re.compile(rb"SIGHUP: reloading 2 workers"))
        yield server.wait_for(re.compile(rb"(?s)reloaded .*?reloaded "), PROCESS_TIMEOUT)
        newcomer.publish(TOPIC, "after the reload")
        for c in alive + [newcomer]:
            msg = yield c.next_message()
            self.assertEqual(msg, [8, TOPIC, "after the reload"], server.report())

        # SIGTERM to the parent reaches every worker; each says 1001.
        server.signal("TERM")
        for c in alive + [newcomer]:
            was_clean, code, reason = yield self.wait_closed(server, c, "client")
            self.assertEqual(code, 1001, server.report())
        yield server.wait_ended()
        # The parent and both workers (the restarted one included) shut down
        # completely; twistd ends by re-raising SIGTERM (see test_plugin).
        self.assertEqual(server.text().count("Server Shut Down."), 3, server.report())
        value = server.reason.value
        self.assertTrue(isinstance(value, error.ProcessDone) or (
            isinstance(value, error.ProcessTerminated) and value.exitCode is None
            and value.signal == signal.SIGTERM), server.report())
        self.assertNoTraceback(server)

    def wait_closed(self, server, client, who):
        from tests.test_plugin import ServerProcessTests
        return ServerProcessTests.wait_closed(self, server, client, who)

    @defer.inlineCallbacks
    def test_workers_without_a_broker_are_refused(self):
        child = yield self.run_to_end([TWISTD, "-n", "--pidfile=", "oro-sync", "--admin", "none", "--workers", "2"])
        self.assertNotEqual(self.exit_status(child), 0, child.report())
        self.assertIn("--workers needs a broker", child.text(), child.report())
        self.assertNoTraceback(child)


class WorkerAdminTests(unittest.TestCase):
    """Each worker gets an admin listener of its own (a shared port would
    answer /health and /metrics for a random worker)."""

    def test_ports_follow_the_worker_index(self):
        from oro_sync.workers import worker_admin

        self.assertEqual(worker_admin("tcp:9101:interface=127.0.0.1", 0), "tcp:9101:interface=127.0.0.1")
        self.assertEqual(worker_admin("tcp:9101:interface=127.0.0.1", 2), "tcp:9103:interface=127.0.0.1")
        self.assertEqual(worker_admin("tcp:port=9101", 1), "tcp:9102")
        self.assertEqual(worker_admin("tcp:0:interface=127.0.0.1", 3), "tcp:0:interface=127.0.0.1")
        self.assertEqual(worker_admin("none", 1), "none")
        self.assertEqual(worker_admin("unix:/run/oro-sync-admin.sock", 0), "unix:/run/oro-sync-admin.sock")
        self.assertEqual(worker_admin("unix:/run/oro-sync-admin.sock", 1), "none")

    def test_worker_command_lines_carry_admin_and_log_format(self):
        from oro_sync.tap import Options
        from oro_sync.workers import worker_argv

        options = Options()
        options.parseOptions(["--broker", "redis://127.0.0.1:1/0", "--workers", "2",
                              "--log-format", "json"])
        argv = worker_argv(options)
        first, second = argv(0, "fd:3"), argv(1, "fd:3")
        self.assertIn("json", first[first.index("--log-format") + 1:][:1])
        # the configuration's admin endpoint (tcp:9101 on localhost), spread over the workers
        self.assertEqual(first[first.index("--admin") + 1], "tcp:9101:interface=127.0.0.1")
        self.assertEqual(second[second.index("--admin") + 1], "tcp:9102:interface=127.0.0.1")


class WorkerPushersTests(unittest.TestCase):
    def test_the_http_pusher_runs_in_worker_0_only(self):
        from oro_sync.pushers.http import HttpPusher
        from oro_sync.tap import pushers_of_this_process

        http = HttpPusher.__new__(HttpPusher)
        other = object()
        self.assertEqual(pushers_of_this_process([other, http], None), [other, http])
        self.assertEqual(pushers_of_this_process([other, http], 0), [other, http])
        self.assertEqual(pushers_of_this_process([other, http], 1), [other])


class ChildEndpointTests(unittest.TestCase):
    def test_ipv6_addresses_reach_the_workers_parseable(self):
        from twisted.internet import endpoints, reactor

        from oro_sync.workers import child_endpoint, tcp_address

        text = child_endpoint("::1", 4321, 50)
        self.assertEqual(endpoints.serverFromString(reactor, text)._interface, "::1")
        self.assertEqual(tcp_address(text, reactor)[:2], ("::1", 4321))
        self.assertEqual(child_endpoint("127.0.0.1", 4321, 50), "tcp:4321:interface=127.0.0.1:backlog=50")
