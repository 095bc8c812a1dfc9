"""Oro sync tickets: PHP-made vectors, every single-field change, time rules,
issuing, one-time use, and the asynchronous verifier (process pool, cache,
in-flight dedup).  Time is always injected; nothing sleeps."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from oro_sync.auth.interfaces import IUserProvider, UserRecord
from oro_sync.auth.ticket_signing import (
    InvalidSecretError, compute_digest, issue_ticket, merge_password_and_salt,
)
from oro_sync.auth.tickets import (
    BAD_DIGEST, BAD_FORMAT, DEFAULT_TTL, EXPIRED, FUTURE, MAX_TICKET_CHARS,
    REPLAYED, UNKNOWN_USER, NonceStore, TicketError, VerifiedTicket,
    check_created, check_ticket, parse_created, parse_ticket,
)
from oro_sync.auth.digest_pool import IDigestPool, InlineDigestPool, ProcessDigestPool
from oro_sync.auth.verifier import TicketVerifier, VerifierService
from oro_sync.identity import Identity


def _vectors_path() -> Path:
    env = os.environ.get("ORO_TICKET_VECTORS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for base in [here.parent, *here.parents]:
        for candidate in (base / "shared" / "testdata" / "oro-tickets.json",
                          base / "testdata" / "oro-tickets.json"):
            if candidate.exists():
                return candidate
    return Path("/work/shared/testdata/oro-tickets.json")


VECTORS_FILE = _vectors_path()
VECTORS = (json.loads(VECTORS_FILE.read_text("utf-8"))["vectors"]
           if VECTORS_FILE.exists() else [])

SECRET = "ThisTokenIsNotSoSecretChangeIt"
ADMIN = UserRecord(id=1, username="admin", password="$2y$13$adminhash",
                   email="admin@example.com", roles=("ROLE_ADMINISTRATOR",),
                   organization_id=1)
OTHER = UserRecord(id=2, username="other", password="$2y$13$otherhash",
                   email="other@example.com")
DISABLED = UserRecord(id=3, username="gone", password="$2y$13$gonehash", enabled=False)
T0 = 1_800_000_000.0  # an arbitrary "now"


def encode(digest: str, username: str, nonce: str, created: str) -> str:
    text = f"{digest};{username};{nonce};{created}"
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def stamp(created: str) -> float:
    value = parse_created(created)
    assert value is not None
    return value


def vector_user(vector: dict, user_id: int = 10) -> UserRecord | None:
    if not vector["username"]:
        return None
    return UserRecord(id=user_id, username=vector["username"], password=vector["password_hash"])


class Lookup:
    """A synchronous user lookup for check_ticket (username, then email)."""

    def __init__(self, *users: UserRecord | None) -> None:
        self.users = [u for u in users if u is not None]
        self.calls: list[str] = []

    def __call__(self, name: str) -> UserRecord | None:
        self.calls.append(name)
        for user in self.users:
            if user.username == name:
                return user
        for user in self.users:
            if user.email == name:
                return user
        return None


@implementer(IUserProvider)
class MemoryUsers:
    """In-memory IUserProvider test double.

    Deliberately returns disabled users too, so the verifier's own check is
    exercised; ``gate`` (a Deferred) delays answers when set."""

    def __init__(self, *users: UserRecord | None) -> None:
        self._lookup = Lookup(*users)
        self.gate: Deferred | None = None
        self.error: Exception | None = None

    @property
    def lookups(self) -> int:
        return len(self._lookup.calls)

    def findUser(self, username_or_email: str) -> Deferred:
        if self.error is not None:
            self._lookup.calls.append(username_or_email)
            return defer.fail(self.error)
        user = self._lookup(username_or_email)
        if self.gate is not None:
            d = Deferred()
            self.gate.addCallback(lambda _: d.callback(user))
            return d
        return succeed(user)


@implementer(IDigestPool)
class CountingPool:
    """Wraps a pool and counts digest computations."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self.threads: list[str] = []

    def compute(self, nonce, created, password, secret) -> Deferred:
        self.calls += 1
        d = self.inner.compute(nonce, created, password, secret)

        def note(result):
            self.threads.append(threading.current_thread().name)
            return result

        return d.addCallback(note)

    def shutdown(self) -> Deferred:
        return self.inner.shutdown()


