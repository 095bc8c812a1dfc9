"""Oro sync tickets: parsing and checking, and one-time use (pure, no I/O).

A ticket is ``base64("<digest>;<username>;<nonce>;<created>")``; an
empty username makes an anonymous (backend) ticket.  See
``shared/reference/oro-sync-compat.md``, "Authentication: sync tickets".

The digest itself, and issuing tickets, are in
:mod:`oro_sync.auth.ticket_signing`.  Everything here is synchronous and
deterministic: time is always passed in (``now``, seconds since the epoch)
so tests never sleep.  :func:`check_ticket` is the whole validation for
callers that can look users up synchronously (tests, command-line tools);
the server uses
:class:`oro_sync.auth.verifier.TicketVerifier`, which runs the same steps
asynchronously.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from oro_sync.logs import Logger

from oro_sync.auth.expiring import ExpiringMap
from oro_sync.auth.interfaces import UserRecord
from oro_sync.auth.ticket_signing import compute_digest, digest_matches, password_too_long

if TYPE_CHECKING:  # pragma: no cover
    from oro_sync.identity import Identity

__all__ = [
    "BAD_DIGEST", "BAD_FORMAT", "DEFAULT_TTL", "EXPIRED", "FUTURE",
    "MAX_TICKET_CHARS", "REASONS", "REPLAYED", "UNKNOWN_USER",
    "NonceStore", "ParsedTicket", "TicketError", "VerifiedTicket",
    "check_created", "check_ticket", "finish_check", "parse_created",
    "parse_ticket", "password_for", "user_usable",
]

log = Logger(namespace=__name__)

#: Oro's default ticket lifetime (seconds).
DEFAULT_TTL = 300
#: Longest base64 ticket accepted.  Real tickets are ~150-250 chars; the
#: bound keeps junk out of memory and caches.
MAX_TICKET_CHARS = 8192

# Machine reason codes carried by TicketError.reason.
BAD_FORMAT = "bad-format"
FUTURE = "future"
EXPIRED = "expired"
UNKNOWN_USER = "unknown-user"
BAD_DIGEST = "bad-digest"
REPLAYED = "replayed"
REASONS = frozenset({BAD_FORMAT, FUTURE, EXPIRED, UNKNOWN_USER, BAD_DIGEST, REPLAYED})


class TicketError(Exception):
    """A ticket was refused.

    ``reason`` is one of :data:`REASONS`, meant for logs, metrics and tests;
    ``detail`` is a human explanation that never contains the ticket or its
    digest.  Clients should only ever learn "403".
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown ticket failure reason {reason!r}")
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class ParsedTicket:
    """The four fields of a decoded ticket (nothing checked yet)."""

    digest: str
    username: str
    nonce: str
    created: str

    @property
    def key(self) -> str:
        """Canonical form (the decoded text): equal for tickets that differ
        only in base64 padding or surrounding whitespace.  Used as the cache
        key; it contains the digest, so never log it."""
        return f"{self.digest};{self.username};{self.nonce};{self.created}"

    @property
    def nonce_key(self) -> str:
        """What one-time use remembers: the nonce, per username."""
        return f"{self.username}\x00{self.nonce}"

    @property
    def anonymous(self) -> bool:
        return self.username == ""


def parse_ticket(ticket: str | bytes) -> ParsedTicket:
    """Decode a ticket; raise ``TicketError(BAD_FORMAT)`` if it is not one.

    The split is ``digest`` up to the first ``;`` (base64 never contains
    one), ``nonce`` and ``created`` after the last two, and the username is
    whatever lies between, so a username may contain ``;`` and any Unicode.
    Missing base64 padding is tolerated (PHP's decoder does); any other
    non-alphabet character is refused.
    """
    if isinstance(ticket, bytes):
        try:
            ticket = ticket.decode("ascii")
        except UnicodeDecodeError:
            raise TicketError(BAD_FORMAT, "ticket is not ASCII") from None
    if not isinstance(ticket, str):
        raise TicketError(BAD_FORMAT, "ticket is not a string")
    text = ticket.strip()
    if not text:
        raise TicketError(BAD_FORMAT, "empty ticket")
    if len(text) > MAX_TICKET_CHARS:
        raise TicketError(BAD_FORMAT, f"ticket longer than {MAX_TICKET_CHARS} characters")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise TicketError(BAD_FORMAT, "ticket is not base64-encoded UTF-8") from None
    if decoded.count(";") < 3:
        raise TicketError(BAD_FORMAT, "invalid ticket format (fewer than 3 ';')")
    digest, rest = decoded.split(";", 1)
    username, nonce, created = rest.rsplit(";", 2)
    return ParsedTicket(digest=digest, username=username, nonce=nonce, created=created)


