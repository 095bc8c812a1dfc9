"""WAMP v2 routed RPC: clients register procedures, other clients call them.

The basic profile's dealer: one callee per procedure URI (``match: exact``,
no shared registrations), CALL → INVOCATION → YIELD / ERROR → RESULT /
ERROR, and CANCEL → ERROR ``wamp.error.canceled`` to the caller and
INTERRUPT to the callee; the same for a call whose ``timeout`` option (in
milliseconds) runs out.  A caller asking ``receive_progress`` gets each
YIELD ``progress: true`` of the callee as a progressive RESULT.  Server procedures (the 0.8-style RPC API) take
precedence: a client cannot register a URI the server serves, nor one under
the reserved ``wamp.`` prefix.

Who may register is the router's ``may_register`` rule (injected by the
server: by default only backends, as only backends may publish to Oro's
routed topics); any session may call.  A callee that is a backend learns who called (caller
session id, authid and authrole in the INVOCATION details); other callees
do not, so users cannot see each other -- except that a backend caller's
``disclose_me`` is honoured (a user's is not).

Callees are protected from callers: at most ``max_callee_invocations`` calls
in flight to one callee, each INVOCATION at most ``max_call_size`` bytes;
callers beyond get ERROR ``oro_sync.error.callee_busy`` or
``oro_sync.error.call_too_large`` (so many large calls to a slow callee can
no longer fill its output and get it cut off as a slow consumer).

Bounded: a session holds at most :data:`MAX_REGISTRATIONS` registrations of
URIs of at most :data:`MAX_URI_CHARS` characters and has at most
:data:`MAX_PENDING_CALLS` calls in flight.  Calls in flight are indexed per
caller and per callee, so a session that leaves costs only its own calls.
"""

from __future__ import annotations

from typing import Any

from oro_sync.wamp2 import messages as m

#: Calls one session may have in flight to client callees.
MAX_PENDING_CALLS = 256
#: Registrations one session may hold, and the longest URI it may register.
MAX_REGISTRATIONS = 100
MAX_URI_CHARS = 512

ERROR_PROCEDURE_EXISTS = "wamp.error.procedure_already_exists"
ERROR_CANCELED = m.ERROR_CANCELED
ERROR_TOO_MANY_CALLS = "oro_sync.error.too_many_calls"
ERROR_TOO_MANY_REGISTRATIONS = "oro_sync.error.too_many_registrations"
ERROR_CALLEE_BUSY = "oro_sync.error.callee_busy"
ERROR_CALL_TOO_LARGE = "oro_sync.error.call_too_large"

#: Defaults of the callee's protection (see Dealer).
MAX_CALLEE_INVOCATIONS = 32
MAX_CALL_SIZE = 64 * 1024


class _Invocation:
    __slots__ = ("id", "caller", "request_id", "callee", "progress", "timer")

    def __init__(self, id: int, caller: Any, request_id: int, callee: Any, progress: bool = False):
        self.id, self.caller, self.request_id, self.callee = id, caller, request_id, callee
        self.progress = progress
        self.timer: Any = None


def call_options(msg: m.Call) -> tuple[float, bool, bool] | str:
    """(timeout in seconds or 0, receive_progress, disclose_me), or why the options are bad."""
    options = msg.options
    timeout = options.get("timeout", 0)
    if type(timeout) not in (int, float) or not 0 <= timeout < 2 ** 31:
        return "option timeout must be a number of milliseconds"
    flags = []
    for key in ("receive_progress", "disclose_me"):
        value = options.get(key, False)
        if not isinstance(value, bool):
            return f"option {key} must be a bool"
        flags.append(value)
    return timeout / 1000.0, flags[0], flags[1]