@implementer(IDigestPool)
class ManualPool:
    """Computes digests inline but fires only when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred, str]] = []

    def compute(self, nonce, created, password, secret) -> Deferred:
        d = Deferred()
        self.pending.append((d, compute_digest(nonce, created, password, secret)))
        return d

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d, digest in pending:
            d.callback(digest)

    def shutdown(self) -> Deferred:
        return succeed(None)


class VectorTests(unittest.TestCase):
    """The PHP-made vectors, and each of their fields changed in turn."""

    def setUp(self) -> None:
        if not VECTORS:
            raise unittest.SkipTest(f"no test vectors at {VECTORS_FILE}")

    def check(self, vector: dict, ticket: str | None = None, *, secret: str | None = None,
              users: Lookup | None = None, now: float | None = None) -> VerifiedTicket:
        return check_ticket(
            vector["ticket"] if ticket is None else ticket,
            vector["secret"] if secret is None else secret,
            users if users is not None else Lookup(vector_user(vector)),
            now=stamp(vector["created"]) + 5 if now is None else now)

    def assertReason(self, reason: str, fn, *args, **kwargs) -> TicketError:
        error = self.assertRaises(TicketError, fn, *args, **kwargs)
        self.assertEqual(error.reason, reason, str(error))
        return error

    def test_vector_count(self) -> None:
        self.assertGreaterEqual(len(VECTORS), 3)
        self.assertTrue(any(v["username"] == "" for v in VECTORS))
        self.assertTrue(any(not v["username"].isascii() for v in VECTORS))

    def test_digests(self) -> None:
        for vector in VECTORS:
            password = vector["password_hash"] if vector["username"] else vector["secret"]
            self.assertEqual(
                compute_digest(vector["nonce"], vector["created"], password, vector["secret"]),
                vector["digest"], vector["name"])

    def test_parse(self) -> None:
        for vector in VECTORS:
            parsed = parse_ticket(vector["ticket"])
            self.assertEqual(
                (parsed.digest, parsed.username, parsed.nonce, parsed.created),
                (vector["digest"], vector["username"], vector["nonce"], vector["created"]))

    def test_vectors_verify(self) -> None:
        for vector in VECTORS:
            created = stamp(vector["created"])
            for now in (created, created + 1, created + DEFAULT_TTL):
                result = self.check(vector, now=now)
                self.assertEqual(result.username, vector["username"], vector["name"])
                self.assertEqual(result.backend, vector["username"] == "")
                self.assertEqual(result.nonce, vector["nonce"])
                self.assertEqual(result.created, vector["created"])

    def test_issue_reproduces_vectors(self) -> None:
        """issue_ticket with the vector's inputs yields PHP's ticket byte for byte."""
        for vector in VECTORS:
            ticket = issue_ticket(
                vector["secret"], vector["username"], vector["password_hash"],
                now=datetime.fromisoformat(vector["created"]), nonce=vector["nonce"])
            self.assertEqual(ticket, vector["ticket"], vector["name"])

    def test_mutated_digest(self) -> None:
        for vector in VECTORS:
            digest = vector["digest"]
            for i in (0, 40, 85):
                changed = digest[:i] + ("A" if digest[i] != "A" else "B") + digest[i + 1:]
                ticket = encode(changed, vector["username"], vector["nonce"], vector["created"])
                self.assertReason(BAD_DIGEST, self.check, vector, ticket)
            # Truncated and empty digests too.
            for changed in (digest[:-2], ""):
                ticket = encode(changed, vector["username"], vector["nonce"], vector["created"])
                self.assertReason(BAD_DIGEST, self.check, vector, ticket)

    def test_mutated_username(self) -> None:
        for vector in VECTORS:
            original = vector_user(vector)
            name = vector["username"]
            # A name nobody has.
            ticket = encode(vector["digest"], (name or "x") + "x", vector["nonce"], vector["created"])
            self.assertReason(UNKNOWN_USER, self.check, vector, ticket,
                              users=Lookup(original, OTHER))
            # An existing user (whose hash differs).
            ticket = encode(vector["digest"], "other", vector["nonce"], vector["created"])
            self.assertReason(BAD_DIGEST, self.check, vector, ticket,
                              users=Lookup(original, OTHER))
            if name:
                # A user ticket presented as anonymous: keyed by the secret instead.
                ticket = encode(vector["digest"], "", vector["nonce"], vector["created"])
                self.assertReason(BAD_DIGEST, self.check, vector, ticket)
                # Case changed: a different (unknown) username.
                ticket = encode(vector["digest"], name.upper(), vector["nonce"], vector["created"])
                self.assertReason(UNKNOWN_USER, self.check, vector, ticket)

    def test_mutated_nonce(self) -> None:
        for vector in VECTORS:
            nonce = vector["nonce"]
            for changed in (nonce[:-1] + ("1" if nonce[-1] != "1" else "2"), nonce + "0", ""):
                ticket = encode(vector["digest"], vector["username"], changed, vector["created"])
                self.assertReason(BAD_DIGEST, self.check, vector, ticket)

    def test_mutated_created(self) -> None:
        for vector in VECTORS:
            created = vector["created"]
            when = datetime.fromisoformat(created)
            now = stamp(created) + 30
            changes = [
                (when + timedelta(seconds=1)).isoformat(),  # another instant
                when.astimezone(timezone(timedelta(hours=1))).isoformat(),  # same instant, other text
                created.replace("T", " "),  # same instant, other spelling
            ]
            for changed in changes:
                self.assertEqual(len({changed, created}), 2)
                ticket = encode(vector["digest"], vector["username"], vector["nonce"], changed)
                self.assertReason(BAD_DIGEST, self.check, vector, ticket, now=now)
            # Moved out of the window: the date rules win over the digest.
            later = (when + timedelta(seconds=60)).isoformat()
            ticket = encode(vector["digest"], vector["username"], vector["nonce"], later)
            self.assertReason(FUTURE, self.check, vector, ticket, now=now)
            earlier = (when - timedelta(seconds=DEFAULT_TTL)).isoformat()
            ticket = encode(vector["digest"], vector["username"], vector["nonce"], earlier)
            self.assertReason(EXPIRED, self.check, vector, ticket, now=now)
            ticket = encode(vector["digest"], vector["username"], vector["nonce"], "garbage")
            self.assertReason(EXPIRED, self.check, vector, ticket, now=now)

    def test_mutated_secret(self) -> None:
        for vector in VECTORS:
            secret = vector["secret"]
            for changed in (secret + "x", secret[:-1], secret.upper() if secret != secret.upper()
                            else secret.lower()):
                self.assertReason(BAD_DIGEST, self.check, vector, secret=changed)

    def test_mutated_password_hash(self) -> None:
        for vector in VECTORS:
            user = vector_user(vector)
            if user is None:
                # An anonymous ticket's password is the secret (see test_mutated_secret);
                # a user's hash never matters for it.
                self.check(vector, users=Lookup(ADMIN))
                continue
            for changed in (user.password + "x", user.password[:-1], ""):
                other = UserRecord(id=user.id, username=user.username, password=changed)
                self.assertReason(BAD_DIGEST, self.check, vector, users=Lookup(other))


class FormatTests(unittest.TestCase):
    """Decoding and the ``;`` split."""

    def assertBadFormat(self, ticket) -> None:
        error = self.assertRaises(TicketError, parse_ticket, ticket)
        self.assertEqual(error.reason, BAD_FORMAT)

    def test_bad_base64(self) -> None:
        for ticket in ("not base64!", "@@@@", "YWJj*ZGVm", "a", "=abc", "", "   "):
            self.assertBadFormat(ticket)

    def test_not_utf8(self) -> None:
        self.assertBadFormat(base64.b64encode(b"d;\xff\xfe;n;c").decode())
        self.assertBadFormat("tïcket".encode("latin-1"))

    def test_fewer_than_three_semicolons(self) -> None:
        for text in ("", "a", "a;b", "a;b;c", ";;"):
            self.assertBadFormat(base64.b64encode(text.encode()).decode())

    def test_too_long(self) -> None:
        self.assertBadFormat("A" * (MAX_TICKET_CHARS + 4))

    def test_not_a_string(self) -> None:
        self.assertBadFormat(12345)

    def test_exactly_three_semicolons_minimum(self) -> None:
        parsed = parse_ticket(base64.b64encode(b";;;").decode())
        self.assertEqual((parsed.digest, parsed.username, parsed.nonce, parsed.created),
                         ("", "", "", ""))

    def test_username_may_contain_semicolons_and_unicode(self) -> None:
        name = "we;ird;näme ✓"
        parsed = parse_ticket(encode("DIGEST", name, "0123456789abcdef", "2026-01-01T00:00:00+00:00"))
        self.assertEqual(parsed.digest, "DIGEST")
        self.assertEqual(parsed.username, name)
        self.assertEqual(parsed.nonce, "0123456789abcdef")
        self.assertEqual(parsed.created, "2026-01-01T00:00:00+00:00")

    def test_padding_whitespace_and_bytes(self) -> None:
        ticket = encode("D", "u", "n", "c")
        stripped = ticket.rstrip("=")
        self.assertNotEqual(stripped, ticket)
        for variant in (stripped, f"  {ticket}\n", ticket.encode("ascii")):
            self.assertEqual(parse_ticket(variant), parse_ticket(ticket))
        self.assertEqual(parse_ticket(stripped).key, "D;u;n;c")


class TimeTests(unittest.TestCase):
    """The date rules, in Oro's order, with an injected ``now``."""

    def ticket(self, created: str, secret: str = SECRET) -> str:
        return issue_ticket(secret, now=datetime.fromisoformat(created))

    def assertReason(self, reason: str, ticket: str, now: float, **kwargs) -> None:
        error = self.assertRaises(TicketError, check_ticket, ticket, SECRET, Lookup(), now=now,
                                  **kwargs)
        self.assertEqual(error.reason, reason)

    def test_future(self) -> None:
        created = "2027-01-15T08:00:00+00:00"
        ticket = self.ticket(created)
        self.assertReason(FUTURE, ticket, stamp(created) - 1)
        self.assertReason(FUTURE, ticket, stamp(created) - 3600)
        check_ticket(ticket, SECRET, Lookup(), now=stamp(created))
        # Sub-second: PHP compares whole seconds.
        check_ticket(ticket, SECRET, Lookup(), now=stamp(created) + 0.999)

    def test_leeway_for_clock_skew(self) -> None:
        created = "2027-01-15T08:00:00+01:00"
        ticket = self.ticket(created)
        check_ticket(ticket, SECRET, Lookup(), now=stamp(created) - 2, leeway=2)
        self.assertReason(FUTURE, ticket, stamp(created) - 3, leeway=2)

    def test_expired(self) -> None:
        created = "2027-01-15T08:00:00-03:30"
        ticket = self.ticket(created)
        check_ticket(ticket, SECRET, Lookup(), now=stamp(created) + DEFAULT_TTL)
        check_ticket(ticket, SECRET, Lookup(), now=stamp(created) + DEFAULT_TTL + 0.5)
        self.assertReason(EXPIRED, ticket, stamp(created) + DEFAULT_TTL + 1)
        self.assertReason(EXPIRED, ticket, stamp(created) + 86400)
        # A custom TTL.
        check_ticket(ticket, SECRET, Lookup(), now=stamp(created) + 10, ttl=10)
        self.assertReason(EXPIRED, ticket, stamp(created) + 11, ttl=10)

    def test_expiry_instant(self) -> None:
        created = "2027-01-15T08:00:00+00:00"
        self.assertEqual(check_created(created, stamp(created), ttl=300), stamp(created) + 301)

    def test_unparseable_date_is_expired(self) -> None:
        for created in ("", "garbage", "now", "2027-13-45T99:00:00+00:00", "1800000000",
                        "2027-01-15T08:00:00",  # no offset: cannot be placed in time
                        "2027-01-15"):
            digest = compute_digest("0123456789abcdef", created, SECRET, SECRET)
            ticket = encode(digest, "", "0123456789abcdef", created)
            self.assertReason(EXPIRED, ticket, T0)

    def test_date_checked_before_user(self) -> None:
        """Oro checks the date before looking the user up."""
        lookup = Lookup(ADMIN)
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0 + 100)
        error = self.assertRaises(TicketError, check_ticket, ticket, SECRET, lookup, now=T0)
        self.assertEqual(error.reason, FUTURE)
        self.assertEqual(lookup.calls, [])


