"""Permission rules: one vocabulary (nobody, backend, users, anyone, with the
old spellings backends/everyone), one check per rule, for PUBLISH and for
WAMP v2 REGISTER."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.trial import unittest

from oro_sync.auth import gate, rules
from oro_sync.auth.rules import (
    ANYONE, BACKEND, NOBODY, RULES, USERS, identity_allowed, normalize_rule,
    publish_permission, registration_permission,
)
from oro_sync.identity import Identity

NO_IDENTITY = None
BROWSER = Identity.anonymous_for("s1")
BACKEND_ID = Identity.anonymous_for("s2", backend=True)
USER = Identity.user(7, "jane")

#: rule -> who passes it, among (none, browser, backend, user).
EXPECTED = {
    NOBODY: (False, False, False, False),
    BACKEND: (False, False, True, False),
    USERS: (False, False, True, True),
    ANYONE: (True, True, True, True),
}


def who(rule: str) -> tuple[bool, ...]:
    return tuple(identity_allowed(rule, i) for i in (NO_IDENTITY, BROWSER, BACKEND_ID, USER))


class NormalizeTests(unittest.TestCase):
    def test_rule_names_are_themselves(self) -> None:
        for rule in RULES:
            self.assertEqual(normalize_rule(rule), rule)

    def test_old_spellings(self) -> None:
        self.assertEqual(normalize_rule("backends"), BACKEND)
        self.assertEqual(normalize_rule("everyone"), ANYONE)

    def test_unknown_word_names_setting_and_accepted_words(self) -> None:
        for bad in ("admins", "", "Users", None, 3):
            error = self.assertRaises(ValueError, normalize_rule, bad, "registrations")
            message = str(error)
            self.assertIn("registrations must be one of", message)
            for word in ("nobody", "backend", "users", "anyone", "backends", "everyone"):
                self.assertIn(word, message)
            self.assertIn(repr(bad), message)


class IdentityAllowedTests(unittest.TestCase):
    def test_each_rule(self) -> None:
        for rule, expected in EXPECTED.items():
            self.assertEqual(who(rule), expected, rule)

    def test_aliases_mean_the_same(self) -> None:
        self.assertEqual(who("backends"), EXPECTED[BACKEND])
        self.assertEqual(who("everyone"), EXPECTED[ANYONE])

    def test_unknown_rule(self) -> None:
        self.assertRaises(ValueError, identity_allowed, "all", USER)


class RegistrationPermissionTests(unittest.TestCase):
    def test_matches_the_old_wamp2_rules(self) -> None:
        """The words wamp2Registrations accepted keep their meaning."""
        old = {"nobody": NOBODY, "backends": BACKEND, "users": USERS, "everyone": ANYONE}
        for word, rule in old.items():
            may_register = registration_permission(word)
            self.assertEqual(tuple(may_register(i) for i in (NO_IDENTITY, BROWSER, BACKEND_ID, USER)),
                             EXPECTED[rule], word)

    def test_bad_rule_fails_when_built(self) -> None:
        error = self.assertRaises(ValueError, registration_permission, "admins")
        self.assertIn("registrations must be one of", str(error))


class PublishPermissionTests(unittest.TestCase):
    def allowed(self, may_publish: Any, publishers: str | None) -> tuple[bool, ...]:
        request = SimpleNamespace(route=SimpleNamespace(publishers=publishers))
        return tuple(may_publish(SimpleNamespace(identity=i), request)
                     for i in (NO_IDENTITY, BROWSER, BACKEND_ID, USER))

    def test_default_applies_where_the_route_says_nothing(self) -> None:
        self.assertEqual(self.allowed(publish_permission(), None), EXPECTED[BACKEND])
        self.assertEqual(self.allowed(publish_permission(USERS), None), EXPECTED[USERS])
        self.assertEqual(self.allowed(publish_permission("everyone"), ""), EXPECTED[ANYONE])

    def test_route_overrides_default(self) -> None:
        self.assertEqual(self.allowed(publish_permission(ANYONE), BACKEND), EXPECTED[BACKEND])
        self.assertEqual(self.allowed(publish_permission(BACKEND), USERS), EXPECTED[USERS])
        self.assertEqual(self.allowed(publish_permission(BACKEND), ANYONE), EXPECTED[ANYONE])
        self.assertEqual(self.allowed(publish_permission(BACKEND), "everyone"), EXPECTED[ANYONE])

    def test_backends_always_publish(self) -> None:
        for rule in (NOBODY, "backends", "no such rule"):
            self.assertEqual(self.allowed(publish_permission(ANYONE), rule), EXPECTED[BACKEND], rule)
        self.assertEqual(self.allowed(publish_permission(NOBODY), None), EXPECTED[BACKEND])

    def test_bad_default(self) -> None:
        error = self.assertRaises(ValueError, publish_permission, "admins")
        self.assertIn("publishers must be one of", str(error))


class GateReexportTests(unittest.TestCase):
    def test_names_still_importable_from_gate(self) -> None:
        self.assertIs(gate.publish_permission, rules.publish_permission)
        self.assertEqual((gate.BACKEND, gate.USERS, gate.ANYONE), ("backend", "users", "anyone"))
