"""Who may do what: every permission rule of the server, in one vocabulary.

Routes say who may PUBLISH (``publishers:``), WAMP v2 says who may
REGISTER procedures (``wamp2Registrations``); both used to have their own
words (``backend|users|anyone`` and ``nobody|backends|users|everyone``) and
their own checks.  There is now one set of rules, one check per rule:

``nobody``
    no connection at all;
``backend``
    connections with an anonymous (backend) ticket, i.e. the PHP
    application, which alone knows the secret that signs them;
``users``
    signed-in users, and backends;
``anyone``
    every connection, even one without a ticket.

``backends`` and ``everyone`` are accepted as other spellings of
``backend`` and ``anyone`` so that existing configurations keep working;
:func:`normalize_rule` turns any accepted spelling into the rule's name.

This module does not import the transports: the server hands
:func:`registration_permission` and :func:`publish_permission` to them as
plain callables.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = [
    "ALIASES", "ANYONE", "BACKEND", "NOBODY", "RULES", "USERS",
    "identity_allowed", "normalize_rule", "publish_permission",
    "registration_permission",
]

NOBODY, BACKEND, USERS, ANYONE = "nobody", "backend", "users", "anyone"
#: The rules, from the strictest.
RULES = (NOBODY, BACKEND, USERS, ANYONE)
#: Other accepted spellings (the words ``wamp2Registrations`` used).
ALIASES = {"backends": BACKEND, "everyone": ANYONE}

_SPELLINGS = {**{rule: rule for rule in RULES}, **ALIASES}


def _is_backend(identity: Any) -> bool:
    # getattr: a connection may have no identity yet (None).
    return bool(getattr(identity, "backend", False))


def _nobody(identity: Any) -> bool:
    return False


def _users(identity: Any) -> bool:
    return _is_backend(identity) or not getattr(identity, "anonymous", True)


def _anyone(identity: Any) -> bool:
    return True


_CHECKS: dict[str, Callable[[Any], bool]] = {
    NOBODY: _nobody, BACKEND: _is_backend, USERS: _users, ANYONE: _anyone,
}


def normalize_rule(text: object, setting: str = "rule") -> str:
    """The rule named by ``text`` (any accepted spelling), for config checks.

    Raises ``ValueError`` naming ``setting`` and the accepted words, so a
    typo in a configuration file says what would have been right.
    """
    rule = _SPELLINGS.get(text) if isinstance(text, str) else None
    if rule is None:
        aliases = ", ".join(f"{alias} (= {rule})" for alias, rule in ALIASES.items())
        raise ValueError(f"{setting} must be one of {', '.join(RULES)}"
                         f" (also accepted: {aliases}), not {text!r}")
    return rule


def identity_allowed(rule: str, identity: Any) -> bool:
    """Whether a connection with ``identity`` (an
    :class:`~oro_sync.identity.Identity`, or ``None`` before one is known)
    passes ``rule`` (any accepted spelling; ``ValueError`` otherwise)."""
    return _CHECKS[normalize_rule(rule)](identity)


def registration_permission(rule: str) -> Callable[[Any], bool]:
    """``may_register(identity)`` for the WAMP v2 router, checked once here
    so that a bad ``wamp2Registrations`` fails at start-up (``ValueError``)."""
    return _CHECKS[normalize_rule(rule, "registrations")]


def publish_permission(default: str = BACKEND) -> Callable[[Any, Any], bool]:
    """``may_publish(session, request)`` for the WAMP v1 layer.

    Backends may always publish: the PHP application is the publisher Oro
    was built around, so no route can lock it out (``nobody`` therefore
    means "only backends" here).  Anybody else is judged by the routed
    topic's ``publishers`` rule, or by ``default`` when the route sets none.
    A route rule that is not a known spelling (routing validates them, so
    this should not happen) lets only backends publish: fail closed.
    """
    default_check = _CHECKS[normalize_rule(default, "publishers")]

    def may_publish(session: Any, request: Any) -> bool:
        identity = session.identity
        if _is_backend(identity):
            return True
        publishers = request.route.publishers
        if not publishers:
            return default_check(identity)
        return _CHECKS[_SPELLINGS.get(publishers, NOBODY)](identity)

    return may_publish
