"""WAMP v2 (``wamp.2.json``) on the same port, hub and handlers as WAMP v1."""