class UserTests(unittest.TestCase):
    def test_unknown_user(self) -> None:
        ticket = issue_ticket(SECRET, "nobody", "$2y$13$x", now=T0)
        error = self.assertRaises(TicketError, check_ticket, ticket, SECRET, Lookup(ADMIN), now=T0)
        self.assertEqual(error.reason, UNKNOWN_USER)

    def test_disabled_user_is_unknown(self) -> None:
        ticket = issue_ticket(SECRET, "gone", DISABLED.password, now=T0)
        error = self.assertRaises(TicketError, check_ticket, ticket, SECRET, Lookup(DISABLED),
                                  now=T0)
        self.assertEqual(error.reason, UNKNOWN_USER)

    def test_user_by_email(self) -> None:
        """The ticket may name the user by email; the identity uses the username."""
        ticket = issue_ticket(SECRET, "admin@example.com", ADMIN.password, now=T0)
        result = check_ticket(ticket, SECRET, Lookup(ADMIN), now=T0)
        self.assertEqual(result.username, "admin")
        self.assertIs(result.user, ADMIN)

    def test_identity(self) -> None:
        user = check_ticket(issue_ticket(SECRET, "admin", ADMIN.password, now=T0), SECRET,
                            Lookup(ADMIN), now=T0)
        self.assertEqual(user.identity("s1"), Identity(
            username="admin", user_id=1, anonymous=False, backend=False,
            email="admin@example.com", roles=("ROLE_ADMINISTRATOR",), organization_id=1))
        anonymous = check_ticket(issue_ticket(SECRET, now=T0), SECRET, Lookup(), now=T0)
        self.assertTrue(anonymous.anonymous)
        self.assertEqual(anonymous.identity("abc"), Identity.anonymous_for("abc", backend=True))
        self.assertEqual(anonymous.identity("abc").username, "anonymous-abc")