class Dealer:
    """Registrations and calls in flight, shared by a factory's v2 sessions.

    Sessions carry their own indexes: ``registrations`` (a set of ids),
    ``calls`` (CALL request id -> invocation, as caller) and ``invocations``
    (invocation id -> invocation, as callee).
    """

    def __init__(self, new_id: Any, clock: Any = None, *,
                 max_callee_invocations: int = MAX_CALLEE_INVOCATIONS,
                 max_call_size: int = MAX_CALL_SIZE):
        self._new_id = new_id
        #: For call timeouts (None: the reactor, looked up when first needed).
        self._clock = clock
        #: A callee's output is protected from its callers: at most this many
        #: invocations in flight to it, each at most ``max_call_size`` bytes
        #: as the callee's serializer encodes it (0: no bound); callers beyond
        #: get an ERROR, the callee stays.
        self.max_callee_invocations = max_callee_invocations
        self.max_call_size = max_call_size
        #: procedure URI -> (registration id, callee session)
        self.registrations: dict[str, tuple[int, Any]] = {}
        self._uris: dict[int, str] = {}
        #: Calls in flight, all sessions (for tests and metrics).
        self.in_flight = 0

    # -- callees ------------------------------------------------------------------

    def register(self, callee: Any, msg: m.Register) -> list:
        uri = msg.procedure
        if uri.startswith("wamp."):
            return m.error(m.REGISTER, msg.request_id, m.ERROR_INVALID_URI, ["wamp.* URIs are reserved"])
        if len(uri) > MAX_URI_CHARS:
            return m.error(m.REGISTER, msg.request_id, m.ERROR_INVALID_URI,
                           [f"at most {MAX_URI_CHARS} characters"])
        if len(callee.registrations) >= MAX_REGISTRATIONS:
            return m.error(m.REGISTER, msg.request_id, ERROR_TOO_MANY_REGISTRATIONS,
                           [f"at most {MAX_REGISTRATIONS} registrations per session"])
        if uri in self.registrations:
            return m.error(m.REGISTER, msg.request_id, ERROR_PROCEDURE_EXISTS, [f"{uri} is already registered"])
        reg = self._new_id()
        self.registrations[uri] = (reg, callee)
        self._uris[reg] = uri
        callee.registrations.add(reg)
        return m.registered(msg.request_id, reg)

    def unregister(self, callee: Any, msg: m.Unregister) -> list:
        if msg.registration not in callee.registrations:
            return m.error(m.UNREGISTER, msg.request_id, m.ERROR_NO_SUCH_REGISTRATION)
        self._drop_registration(callee, msg.registration)
        return m.unregistered(msg.request_id)

    def yielded(self, callee: Any, msg: m.Yield) -> None:
        if msg.options.get("progress") is True:
            inv = callee.invocations.get(msg.request_id)
            if inv is not None and inv.progress:  # dropped for a caller that did not ask
                inv.caller.send(m.progress(inv.request_id, msg.args, msg.kwargs))
            return
        inv = self._finish(callee.invocations.get(msg.request_id))
        if inv is not None:
            inv.caller.send(m.result(inv.request_id, msg.args, msg.kwargs))

    def failed(self, callee: Any, msg: m.Error) -> None:
        inv = self._finish(callee.invocations.get(msg.request_id))
        if inv is not None:
            inv.caller.send(m.error(m.CALL, inv.request_id, msg.error, msg.args, msg.kwargs))

    # -- callers ------------------------------------------------------------------

    def call(self, caller: Any, msg: m.Call) -> bool:
        """Route ``msg`` to its callee; False when no client registered it."""
        entry = self.registrations.get(msg.procedure)
        if entry is None:
            return False
        reg, callee = entry
        options = call_options(msg)
        if isinstance(options, str):
            caller.send(m.error(m.CALL, msg.request_id, m.ERROR_INVALID_ARGUMENT, [options]))
            return True
        timeout, receive_progress, disclose_me = options
        if len(caller.calls) >= MAX_PENDING_CALLS or msg.request_id in caller.calls:
            caller.send(m.error(m.CALL, msg.request_id, ERROR_TOO_MANY_CALLS,
                                [f"at most {MAX_PENDING_CALLS} calls in flight per session, with distinct ids"]))
            return True
        limit = self.max_callee_invocations
        if limit and len(callee.invocations) >= limit:
            caller.send(m.error(m.CALL, msg.request_id, ERROR_CALLEE_BUSY,
                                [f"{msg.procedure} has {limit} calls in flight: try again later"]))
            return True
        inv = _Invocation(self._new_id(), caller, msg.request_id, callee, receive_progress)
        details: dict = {}
        # A trusted callee learns who called; a backend caller may disclose
        # itself to anyone; users are never shown to users.
        if getattr(callee.identity, "backend", False) or (
                disclose_me and getattr(caller.identity, "backend", False)):
            identity = caller.identity
            details = {"caller": int(caller.session_id), "caller_authid": identity.username,
                       "caller_authrole": "anonymous" if identity.anonymous else "user"}
        if receive_progress:
            details["receive_progress"] = True
        if timeout:
            details["timeout"] = msg.options["timeout"]
        # Encoded once, in the callee's serializer: the size bound applies to
        # what would enter the callee's output queue.
        data = callee.encode(m.invocation(inv.id, reg, msg.args, msg.kwargs, details or None))
        if data is None:
            caller.send(m.error(m.CALL, msg.request_id, m.ERROR_RUNTIME,
                                ["the call's arguments cannot be sent to its callee"]))
            return True
        if self.max_call_size and len(data) > self.max_call_size:
            caller.send(m.error(m.CALL, msg.request_id, ERROR_CALL_TOO_LARGE,
                                [f"call arguments over {self.max_call_size} bytes"]))
            return True
        caller.calls[msg.request_id] = inv
        callee.invocations[inv.id] = inv
        self.in_flight += 1
        if timeout:
            inv.timer = self._clock_now().callLater(timeout, self._timed_out, inv)
        callee.send_encoded(data)
        return True

    def _clock_now(self) -> Any:
        if self._clock is None:
            from twisted.internet import reactor
            self._clock = reactor
        return self._clock

    def _timed_out(self, inv: _Invocation) -> None:
        inv.timer = None
        if self._finish(inv) is not None:
            inv.callee.send(m.interrupt(inv.id))
            inv.caller.send(m.error(m.CALL, inv.request_id, ERROR_CANCELED, ["call timed out"]))

    def cancel(self, caller: Any, msg: m.Cancel) -> None:
        inv = self._finish(caller.calls.get(msg.request_id))
        if inv is not None:  # an unknown id: the answer already went out
            inv.callee.send(m.interrupt(inv.id))
            caller.send(m.error(m.CALL, inv.request_id, ERROR_CANCELED, ["canceled by the caller"]))

    # -- sessions leaving -----------------------------------------------------------

    def session_closed(self, session: Any) -> None:
        for reg in list(session.registrations):
            self._drop_registration(session, reg)
        # Every entry is removed before anything is sent: a send may close
        # another session and re-enter here.
        # The caller left: its callees stop working for nobody (INTERRUPT),
        # and their in-flight slots are free again.
        abandoned = [inv for inv in list(session.calls.values()) if self._finish(inv) is not None]
        canceled = [inv for inv in list(session.invocations.values()) if self._finish(inv) is not None]
        for inv in abandoned:
            if inv.callee is not session:
                inv.callee.send(m.interrupt(inv.id))
        for inv in canceled:
            inv.caller.send(m.error(m.CALL, inv.request_id, ERROR_CANCELED, ["the callee left"]))

    # -- internals ----------------------------------------------------------------

    def _finish(self, inv: _Invocation | None) -> _Invocation | None:
        """Forget ``inv`` on both sides; None if it was already finished."""
        if inv is None or inv.caller.calls.get(inv.request_id) is not inv:
            return None
        del inv.caller.calls[inv.request_id]
        inv.callee.invocations.pop(inv.id, None)
        if inv.timer is not None:
            if inv.timer.active():
                inv.timer.cancel()
            inv.timer = None
        self.in_flight -= 1
        return inv

    def _drop_registration(self, callee: Any, reg: int) -> None:
        callee.registrations.discard(reg)
        uri = self._uris.pop(reg, None)
        if uri is not None and self.registrations.get(uri, (None,))[0] == reg:
            del self.registrations[uri]
