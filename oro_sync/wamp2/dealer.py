"""WAMP v2 routed RPC: clients register procedures, other clients call them.

The basic profile's dealer: one callee per procedure URI (``match: exact``,
no shared registrations), CALL → INVOCATION → YIELD / ERROR → RESULT /
ERROR.  Server procedures (the 0.8-style RPC API) take precedence: a client
cannot register a URI the server already serves.  Who may register is the
factory's ``wamp2Registrations`` rule (by default only backends, as only
backends may publish to Oro's routed topics).  Bounded: each caller has at
most :data:`MAX_PENDING_CALLS` calls in flight, and everything a session
registered or awaited is cleaned up when it leaves (its callers get
``wamp.error.canceled``).
"""

from __future__ import annotations

from typing import Any

from oro_sync.wamp2 import messages as m

#: Calls one session may have in flight to client callees.
MAX_PENDING_CALLS = 256

ERROR_PROCEDURE_EXISTS = "wamp.error.procedure_already_exists"
ERROR_CANCELED = "wamp.error.canceled"

#: ``wamp2Registrations`` values: who may REGISTER.
REGISTRATION_RULES = ("nobody", "backends", "users", "everyone")


def may_register(rule: str, identity: Any) -> bool:
    if rule == "everyone":
        return True
    if rule == "users":
        return not identity.anonymous or identity.backend
    if rule == "backends":
        return identity.backend
    return False


class Dealer:
    """Registrations and calls in flight, shared by a factory's v2 sessions."""

    def __init__(self, new_id: Any):
        self._new_id = new_id
        #: procedure URI -> (registration id, callee session)
        self.registrations: dict[str, tuple[int, Any]] = {}
        self._uris: dict[int, str] = {}
        #: invocation id -> (caller session, CALL request id, callee session)
        self.invocations: dict[int, tuple[Any, int, Any]] = {}

    def register(self, callee: Any, msg: m.Register) -> str:
        if msg.procedure in self.registrations:
            return m.error(m.REGISTER, msg.request_id, ERROR_PROCEDURE_EXISTS,
                           [f"{msg.procedure} is already registered"])
        reg = self._new_id()
        self.registrations[msg.procedure] = (reg, callee)
        self._uris[reg] = msg.procedure
        callee.registrations.add(reg)
        return m.registered(msg.request_id, reg)

    def unregister(self, callee: Any, msg: m.Unregister) -> str:
        if msg.registration not in callee.registrations:
            return m.error(m.UNREGISTER, msg.request_id, m.ERROR_NO_SUCH_REGISTRATION)
        self._drop_registration(callee, msg.registration)
        return m.unregistered(msg.request_id)

    def call(self, caller: Any, msg: m.Call) -> bool:
        """Route ``msg`` to its callee; False when no client registered it."""
        entry = self.registrations.get(msg.procedure)
        if entry is None:
            return False
        reg, callee = entry
        if caller.pending_calls >= MAX_PENDING_CALLS:
            caller.send(m.error(m.CALL, msg.request_id, ERROR_CANCELED,
                                [f"at most {MAX_PENDING_CALLS} calls in flight per session"]))
            return True
        invocation = self._new_id()
        self.invocations[invocation] = (caller, msg.request_id, callee)
        caller.pending_calls += 1
        callee.send(m.invocation(invocation, reg, msg.args, msg.kwargs))
        return True

    def yielded(self, callee: Any, msg: m.Yield) -> None:
        pending = self._take(callee, msg.request_id)
        if pending is not None:
            caller, request_id = pending
            caller.send(m.result(request_id, msg.args, msg.kwargs))

    def failed(self, callee: Any, msg: m.Error) -> None:
        pending = self._take(callee, msg.request_id)
        if pending is not None:
            caller, request_id = pending
            caller.send(m.error(m.CALL, request_id, msg.error, msg.args, msg.kwargs))

    def session_closed(self, session: Any) -> None:
        for reg in list(session.registrations):
            self._drop_registration(session, reg)
        for invocation, (caller, request_id, callee) in list(self.invocations.items()):
            if caller is session:
                del self.invocations[invocation]  # a late YIELD is then ignored
            elif callee is session:
                del self.invocations[invocation]
                caller.pending_calls -= 1
                caller.send(m.error(m.CALL, request_id, ERROR_CANCELED, ["the callee left"]))

    def _take(self, callee: Any, invocation: int) -> tuple[Any, int] | None:
        # An unknown id is not a violation: the caller may have left meanwhile.
        entry = self.invocations.get(invocation)
        if entry is None or entry[2] is not callee:
            return None
        del self.invocations[invocation]
        caller, request_id, _ = entry
        caller.pending_calls -= 1
        return caller, request_id

    def _drop_registration(self, callee: Any, reg: int) -> None:
        callee.registrations.discard(reg)
        uri = self._uris.pop(reg, None)
        if uri is not None and self.registrations.get(uri, (None,))[0] == reg:
            del self.registrations[uri]