class IssueTests(unittest.TestCase):
    def test_round_trip_anonymous(self) -> None:
        ticket = issue_ticket(SECRET, now=T0)
        result = check_ticket(ticket, SECRET, Lookup(), now=T0 + 1)
        self.assertTrue(result.backend)
        self.assertEqual(result.username, "")

    def test_round_trip_user_unicode(self) -> None:
        user = UserRecord(id=7, username="zoë;ü", password="pässwörd-hash")
        ticket = issue_ticket(SECRET, user.username, user.password, now=T0)
        result = check_ticket(ticket, SECRET, Lookup(user), now=T0 + 299)
        self.assertEqual(result.user, user)

    def test_format(self) -> None:
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=1548749985)
        parsed = parse_ticket(ticket)
        self.assertRegex(parsed.nonce, r"^[0-9a-f]{16}$")
        self.assertEqual(parsed.created, "2019-01-29T08:19:45+00:00")
        self.assertEqual(len(parsed.digest), 88)
        offset = issue_ticket(SECRET, now=datetime(2019, 1, 29, 10, 19, 45, 123456,
                                                    tzinfo=timezone(timedelta(hours=2))))
        self.assertEqual(parse_ticket(offset).created, "2019-01-29T10:19:45+02:00")
        self.assertTrue(re.fullmatch(r"[A-Za-z0-9+/]+=*", ticket))

    def test_nonces_are_random(self) -> None:
        nonces = {parse_ticket(issue_ticket(SECRET, now=T0)).nonce for _ in range(20)}
        self.assertEqual(len(nonces), 20)

    def test_default_now_is_current_time(self) -> None:
        import time

        check_ticket(issue_ticket(SECRET), SECRET, Lookup(), now=time.time() + 1)

    def test_arguments_checked(self) -> None:
        self.assertRaises(ValueError, issue_ticket, SECRET, "admin")  # no hash
        self.assertRaises(ValueError, issue_ticket, SECRET, "", "hash")  # hash without user
        self.assertRaises(ValueError, issue_ticket, SECRET, now=datetime(2020, 1, 1))  # naive
        self.assertRaises(ValueError, issue_ticket, SECRET, nonce="a;b")
        self.assertRaises(ValueError, issue_ticket, SECRET, "u", "x" * 5000)

    def test_invalid_secrets(self) -> None:
        for secret in ("with{brace", "with}brace", ""):
            self.assertRaises(InvalidSecretError, issue_ticket, secret)
            self.assertRaises(InvalidSecretError, TicketVerifier, secret, MemoryUsers(),
                              pool=InlineDigestPool())
        self.assertRaises(InvalidSecretError, compute_digest, "n", "c", "p", "a{b}")

    def test_symfony_salt_merge(self) -> None:
        self.assertEqual(merge_password_and_salt("pw", "salt"), "pw{salt}")
        # PHP empty(): "" and "0" mean "no salt".
        self.assertEqual(merge_password_and_salt("pw", ""), "pw")
        self.assertEqual(merge_password_and_salt("pw", "0"), "pw")
        self.assertEqual(merge_password_and_salt("pw", "00"), "pw{00}")

    def test_oversized_password_refused_cheaply(self) -> None:
        """Symfony refuses raw passwords over 4096 bytes; a huge nonce must
        not buy 5000 rounds over megabytes."""
        nonce = "n" * 5000
        ticket = encode("x", "", nonce, "2027-01-15T08:00:00+00:00")
        error = self.assertRaises(TicketError, check_ticket, ticket, SECRET, Lookup(),
                                  now=stamp("2027-01-15T08:00:00+00:00"))
        self.assertEqual(error.reason, BAD_DIGEST)


