"""Routing files, route validation and URI matching."""

from __future__ import annotations

import os
import textwrap

from twisted.trial import unittest

from oro_sync.config import DEFAULT_CONFIG
from oro_sync.oro.routing import Router, RoutingError, compile_route, expand_paths, load_routing_file

SHIPPED_ROUTES = os.path.join(os.path.dirname(DEFAULT_CONFIG), "websocket_routing.yml")


def write(testcase: unittest.TestCase, text: str, name: str = "websocket_routing.yml") -> str:
    base = testcase.mktemp()
    path = os.path.join(base, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


def route(name: str, channel: str, requirements: dict | None = None, callback="h"):
    spec = {"channel": channel, "handler": {"callback": callback}}
    if requirements is not None:
        spec["requirements"] = requirements
    return compile_route(name, spec, "test.yml")


class ShippedRoutesTests(unittest.TestCase):
    """The nine routes of the Oro 3.1 platform, as shipped in etc/."""

    def setUp(self) -> None:
        self.router = Router.from_files([SHIPPED_ROUTES])

    def test_all_nine_routes(self) -> None:
        self.assertEqual(
            [r.name for r in self.router.routes],
            ["oro_sync.ping", "oro_sync.data_update", "oro_sync.maintenance", "oro_email.event",
             "oro_entity_config.attribute_import", "oro_imap.sync_fail",
             "oro_message_queue.message_queue_heartbeat", "oro_reminder.remind",
             "oro_user.outdated_user_page"])

    def test_channels_match_with_attributes(self) -> None:
        cases = {
            "oro/ping": ("oro_sync.ping", {}),
            "oro/data/update": ("oro_sync.data_update", {}),
            "oro/maintenance": ("oro_sync.maintenance", {}),
            "oro/email_event/12/3": ("oro_email.event", {"user_id": "12", "organization_id": "3"}),
            "oro/email_event/12/*": ("oro_email.event", {"user_id": "12", "organization_id": "*"}),
            "oro/attribute_import/1/77": ("oro_entity_config.attribute_import",
                                          {"user_id": "1", "config_model_id": "77"}),
            "oro/imap_sync_fail/*": ("oro_imap.sync_fail", {"user_id": "*"}),
            "oro/imap_sync_fail/all": ("oro_imap.sync_fail", {"user_id": "all"}),
            "oro/imap_sync_fail/5": ("oro_imap.sync_fail", {"user_id": "5"}),
            "oro/message_queue_heartbeat": ("oro_message_queue.message_queue_heartbeat", {}),
            "oro/reminder_remind/9": ("oro_reminder.remind", {"user_id": "9"}),
            "oro/outdated_user_page": ("oro_user.outdated_user_page", {}),
        }
        for uri, (name, attributes) in cases.items():
            request = self.router.match(uri)
            self.assertIsNotNone(request, uri)
            self.assertEqual((request.route_name, dict(request.attributes), request.matched),
                             (name, attributes, uri))
            self.assertEqual(request.getRouteName(), name)
            self.assertEqual(request.getAttributes(), request.attributes)

    def test_refused_segments(self) -> None:
        for uri in ["oro/email_event/12abc/3",   # Gos accepted this (start-anchored only)
                    "oro/email_event/*/3",       # user_id is not a wildcard
                    "oro/email_event/12",        # too few segments
                    "oro/email_event/12/3/4",    # too many
                    "oro/email_event//3",        # empty segment
                    "oro/reminder_remind/all",   # no wildcard here
                    "oro/attribute_import/1/x",
                    "oro/pinG", "/oro/ping", "oro/ping/", "other"]:
            self.assertIsNone(self.router.match(uri), uri)


class MatchingTests(unittest.TestCase):
    def test_pattern_is_fully_anchored(self) -> None:
        router = Router([route("r", "a/{role}", {"role": {"pattern": "admin|editor"}})])
        self.assertIsNotNone(router.match("a/editor"))
        self.assertIsNotNone(router.match("a/admin"))
        self.assertIsNone(router.match("a/editorial"))
        self.assertIsNone(router.match("a/xadmin"))

    def test_unconstrained_placeholder_matches_one_segment_and_is_captured(self) -> None:
        router = Router([route("r", "chat/{room}/{user}", {"user": {"pattern": r"\d+"}})])
        request = router.match("chat/lobby/7")
        self.assertEqual(dict(request.attributes), {"room": "lobby", "user": "7"})
        self.assertIsNone(router.match("chat//7"))
        self.assertIsNone(router.match("chat/a/b/7"))

    def test_first_match_wins_in_order(self) -> None:
        router = Router([route("specific", "t/{x}", {"x": {"pattern": r"\d+"}}),
                         route("generic", "t/{x}"),
                         route("literal", "t/1")])
        self.assertEqual(router.match("t/1").route_name, "specific")
        self.assertEqual(router.match("t/abc").route_name, "generic")

    def test_placeholder_first_routes_keep_their_order(self) -> None:
        router = Router([route("any", "{a}/b"), route("lit", "x/b")])
        self.assertEqual(router.match("x/b").route_name, "any")
        router = Router([route("lit", "x/b"), route("any", "{a}/b")])
        self.assertEqual(router.match("x/b").route_name, "lit")
        self.assertEqual(router.match("y/b").route_name, "any")

    def test_duplicate_name_overrides_in_place(self) -> None:
        router = Router([route("a", "one"), route("b", "two"), route("a", "three")])
        self.assertEqual([r.name for r in router.routes], ["a", "b"])
        self.assertIsNone(router.match("one"))
        self.assertEqual(router.match("three").route_name, "a")

    def test_several_callbacks(self) -> None:
        r = route("r", "x", callback=["first", "second"])
        self.assertEqual(r.callbacks, ("first", "second"))

    def test_hundreds_of_routes_stay_fast(self) -> None:
        routes = [route(f"r{i}", f"app{i}/{{user_id}}/events", {"user_id": {"pattern": r"\d+"}})
                  for i in range(500)]
        router = Router(routes)
        self.assertEqual(router.match("app499/3/events").route_name, "r499")
        # No timing here: the index makes a lookup consider only the routes
        # sharing the first segment, and repeated URIs come from the cache.
        candidates = router._index.get((3, "app250"))
        self.assertEqual(len(candidates), 1)
        self.assertIs(router.match("app499/3/events"), router.match("app499/3/events"))


class FileErrorsTests(unittest.TestCase):
    """Start-up errors name the file, the route and the problem."""

    def assertRoutingError(self, text: str, *fragments: str) -> None:
        path = write(self, text)
        with self.assertRaises(RoutingError) as ctx:
            load_routing_file(path)
        message = str(ctx.exception)
        self.assertIn(path, message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_unknown_key(self) -> None:
        self.assertRoutingError("""
            r1:
                channel: 'a'
                handler: {callback: 'h'}
                requirments: {}
            """, "'r1'", "unknown key", "requirments")

    def test_bad_regex(self) -> None:
        self.assertRoutingError("""
            r2:
                channel: 'a/{x}'
                handler: {callback: 'h'}
                requirements:
                    x: {pattern: '(\\d+'}
            """, "'r2'", "bad regular expression")

    def test_missing_callback(self) -> None:
        self.assertRoutingError("""
            r3:
                channel: 'a'
                handler: {args: []}
            """, "'r3'", "callback")

    def test_requirement_for_unknown_placeholder(self) -> None:
        self.assertRoutingError("""
            r4:
                channel: 'a/{x}'
                handler: {callback: 'h'}
                requirements:
                    y: {pattern: '\\d+'}
            """, "'r4'", "'y'")

    def test_bad_publishers_word(self) -> None:
        self.assertRoutingError("""
            r6:
                channel: 'a'
                handler: {callback: 'h'}
                publishers: somebody
            """, "'r6'", "'publishers' must be one of", "'somebody'")

    def test_invalid_yaml(self) -> None:
        self.assertRoutingError("r5: [unclosed", "invalid YAML")

    def test_missing_file(self) -> None:
        with self.assertRaises(RoutingError) as ctx:
            Router.from_files(["/nonexistent/websocket_routing.yml"])
        self.assertIn("/nonexistent/websocket_routing.yml", str(ctx.exception))

    def test_empty_file_has_no_routes(self) -> None:
        self.assertEqual(load_routing_file(write(self, "")), [])


class LoadingTests(unittest.TestCase):
    def test_publishers_aliases_are_normalized(self) -> None:
        # The rules' vocabulary: "everyone" is stored as the rule's name.
        routes = load_routing_file(write(self, """
            open:
                channel: 'a'
                handler: {callback: 'h'}
                publishers: everyone
            default:
                channel: 'b'
                handler: {callback: 'h'}
            """))
        self.assertEqual([r.publishers for r in routes], ["anyone", None])

    def test_globs_and_directories_in_order(self) -> None:
        base = self.mktemp()
        for bundle, channel in [("BBundle", "b"), ("ABundle", "a")]:
            path = os.path.join(base, "src", bundle, "Resources", "config", "oro", "websocket_routing.yml")
            os.makedirs(os.path.dirname(path))
            with open(path, "w") as f:
                f.write(f"{bundle}.route:\n    channel: '{channel}'\n    handler: {{callback: 'h'}}\n")
        pattern = os.path.join(base, "src", "*", "Resources", "config", "oro", "websocket_routing.yml")
        router = Router.from_files([pattern])
        self.assertEqual([r.name for r in router.routes], ["ABundle.route", "BBundle.route"])
        self.assertEqual(expand_paths([base]), expand_paths([pattern]))
        # Explicit files keep the order given.
        files = expand_paths([pattern])
        router = Router.from_files(list(reversed(files)))
        self.assertEqual([r.name for r in router.routes], ["BBundle.route", "ABundle.route"])