def parse_created(created: str) -> float | None:
    """The ``created`` field as a POSIX timestamp, or ``None`` if unusable.

    Only ISO-8601 *with* a UTC offset is accepted (what Oro's ``format('c')``
    produces); PHP's ``strtotime`` also took phrases like ``"now"`` and
    offset-less times in the PHP server's timezone, which cannot be
    interpreted safely here.
    """
    if not isinstance(created, str) or not created or len(created) > 64:
        return None
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        return None
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def check_created(created: str, now: float, ttl: float = DEFAULT_TTL,
                  leeway: float = 0) -> float:
    """Oro's date checks, in Oro's order; return the ticket's expiry time.

    ``created`` later than ``now`` (+ ``leeway`` for clock skew between the
    PHP hosts and this one; Oro had none) -> ``FUTURE``; older than ``ttl``
    seconds -> ``EXPIRED``; unparseable -> ``EXPIRED`` (PHP's
    ``strtotime`` returned ``false``, which compares as 0).  Like PHP, whole
    seconds are compared, so a ticket exactly ``ttl`` seconds old is valid.
    The returned expiry is the first instant at which the ticket is refused
    (``created + ttl + 1``, whole seconds).
    """
    stamp = parse_created(created)
    if stamp is None:
        raise TicketError(EXPIRED, "unparseable created date")
    created_s = math.floor(stamp)
    now_s = math.floor(now)
    if created_s > now_s + leeway:
        raise TicketError(FUTURE, "ticket created in the future")
    if created_s < now_s - ttl:
        raise TicketError(EXPIRED, "ticket expired")
    return float(created_s + ttl + 1)


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class VerifiedTicket:
    """A ticket that passed every check.

    The WebSocket session id is not known when a ticket is checked (the
    check happens during the HTTP upgrade), so this carries what is needed
    to build the :class:`~oro_sync.identity.Identity` later, with
    :meth:`identity`.  ``username`` is the user's canonical username (the
    ticket may have named the user by email), ``""`` for anonymous tickets.
    ``backend`` is true for anonymous tickets: they are keyed by the
    application secret, which only the PHP application knows.
    ``expires_at`` is the first instant (POSIX seconds) the ticket would be
    refused as expired.
    """

    username: str
    user: UserRecord | None
    backend: bool
    nonce: str
    created: str
    expires_at: float

    @property
    def anonymous(self) -> bool:
        return self.user is None

    def identity(self, session_id: str) -> "Identity":
        """The session's identity: ``anonymous-<sessionId>`` (backend) for
        anonymous tickets, the user's fields otherwise."""
        # Imported here: digest worker processes import this module and
        # should not have to import the server core that identity pulls in.
        from oro_sync.identity import Identity

        if self.user is None:
            return Identity.anonymous_for(session_id, backend=self.backend)
        user = self.user
        return Identity.user(
            user.id, user.username, email=user.email, roles=tuple(user.roles),
            organization_id=user.organization_id,
        )


def user_usable(user: UserRecord | None) -> bool:
    """A provider is supposed to return enabled users only; check anyway."""
    return user is not None and user.enabled


def check_ticket(ticket: str | bytes, secret: str,
                 find_user: Callable[[str], UserRecord | None], *,
                 now: float | None = None, ttl: float = DEFAULT_TTL,
                 leeway: float = 0,
                 nonce_store: "NonceStore | None" = None) -> VerifiedTicket:
    """Validate a ticket synchronously, in Oro's order; raise :class:`TicketError`.

    ``find_user`` looks a username up (by username, then email) and returns
    an enabled :class:`UserRecord` or ``None``.  With a ``nonce_store`` a
    ticket is accepted once only (``REPLAYED`` afterwards).  The server uses
    :class:`~oro_sync.auth.verifier.TicketVerifier` instead, which computes
    digests off the reactor thread and caches outcomes.
    """
    if now is None:
        now = time.time()
    parsed = parse_ticket(ticket)
    expires_at = check_created(parsed.created, now, ttl, leeway)
    user: UserRecord | None = None
    if not parsed.anonymous:
        user = find_user(parsed.username)
        if not user_usable(user):
            raise TicketError(UNKNOWN_USER, "no such enabled user")
    password = password_for(user, secret)
    if password_too_long(parsed.nonce, parsed.created, password):
        raise TicketError(BAD_DIGEST, "password too long")
    expected = compute_digest(parsed.nonce, parsed.created, password, secret)
    result = finish_check(parsed, user, expected, expires_at)
    if nonce_store is not None:
        nonce_store.consume(parsed.nonce_key, expires_at, now)
    return result


def finish_check(parsed: ParsedTicket, user: UserRecord | None, expected: str,
                 expires_at: float) -> VerifiedTicket:
    """Compare the presented digest with the expected one (constant time)."""
    if not digest_matches(expected, parsed.digest):
        raise TicketError(BAD_DIGEST, "digest mismatch")
    return VerifiedTicket(
        username=user.username if user is not None else "",
        user=user, backend=user is None, nonce=parsed.nonce,
        created=parsed.created, expires_at=expires_at,
    )


def password_for(user: UserRecord | None, secret: str) -> str:
    """The "password" a ticket is signed with: hash for users, else the secret."""
    return secret if user is None else user.password


# ---------------------------------------------------------------- one-time use


class NonceStore:
    """Remembers used nonces until their tickets expire, to refuse replays.

    Oro never stored nonces, so a captured ticket worked for its whole TTL;
    this is the optional improvement.  Memory is bounded: entries are pruned
    once their ticket has expired (a replay would be refused as expired
    anyway), and if ``max_entries`` live entries are reached the one
    expiring soonest is evicted with a warning rather than refusing new
    connections.  Only successfully verified tickets are recorded, so the
    rate of additions is the rate of legitimate logins.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        # No clock: time is passed in, as everywhere in this module.
        self._used: ExpiringMap[str, bool] = ExpiringMap(max_entries, evict="soonest")

    def __len__(self) -> int:
        return len(self._used)

    def __contains__(self, key: str) -> bool:
        return key in self._used

    def prune(self, now: float) -> int:
        """Forget entries whose tickets have expired; return how many."""
        return self._used.prune(now)

    def consume(self, key: str, expires_at: float, now: float) -> None:
        """Record ``key`` as used until ``expires_at`` (exclusive); raise
        ``TicketError(REPLAYED)`` if it is already recorded and not expired."""
        self._used.prune(now)
        if key in self._used:
            raise TicketError(REPLAYED, "ticket already used")
        if self._used.put(key, True, expires_at, now=now):
            log.warn("Nonce store full ({max} entries): forgetting a nonce before "
                     "its ticket expires", max=self.max_entries)