class NonceStoreTests(unittest.TestCase):
    def test_refuses_replay_until_expiry(self) -> None:
        store = NonceStore()
        store.consume("a", expires_at=T0 + 10, now=T0)
        error = self.assertRaises(TicketError, store.consume, "a", T0 + 10, T0 + 9.9)
        self.assertEqual(error.reason, REPLAYED)
        store.consume("b", expires_at=T0 + 20, now=T0 + 1)
        self.assertEqual(len(store), 2)
        # At expiry "a" is pruned (the ticket would be refused as expired anyway).
        store.consume("a", expires_at=T0 + 30, now=T0 + 10)
        self.assertEqual(len(store), 2)

    def test_prunes(self) -> None:
        store = NonceStore()
        for i in range(100):
            store.consume(str(i), expires_at=T0 + i, now=T0 - 1)
        self.assertEqual(len(store), 100)
        self.assertEqual(store.prune(T0 + 49.5), 50)
        self.assertEqual(len(store), 50)
        self.assertNotIn("0", store)
        self.assertIn("99", store)
        store.consume("new", expires_at=T0 + 1000, now=T0 + 200)
        self.assertEqual(len(store), 1)
        self.assertEqual(len(store._used._heap), 1)

    def test_bounded(self) -> None:
        store = NonceStore(max_entries=3)
        for i in range(5):
            store.consume(str(i), expires_at=T0 + 100 + i, now=T0)
        self.assertEqual(len(store), 3)
        self.assertEqual({k for k in "01234" if k in store}, {"2", "3", "4"})
        self.assertRaises(ValueError, NonceStore, 0)

    def test_check_ticket_one_time(self) -> None:
        store = NonceStore()
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        check_ticket(ticket, SECRET, Lookup(ADMIN), now=T0, nonce_store=store)
        error = self.assertRaises(TicketError, check_ticket, ticket, SECRET, Lookup(ADMIN),
                                  now=T0 + 1, nonce_store=store)
        self.assertEqual(error.reason, REPLAYED)
        # Another user's ticket with the same nonce is a different ticket.
        other = issue_ticket(SECRET, "other", OTHER.password, now=T0, nonce=parse_ticket(ticket).nonce)
        check_ticket(other, SECRET, Lookup(OTHER), now=T0, nonce_store=store)
        # A refused ticket does not burn its nonce.
        bad = encode("x" * 88, "", "feedfacefeedface", datetime.fromtimestamp(T0, timezone.utc).isoformat())
        self.assertRaises(TicketError, check_ticket, bad, SECRET, Lookup(), now=T0, nonce_store=store)
        self.assertNotIn("\x00feedfacefeedface", store)


