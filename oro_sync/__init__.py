"""oro-sync: a real-time WAMP WebSocket hub compatible with Oro's sync server."""

__version__ = "0.1.0"

SERVER_IDENT = f"oro-sync/{__version__}"
