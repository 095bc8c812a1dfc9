"""twistd plugin dropin: makes ``twistd oro-sync`` available (logic is in oro_sync.tap)."""

from twisted.application.service import ServiceMaker

oroSync = ServiceMaker(
    "oro-sync",
    "oro_sync.tap",
    "Oro-compatible real-time WAMP v1 WebSocket server",
    "oro-sync",
)
