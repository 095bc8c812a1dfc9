"""WAMP v2 numbers and URIs: message type ids, the id range, error and close reasons.

Both directions of the protocol use them (a client sends ERROR and GOODBYE,
and so does the router), so they live here rather than in the parser
(:mod:`oro_sync.wamp2.messages`) or the encoders
(:mod:`oro_sync.wamp2.encode`); each imports this module and neither imports
the other's internals.
"""

from __future__ import annotations

__all__ = [
    "HELLO", "WELCOME", "ABORT", "CHALLENGE", "AUTHENTICATE", "GOODBYE", "ERROR", "PUBLISH", "PUBLISHED", "SUBSCRIBE",
    "SUBSCRIBED", "UNSUBSCRIBE", "UNSUBSCRIBED", "EVENT", "CALL", "CANCEL", "RESULT",
    "REGISTER", "REGISTERED", "UNREGISTER", "UNREGISTERED", "INVOCATION", "INTERRUPT", "YIELD",
    "MAX_ID", "ERROR_PROTOCOL_VIOLATION", "ERROR_INVALID_URI", "ERROR_INVALID_ARGUMENT",
    "ERROR_NO_SUCH_REALM", "ERROR_NO_SUCH_SUBSCRIPTION", "ERROR_NO_SUCH_PROCEDURE",
    "ERROR_NO_SUCH_REGISTRATION", "ERROR_NOT_AUTHORIZED", "ERROR_RUNTIME", "ERROR_CANCELED", "ERROR_NO_AUTH_METHOD", "CLOSE_NORMAL",
    "CLOSE_GOODBYE_AND_OUT", "CLOSE_SYSTEM_SHUTDOWN",
]

HELLO = 1
WELCOME = 2
ABORT = 3
CHALLENGE = 4
AUTHENTICATE = 5
GOODBYE = 6
ERROR = 8
PUBLISH = 16
PUBLISHED = 17
SUBSCRIBE = 32
SUBSCRIBED = 33
UNSUBSCRIBE = 34
UNSUBSCRIBED = 35
EVENT = 36
CALL = 48
CANCEL = 49
RESULT = 50
REGISTER = 64
REGISTERED = 65
UNREGISTER = 66
UNREGISTERED = 67
INVOCATION = 68
INTERRUPT = 69
YIELD = 70

#: Largest id a WAMP peer may use (2^53, exact in every JSON implementation).
MAX_ID = 2 ** 53

# Error and close reason URIs of the WAMP v2 specification.
ERROR_PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
ERROR_INVALID_URI = "wamp.error.invalid_uri"
ERROR_INVALID_ARGUMENT = "wamp.error.invalid_argument"
ERROR_NO_SUCH_REALM = "wamp.error.no_such_realm"
ERROR_NO_SUCH_SUBSCRIPTION = "wamp.error.no_such_subscription"
ERROR_NO_SUCH_PROCEDURE = "wamp.error.no_such_procedure"
ERROR_NO_SUCH_REGISTRATION = "wamp.error.no_such_registration"
ERROR_NOT_AUTHORIZED = "wamp.error.not_authorized"
ERROR_RUNTIME = "wamp.error.runtime_error"
ERROR_CANCELED = "wamp.error.canceled"
ERROR_NO_AUTH_METHOD = "wamp.error.no_auth_method"
CLOSE_NORMAL = "wamp.close.normal"
CLOSE_GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
CLOSE_SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"
