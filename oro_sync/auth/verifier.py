"""Asynchronous sync-ticket verification for the server.

:class:`TicketVerifier` runs the checks of :mod:`oro_sync.auth.tickets` in
Oro's order, but without blocking the reactor:

- the 5000-round sha512 digest (~5-15 ms of CPU per ticket) runs in worker
  *processes* (:class:`~oro_sync.auth.digest_pool.ProcessDigestPool`); threads would not help, since
  ``hashlib`` keeps the GIL for inputs this small;
- users come from an :class:`~oro_sync.auth.interfaces.IUserProvider`,
  which returns Deferreds;
- identical tickets are verified once until they expire (outcome cache),
  and simultaneous verifications of the same ticket share one computation,
  so a burst of reconnects, or a flood of one bad ticket, costs one digest;
- optionally (``one_time=True``) a ticket is accepted only once, even when
  its outcome comes from the cache.

``verify`` fires with a :class:`~oro_sync.auth.tickets.VerifiedTicket`
rather than an :class:`~oro_sync.identity.Identity`: tickets are checked
during the HTTP upgrade, before the WebSocket session (and its id, which an
anonymous identity is named after) exists.  Call
``verified.identity(session_id)`` once the session is created, or use
:meth:`TicketVerifier.verify_identity` when the id is already known.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from oro_sync.auth.digest_pool import IDigestPool, ProcessDigestPool
from oro_sync.auth.expiring import ExpiringMap
from oro_sync.auth.interfaces import IUserProvider, UserRecord
from oro_sync.auth.ticket_signing import password_too_long, validate_secret
from oro_sync.auth.tickets import (
    BAD_DIGEST, DEFAULT_TTL, UNKNOWN_USER, NonceStore, ParsedTicket, TicketError,
    VerifiedTicket, check_created, finish_check, parse_ticket, password_for, user_usable,
)
from oro_sync.logs import Logger

__all__ = ["TicketError", "TicketVerifier", "VerifiedTicket", "VerifierService"]

log = Logger(namespace=__name__)

#: What an unknown user's ticket is checked against: as long as Oro's stored
#: password hashes (88 characters of base64 for sha512), random per process.
_DUMMY_PASSWORD = secrets.token_urlsafe(66)


class _CachedRefusal(NamedTuple):
    reason: str
    detail: str


class TicketVerifier:
    """Checks Oro sync tickets for the WebSocket server.

    :param secret: the application secret (Oro's ``secret`` parameter).
    :param user_provider: an :class:`IUserProvider`.
    :param ttl: ticket lifetime in seconds (Oro: 300).
    :param one_time: refuse a ticket the second time (``replayed``); Oro
        allowed replays within the TTL, and its PHP backend may rely on it,
        so this is off by default.
    :param clock: an ``IReactorTime`` (``seconds()``); the reactor by default.
    :param pool: an :class:`IDigestPool`; by default a
        :class:`ProcessDigestPool` owned (and shut down) by this verifier.
    :param workers: processes of that default pool (one per CPU if
        ``None``); ignored when ``pool`` is given.
    :param leeway: seconds a ticket may be "in the future" (clock skew
        between PHP hosts and this one); Oro: 0.
    :param cache_size: outcomes remembered (successes and digest mismatches).
    :param nonce_store: the :class:`NonceStore` used when ``one_time``.

    Cached successes stay valid until the ticket expires even if the user is
    disabled or changes password meanwhile (at most ``ttl`` seconds); the
    connection would have stayed open in Oro anyway.
    """

    def __init__(self, secret: str, user_provider: IUserProvider, ttl: float = DEFAULT_TTL,
                 one_time: bool = False, clock: IReactorTime | None = None,
                 pool: IDigestPool | None = None, *, leeway: float = 0,
                 cache_size: int = 10_000, nonce_store: NonceStore | None = None,
                 workers: int | None = None) -> None:
        validate_secret(secret)
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        if cache_size < 1:
            raise ValueError("cache_size must be positive")
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self._secret = secret
        self._users = user_provider
        self.ttl = ttl
        self.leeway = leeway
        self.one_time = one_time
        self._clock = clock
        self._owns_pool = pool is None
        self._pool: IDigestPool = (
            pool if pool is not None else ProcessDigestPool(max_workers=workers))
        # Outcomes by canonical ticket until the ticket expires; least
        # recently used first out when full.
        self._cache: ExpiringMap[str, VerifiedTicket | _CachedRefusal] = ExpiringMap(cache_size)
        self._nonces = nonce_store if nonce_store is not None else NonceStore()
        self._inflight: dict[str, list[Deferred]] = {}
        #: Counters for metrics and tests.
        self.computations = 0
        self.cache_hits = 0
        self.deduplicated = 0

    @property
    def pending(self) -> int:
        """Ticket checks in progress (waiting for the user lookup or a digest worker)."""
        return len(self._inflight)

    # ---------------------------------------------------------------- API

    def verify(self, ticket: str | bytes) -> Deferred:
        """Fire with a :class:`VerifiedTicket`, or fail with a
        :class:`TicketError` (``.reason``); other failures (e.g. the user
        database is down) are passed on unchanged and are not cached."""
        try:
            parsed = parse_ticket(ticket)
            now = self._clock.seconds()
            expires_at = check_created(parsed.created, now, self.ttl, self.leeway)
        except TicketError as e:
            self._log_refusal(e, None)
            return fail(e)
        key = parsed.key
        cached = self._cache.get(key, now=now)
        if cached is not None:
            self.cache_hits += 1
            if isinstance(cached, _CachedRefusal):
                outcome: Deferred = fail(TicketError(cached.reason, cached.detail))
            else:
                outcome = succeed(cached)
        else:
            outcome = Deferred()
            waiters = self._inflight.get(key)
            if waiters is not None:
                self.deduplicated += 1
                waiters.append(outcome)
            else:
                self._inflight[key] = [outcome]
                work = self._check(parsed, expires_at)
                work.addBoth(self._settle, key, expires_at)
        outcome.addCallback(self._accept, parsed)
        outcome.addErrback(self._refused, parsed)
        return outcome

    def start(self) -> Deferred:
        """Start the digest workers now, so the first connections do not wait
        for them (about a second); fires when they are ready."""
        start = getattr(self._pool, "start", None)
        if start is None:
            return succeed(None)
        return maybeDeferred(start)

    def verify_identity(self, ticket: str | bytes, session_id: str) -> Deferred:
        """:meth:`verify`, then the session's :class:`~oro_sync.identity.Identity`."""
        return self.verify(ticket).addCallback(lambda v: v.identity(session_id))

    def shutdown(self) -> Deferred:
        """Stop the digest workers if this verifier created them."""
        if self._owns_pool:
            return self._pool.shutdown()
        return succeed(None)

    # ---------------------------------------------------------------- steps

    def _check(self, parsed: ParsedTicket, expires_at: float) -> Deferred:
        if parsed.anonymous:
            d: Deferred = succeed(None)
        else:
            d = maybeDeferred(self._users.findUser, parsed.username)
        d.addCallback(self._compare_for, parsed, expires_at)
        return d

    def _compare_for(self, user: UserRecord | None, parsed: ParsedTicket,
                     expires_at: float) -> Deferred:
        if parsed.anonymous:
            user = None
        elif not user_usable(user):
            # Constant-time refusal: an unknown user costs the same digest as a
            # known one with a wrong ticket, so timing does not tell which
            # usernames exist (it used to: ~1 ms against ~6 ms).
            self.computations += 1
            d = self._pool.compute(parsed.nonce, parsed.created, _DUMMY_PASSWORD, self._secret)

            def unknown(_: str) -> None:
                raise TicketError(UNKNOWN_USER, "no such enabled user")
            return d.addCallback(unknown)
        password = password_for(user, self._secret)
        if password_too_long(parsed.nonce, parsed.created, password):
            raise TicketError(BAD_DIGEST, "password too long")
        self.computations += 1
        d = self._pool.compute(parsed.nonce, parsed.created, password, self._secret)
        d.addCallback(lambda expected: finish_check(parsed, user, expected, expires_at))
        return d

    def _settle(self, result: VerifiedTicket | Failure, key: str, expires_at: float) -> None:
        """Cache what is worth caching and fire everybody waiting for ``key``."""
        waiters = self._inflight.pop(key, [])
        now = self._clock.seconds()
        if isinstance(result, Failure):
            error = result.value
            if isinstance(error, TicketError):
                if error.reason in (BAD_DIGEST, UNKNOWN_USER):
                    # Expensive: remember it.  Unknown users too, so that a
                    # repeated ticket is answered from the cache either way
                    # (timing tells nothing); a user created meanwhile needs
                    # a fresh ticket, as Oro's frontend fetches for each connection.
                    self._cache.put(key, _CachedRefusal(error.reason, error.detail),
                                    expires_at, now=now)
            else:
                log.failure("Sync ticket verification failed", result)
        else:
            self._cache.put(key, result, expires_at, now=now)
        for waiter in waiters:
            if waiter.called:  # cancelled
                continue
            if isinstance(result, Failure):
                if isinstance(result.value, TicketError):
                    waiter.errback(TicketError(result.value.reason, result.value.detail))
                else:
                    waiter.errback(result)
            else:
                waiter.callback(result)
        return None

    def _accept(self, verified: VerifiedTicket, parsed: ParsedTicket) -> VerifiedTicket:
        if self.one_time:
            self._nonces.consume(parsed.nonce_key, verified.expires_at, self._clock.seconds())
        log.debug("Sync ticket accepted for {who}", who=verified.username or "anonymous backend")
        return verified

    def _refused(self, failure: Failure, parsed: ParsedTicket) -> Failure:
        if isinstance(failure.value, TicketError):
            self._log_refusal(failure.value, parsed)
        return failure

    @staticmethod
    def _log_refusal(error: TicketError, parsed: ParsedTicket | None) -> None:
        # Never log the ticket or its digest: within its TTL it is a credential.
        who = "?" if parsed is None else (parsed.username or "anonymous")
        # debug: the handshake gate logs the one line per refused connection.
        log.debug("Sync ticket refused ({reason}: {detail}) for {who}",
                 reason=error.reason, detail=error.detail, who=who)


class VerifierService(Service):
    """A :class:`TicketVerifier`'s digest workers as a Twisted service.

    So that the workers' lifetime is part of the application's service tree:
    started with it, and stopped -- and waited for, since ``stopService``
    returns a Deferred that a ``MultiService`` honours -- before the reactor
    stops, instead of being started by hand from the listening service.

    :meth:`when_ready` tells when listening makes sense: spawned workers
    need about a second to start, and clients arriving earlier would wait
    (or time out).  A failed start is logged rather than passed on: the
    pool starts workers again on the first ticket, so the server should
    listen anyway.

    One run only: stopping shuts an owned pool down for good.
    """

    def __init__(self, verifier: TicketVerifier) -> None:
        self.verifier = verifier
        self._ready = False
        self._waiting: list[Deferred[None]] = []

    def when_ready(self) -> Deferred[None]:
        """A new Deferred firing (with ``None``, never failing) once the
        workers have started, their start failed, or the service stopped
        while they were starting; at once if that has already happened."""
        if self._ready:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        started = self.verifier.start()
        started.addErrback(self._start_failed)
        started.addCallback(self._started)

    def _start_failed(self, failure: Failure) -> None:
        if self.running:
            log.failure("Ticket digest workers did not start; they will be started "
                        "for the first ticket", failure)
        else:  # stopped while starting: the cancellation is expected
            log.debug("Ticket digest workers stopped while starting: {why}",
                      why=failure.getErrorMessage())

    def _started(self, _: object) -> None:
        self._ready = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stopService(self) -> Deferred[None]:
        """Stop the workers (if the verifier owns them); fire when they are gone."""
        super().stopService()
        return self.verifier.shutdown()