class VerifierTests(unittest.TestCase):
    """TicketVerifier with an injected clock and a controllable or inline pool."""

    def make(self, *users, pool=None, one_time=False, now=T0, **kwargs):
        self.clock = task.Clock()
        self.clock.advance(now)
        self.users = MemoryUsers(*users)
        self.pool = CountingPool(pool if pool is not None else InlineDigestPool())
        return TicketVerifier(SECRET, self.users, one_time=one_time, clock=self.clock,
                              pool=self.pool, **kwargs)

    def reason(self, d: Deferred) -> str:
        return self.failureResultOf(d, TicketError).value.reason

    def test_user_and_anonymous(self) -> None:
        verifier = self.make(ADMIN)
        result = self.successResultOf(verifier.verify(
            issue_ticket(SECRET, "admin", ADMIN.password, now=T0 - 10)))
        self.assertEqual(result.user, ADMIN)
        self.assertFalse(result.backend)
        anonymous = self.successResultOf(verifier.verify(issue_ticket(SECRET, now=T0)))
        self.assertTrue(anonymous.backend)
        self.assertEqual(self.users.lookups, 1)  # no lookup for anonymous tickets

    def test_verify_identity(self) -> None:
        verifier = self.make(ADMIN)
        identity = self.successResultOf(verifier.verify_identity(
            issue_ticket(SECRET, "admin", ADMIN.password, now=T0), "sess"))
        self.assertEqual((identity.username, identity.user_id, identity.anonymous),
                         ("admin", 1, False))
        identity = self.successResultOf(verifier.verify_identity(issue_ticket(SECRET, now=T0), "s9"))
        self.assertEqual(identity, Identity.anonymous_for("s9", backend=True))

    def test_reasons(self) -> None:
        verifier = self.make(ADMIN, DISABLED)
        self.assertEqual(self.reason(verifier.verify("%%%")), BAD_FORMAT)
        self.assertEqual(self.reason(verifier.verify(encode("a", "b", "c", "d")[:4])), BAD_FORMAT)
        self.assertEqual(self.reason(verifier.verify(issue_ticket(SECRET, now=T0 + 5))), FUTURE)
        self.assertEqual(self.reason(verifier.verify(issue_ticket(SECRET, now=T0 - 301))), EXPIRED)
        self.assertEqual(self.reason(verifier.verify(
            issue_ticket(SECRET, "nobody", "h", now=T0))), UNKNOWN_USER)
        self.assertEqual(self.reason(verifier.verify(
            issue_ticket(SECRET, "gone", DISABLED.password, now=T0))), UNKNOWN_USER)
        self.assertEqual(self.reason(verifier.verify(
            issue_ticket(SECRET, "admin", "wrong", now=T0))), BAD_DIGEST)
        self.assertEqual(self.reason(verifier.verify(
            issue_ticket("another secret", now=T0))), BAD_DIGEST)
        # Only the last two needed a digest.
        self.assertEqual(self.pool.calls, 2)

    def test_cache_hit_skips_pool_and_lookup(self) -> None:
        verifier = self.make(ADMIN)
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        first = self.successResultOf(verifier.verify(ticket))
        self.clock.advance(100)
        second = self.successResultOf(verifier.verify(ticket.rstrip("=")))
        self.assertEqual(first, second)
        self.assertEqual((self.pool.calls, self.users.lookups, verifier.cache_hits), (1, 1, 1))

    def test_cache_expires_with_ticket(self) -> None:
        verifier = self.make(ADMIN)
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        self.successResultOf(verifier.verify(ticket))
        self.clock.advance(DEFAULT_TTL)
        self.successResultOf(verifier.verify(ticket))
        self.clock.advance(1)
        self.assertEqual(self.reason(verifier.verify(ticket)), EXPIRED)
        self.assertEqual(self.pool.calls, 1)
        verifier._cache.prune(self.clock.seconds())
        self.assertEqual(len(verifier._cache), 0)

    def test_bad_digest_cached(self) -> None:
        verifier = self.make(ADMIN)
        ticket = issue_ticket(SECRET, "admin", "stale hash", now=T0)
        for _ in range(5):
            self.assertEqual(self.reason(verifier.verify(ticket)), BAD_DIGEST)
        self.assertEqual(self.pool.calls, 1)

    def test_unknown_user_and_future_not_cached(self) -> None:
        verifier = self.make()
        ticket = issue_ticket(SECRET, "late", "h", now=T0)
        self.assertEqual(self.reason(verifier.verify(ticket)), UNKNOWN_USER)
        self.users._lookup.users.append(UserRecord(id=9, username="late", password="h"))
        self.successResultOf(verifier.verify(ticket))
        future = issue_ticket(SECRET, now=T0 + 10)
        self.assertEqual(self.reason(verifier.verify(future)), FUTURE)
        self.clock.advance(10)
        self.successResultOf(verifier.verify(future))

    def test_provider_failure_passed_on_not_cached(self) -> None:
        verifier = self.make(ADMIN)
        self.users.error = RuntimeError("database down")
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        self.failureResultOf(verifier.verify(ticket), RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.users.error = None
        self.successResultOf(verifier.verify(ticket))
        self.assertEqual(verifier._inflight, {})

    def test_concurrent_verifications_share_one_computation(self) -> None:
        manual = ManualPool()
        verifier = self.make(ADMIN, pool=manual)
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        results = [verifier.verify(ticket) for _ in range(3)]
        cancelled = verifier.verify(ticket)
        for d in results + [cancelled]:
            self.assertNoResult(d)
        cancelled.cancel()
        self.failureResultOf(cancelled, defer.CancelledError)
        self.assertEqual((self.pool.calls, self.users.lookups, verifier.deduplicated), (1, 1, 3))
        manual.release()
        values = [self.successResultOf(d) for d in results]
        self.assertTrue(all(v == values[0] and v.user == ADMIN for v in values))
        self.assertEqual(verifier._inflight, {})

    def test_concurrent_failures_shared(self) -> None:
        manual = ManualPool()
        verifier = self.make(ADMIN, pool=manual)
        ticket = issue_ticket(SECRET, "admin", "wrong", now=T0)
        results = [verifier.verify(ticket) for _ in range(2)]
        manual.release()
        self.assertEqual([self.reason(d) for d in results], [BAD_DIGEST, BAD_DIGEST])
        self.assertEqual(self.pool.calls, 1)

    def test_dedup_includes_user_lookup(self) -> None:
        verifier = self.make(ADMIN)
        self.users.gate = Deferred()
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        a, b = verifier.verify(ticket), verifier.verify(ticket)
        self.assertEqual(self.users.lookups, 1)
        self.users.gate.callback(None)
        self.assertEqual(self.successResultOf(a), self.successResultOf(b))

    def test_one_time_refuses_replay_despite_cache(self) -> None:
        verifier = self.make(ADMIN, one_time=True)
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        self.successResultOf(verifier.verify(ticket))
        self.assertEqual(self.reason(verifier.verify(ticket)), REPLAYED)
        self.assertEqual(verifier.cache_hits, 1)
        # A fresh ticket for the same user is fine.
        self.successResultOf(verifier.verify(issue_ticket(SECRET, "admin", ADMIN.password, now=T0)))

    def test_one_time_concurrent(self) -> None:
        manual = ManualPool()
        verifier = self.make(pool=manual, one_time=True)
        ticket = issue_ticket(SECRET, now=T0)
        a, b = verifier.verify(ticket), verifier.verify(ticket)
        manual.release()
        self.successResultOf(a)
        self.assertEqual(self.reason(b), REPLAYED)

    def test_one_time_off_by_default(self) -> None:
        verifier = self.make()
        ticket = issue_ticket(SECRET, now=T0)
        for _ in range(3):
            self.successResultOf(verifier.verify(ticket))

    def test_validation(self) -> None:
        self.assertRaises(ValueError, self.make, ttl=0)
        self.assertRaises(ValueError, self.make, leeway=-1)
        self.assertRaises(ValueError, self.make, cache_size=0)
        verifier = self.make(ttl=10, leeway=5)
        self.successResultOf(verifier.verify(issue_ticket(SECRET, now=T0 + 5)))
        self.assertEqual(self.reason(verifier.verify(issue_ticket(SECRET, now=T0 - 11))), EXPIRED)

    def test_owned_pool_shutdown(self) -> None:
        verifier = TicketVerifier(SECRET, MemoryUsers(), clock=task.Clock())
        self.assertIsInstance(verifier._pool, ProcessDigestPool)
        self.assertFalse(verifier._pool.running)  # lazily started
        self.successResultOf(verifier.shutdown())
        borrowed = InlineDigestPool()
        self.successResultOf(TicketVerifier(SECRET, MemoryUsers(), pool=borrowed,
                                            clock=task.Clock()).shutdown())

    def test_never_logs_ticket(self) -> None:
        from twisted.logger import globalLogPublisher

        from oro_sync import logs

        events: list[dict] = []
        logs.set_level("debug")  # refusals are logged at debug by the verifier
        self.addCleanup(logs.set_level, "info")
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        verifier = self.make(ADMIN)
        ticket = issue_ticket(SECRET, "admin", "wrong", now=T0)
        digest = parse_ticket(ticket).digest
        self.reason(verifier.verify(ticket))
        self.reason(verifier.verify(issue_ticket(SECRET, now=T0 + 100)))
        self.assertTrue(events)
        from twisted.logger import formatEvent

        for event in events:
            text = formatEvent(event) + repr(event)
            self.assertNotIn(ticket, text)
            self.assertNotIn(digest, text)


_SHARED_POOL: list[ProcessDigestPool] = []


def shared_process_pool() -> ProcessDigestPool:
    """One pool for the tests that only compute: spawning workers costs ~1 s.
    Trial has no class-level asynchronous teardown; the workers end with the
    test run (concurrent.futures joins them at interpreter exit)."""
    if not _SHARED_POOL:
        _SHARED_POOL.append(ProcessDigestPool(max_workers=2))
    return _SHARED_POOL[0]


class ProcessPoolTests(unittest.TestCase):
    """The real process pool and the real reactor."""

    timeout = 60

    def setUp(self) -> None:
        self.process_pool = shared_process_pool()
        verifyObject(IDigestPool, self.process_pool)

    def own_pool(self, max_workers: int = 1) -> ProcessDigestPool:
        pool = ProcessDigestPool(max_workers=max_workers)
        self.addCleanup(pool.shutdown)
        return pool

    @defer.inlineCallbacks
    def test_vectors_through_pool(self):
        if not VECTORS:
            raise unittest.SkipTest("no test vectors")
        pool = CountingPool(self.process_pool)
        submitted = self.process_pool.submitted
        for vector in VECTORS:
            clock = task.Clock()
            clock.advance(stamp(vector["created"]) + 60)
            verifier = TicketVerifier(vector["secret"], MemoryUsers(vector_user(vector)),
                                      clock=clock, pool=pool)
            result = yield verifier.verify(vector["ticket"])
            self.assertEqual(result.username, vector["username"])
            error = yield self.assertFailure(
                verifier.verify(encode("A" + vector["digest"][1:], vector["username"],
                                       vector["nonce"], vector["created"])), TicketError)
            self.assertEqual(error.reason, BAD_DIGEST)
        self.assertEqual(pool.calls, 2 * len(VECTORS))
        self.assertEqual(self.process_pool.submitted - submitted, 2 * len(VECTORS))
        # Results arrive on the reactor (main) thread.
        self.assertEqual(set(pool.threads), {threading.main_thread().name})

    @defer.inlineCallbacks
    def test_cache_and_dedup_with_pool(self):
        clock = task.Clock()
        clock.advance(T0)
        pool = CountingPool(self.process_pool)
        users = MemoryUsers(ADMIN)
        verifier = TicketVerifier(SECRET, users, clock=clock, pool=pool)
        ticket = issue_ticket(SECRET, "admin", ADMIN.password, now=T0)
        first = verifier.verify(ticket)
        second = verifier.verify(ticket)
        results = yield defer.gatherResults([first, second])
        self.assertEqual(results[0], results[1])
        self.assertEqual(pool.calls, 1)
        third = yield verifier.verify(ticket)
        self.assertEqual(third, results[0])
        self.assertEqual((pool.calls, verifier.cache_hits, verifier.deduplicated), (1, 1, 1))

    @defer.inlineCallbacks
    def test_one_time_with_pool(self):
        clock = task.Clock()
        clock.advance(T0)
        verifier = TicketVerifier(SECRET, MemoryUsers(), clock=clock,
                                  pool=self.process_pool, one_time=True)
        ticket = issue_ticket(SECRET, now=T0)
        yield verifier.verify(ticket)
        error = yield self.assertFailure(verifier.verify(ticket), TicketError)
        self.assertEqual(error.reason, REPLAYED)

    @defer.inlineCallbacks
    def test_many_in_parallel(self):
        digests = yield defer.gatherResults([
            self.process_pool.compute(f"{i:016x}", "2026-01-01T00:00:00+00:00", "pw", SECRET)
            for i in range(8)])
        expected = [compute_digest(f"{i:016x}", "2026-01-01T00:00:00+00:00", "pw", SECRET)
                    for i in range(8)]
        self.assertEqual(digests, expected)

    @defer.inlineCallbacks
    def test_start_and_shutdown(self):
        from twisted.internet import reactor

        pool = self.own_pool(max_workers=2)
        self.assertFalse(pool.running)
        yield pool.start()
        self.assertTrue(pool.running)
        self.assertEqual(len(pool._executor._processes), 2)
        self.assertIsNotNone(pool._trigger)  # shut down with the reactor
        triggers = reactor._eventTriggers["shutdown"].before
        self.assertEqual(sum(1 for t in triggers if t[0] == pool._reactor_shutting_down), 1)
        digest = yield pool.compute("n", "c", "p", SECRET)
        self.assertEqual(digest, compute_digest("n", "c", "p", SECRET))
        processes = list(pool._executor._processes.values())
        yield pool.shutdown()
        self.assertFalse(pool.running)
        self.assertFalse(any(p.is_alive() for p in processes))
        self.assertEqual(sum(1 for t in triggers if t[0] == pool._reactor_shutting_down), 0)
        yield self.assertFailure(pool.compute("n", "c", "p", SECRET), RuntimeError)

    @defer.inlineCallbacks
    def test_recovers_from_dead_worker(self):
        import signal
        from concurrent.futures.process import BrokenProcessPool

        pool = self.own_pool()
        yield pool.start()
        executor = pool._executor
        # A computation that would run for minutes, then its worker dies.
        slow = pool._submit(executor, compute_digest, "n", "c", "p", SECRET, 10 ** 9)
        for process in list(executor._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
        yield self.assertFailure(slow, BrokenProcessPool)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertFalse(pool.running)
        digest = yield pool.compute("n", "c", "p", SECRET)
        self.assertEqual(digest, compute_digest("n", "c", "p", SECRET))


class VerifierServiceTests(unittest.TestCase):
    """VerifierService: the digest workers started and stopped as a service."""

    timeout = 60

    @defer.inlineCallbacks
    def test_starts_and_stops_workers_in_a_multiservice(self):
        from twisted.application.service import MultiService

        verifier = TicketVerifier(SECRET, MemoryUsers(ADMIN), workers=1)
        self.addCleanup(verifier.shutdown)
        service = VerifierService(verifier)
        parent = MultiService()
        service.setServiceParent(parent)
        early = service.when_ready()  # asked before the start: still told
        self.assertNoResult(early)
        parent.startService()
        self.assertIsNone((yield early))
        self.assertTrue(service.running)
        pool = verifier._pool
        self.assertTrue(pool.running)
        processes = list(pool._executor._processes.values())
        self.assertEqual(len(processes), 1)
        self.assertIsNone(self.successResultOf(service.when_ready()))  # already ready
        verified = yield verifier.verify(issue_ticket(SECRET, "admin", ADMIN.password))
        self.assertEqual(verified.user, ADMIN)
        yield parent.stopService()  # waits for the workers
        self.assertFalse(service.running)
        self.assertFalse(pool.running)
        self.assertFalse(any(p.is_alive() for p in processes))

    @defer.inlineCallbacks
    def test_stopped_while_starting(self):
        verifier = TicketVerifier(SECRET, MemoryUsers(), workers=1)
        service = VerifierService(verifier)
        service.startService()
        ready = service.when_ready()
        yield service.stopService()
        yield ready  # told, not left hanging
        self.assertFalse(verifier._pool.running)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failed_start_is_logged_and_still_ready(self) -> None:
        @implementer(IDigestPool)
        class BrokenPool(InlineDigestPool):
            def start(self) -> Deferred:
                return defer.fail(OSError("cannot spawn"))

        service = VerifierService(TicketVerifier(SECRET, MemoryUsers(), pool=BrokenPool(),
                                                 clock=task.Clock()))
        service.startService()
        self.assertIsNone(self.successResultOf(service.when_ready()))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.successResultOf(service.stopService())
        self.assertFalse(service.running)
