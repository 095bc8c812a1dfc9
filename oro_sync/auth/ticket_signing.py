"""Signing Oro sync tickets: Symfony's digest, and issuing tickets (pure, no I/O).

A ticket is ``base64("<digest>;<username>;<nonce>;<created>")`` where the
digest is Symfony's ``MessageDigestPasswordEncoder`` (sha512, 5000
iterations, base64) applied to ``"<nonce>|<created>|<password>"`` salted with
the application secret.  ``password`` is the user's stored password hash, or
the secret itself for an anonymous (backend) ticket whose username is empty.
See ``shared/reference/oro-sync-compat.md``, "Authentication: sync tickets".

This is the side that *makes* digests; :mod:`oro_sync.auth.tickets` reads
and checks tickets and compares the digest it recomputes here.  The two are
apart because this side needs only the standard library: the expensive
digest (:func:`compute_digest`, ~5-15 ms of CPU) is a plain top-level
function that :mod:`oro_sync.auth.digest_pool` ships to worker processes,
and :func:`issue_ticket` (tests, the command line, the benchmarks) signs
with the very same function, so what is issued is what is checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import datetime, timezone

__all__ = [
    "ITERATIONS", "MAX_PASSWORD_BYTES", "InvalidSecretError", "compute_digest",
    "digest_matches", "issue_ticket", "merge_password_and_salt", "password_too_long",
    "validate_secret",
]

#: Symfony MessageDigestPasswordEncoder's default iteration count.
ITERATIONS = 5000
#: Symfony refuses to encode a raw password longer than this (bytes); it also
#: bounds the work an attacker can ask for with a huge nonce.
MAX_PASSWORD_BYTES = 4096


class InvalidSecretError(ValueError):
    """The application secret cannot be used as a Symfony salt."""


# ---------------------------------------------------------------- digest


def merge_password_and_salt(password: str, salt: str) -> str:
    """Symfony ``BasePasswordEncoder::mergePasswordAndSalt``.

    PHP's ``empty()`` treats ``""`` and ``"0"`` as empty, in which case the
    password is used unsalted; reproduced so digests stay identical.
    """
    if salt == "" or salt == "0":
        return password
    if "{" in salt or "}" in salt:
        raise InvalidSecretError("Cannot use { or } in salt (the sync secret).")
    return f"{password}{{{salt}}}"


def validate_secret(secret: str) -> None:
    """Raise :class:`InvalidSecretError` unless ``secret`` can sign tickets.

    Besides Symfony's brace rule, an empty secret is refused here: anonymous
    tickets are keyed by the secret alone, so an empty one would let anybody
    mint backend tickets.
    """
    if not isinstance(secret, str) or secret == "":
        raise InvalidSecretError("The sync secret must be a non-empty string.")
    merge_password_and_salt("", secret)


def compute_digest(nonce: str, created: str, password: str, secret: str,
                   iterations: int = ITERATIONS) -> str:
    """The ticket digest Oro computes (base64 of 64 raw sha512 bytes).

    Top-level and argument-only so it can run in a worker process.  Strings
    are hashed as UTF-8, like PHP hashes the bytes it was given.
    """
    salted = merge_password_and_salt(f"{nonce}|{created}|{password}", secret).encode("utf-8")
    sha512 = hashlib.sha512
    d = sha512(salted).digest()
    for _ in range(iterations - 1):
        d = sha512(d + salted).digest()
    return base64.b64encode(d).decode("ascii")


def digest_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison (Oro used ``===``; timing should not leak)."""
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))


def password_too_long(nonce: str, created: str, password: str) -> bool:
    """Symfony's ``isPasswordTooLong`` on the raw (unsalted) password."""
    return len(f"{nonce}|{created}|{password}".encode("utf-8")) > MAX_PASSWORD_BYTES


# ---------------------------------------------------------------- issuing


def _created_string(now: float | datetime | None) -> str:
    """``created`` as Oro writes it (``format('c')``: whole seconds, with an offset)."""
    if now is None:
        now = time.time()
    if isinstance(now, datetime):
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("issue_ticket needs an aware datetime (with an offset)")
        when = now
    else:
        when = datetime.fromtimestamp(now, timezone.utc)
    return when.replace(microsecond=0).isoformat()


def issue_ticket(secret: str, username: str = "", password_hash: str | None = None,
                 now: float | datetime | None = None, nonce: str | None = None) -> str:
    """Make a ticket Oro (and oro-sync) accepts.

    Anonymous/backend ticket: ``issue_ticket(secret)``.  User ticket:
    ``issue_ticket(secret, "admin", user_password_hash)``.  ``now`` is a
    POSIX timestamp (written as UTC, ``+00:00``) or an aware datetime (its
    offset is kept, like Oro's ``format('c')``); ``nonce`` defaults to 16
    random hex characters.
    """
    validate_secret(secret)
    if username:
        if password_hash is None:
            raise ValueError("a user ticket needs the user's password hash")
        password = password_hash
    else:
        if password_hash is not None:
            raise ValueError("an anonymous ticket is keyed by the secret; pass no password_hash")
        password = secret
    if nonce is None:
        nonce = secrets.token_hex(8)
    if ";" in nonce or not nonce:
        raise ValueError("the nonce must be non-empty and contain no ';'")
    created = _created_string(now)
    if password_too_long(nonce, created, password):
        raise ValueError("password hash too long for a ticket")
    digest = compute_digest(nonce, created, password, secret)
    text = f"{digest};{username};{nonce};{created}"
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
