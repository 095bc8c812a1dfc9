"""Writing a peer's bytes straight to the kernel while Twisted holds none.

This is the one module that reads Twisted's write-buffer internals
(``dataBuffer``, ``_tempDataBuffer``, ``_aborting`` of
``twisted.internet.tcp.Connection``), so that the core's outbox can stay
free of them; ``tests/test_outbox.py`` pins the behaviour on real sockets,
and a Twisted upgrade that renames them makes :func:`batches` fall back to
``transport.write`` rather than break.

Why: ``transport.write`` buffers, registers the socket with epoll, waits a
reactor pass, ``send()``s and unregisters: three system calls per receiver
per turn.  When Twisted holds nothing for the peer, one ``send()`` does the
same; only what the kernel refuses goes through ``transport.write``, so
Twisted's buffering, back-pressure and producer flow control take over
exactly when they are needed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol


def batches(transport: Any) -> bool:
    """Whether writes to ``transport`` go through an outbox: real network
    transports do; anything else (a test's StringTransport) is written to
    at once, as it always was."""
    return isinstance(transport, (tcp.Connection, TLSMemoryBIOProtocol))


def _direct_socket(transport: Any) -> Any:
    """The socket to ``send()`` on, or None to always use ``transport.write``.

    Only Twisted's own TCP connections qualify.  A TLS connection (``TLS``
    set by ``startTLS``, or a TLS protocol wrapped around the TCP one)
    encrypts in ``write`` and must always get the bytes there.
    """
    if (isinstance(transport, tcp.Connection) and hasattr(transport, "_tempDataBuffer")
            and hasattr(transport, "_aborting")):
        return transport.socket
    return None


class KernelWriter:
    """The outbox writer of one transport (``Outbox(clock, writer=KernelWriter)``)."""

    __slots__ = ("transport", "_socket")

    def __init__(self, transport: Any):
        self.transport = transport
        self._socket = _direct_socket(transport)

    def __call__(self, data: bytes) -> None:
        transport = self.transport
        sock = self._socket
        if sock is None:
            transport.write(data)
            return
        if transport._aborting:
            # After abortConnection() Twisted keeps ``connected`` until the next
            # turn but sends nothing more: drop the bytes rather than buffer them.
            return
        if (transport.dataBuffer or transport._tempDataBuffer or not transport.connected
                or transport.disconnecting or transport.TLS):
            transport.write(data)
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Reset or broken pipe: let Twisted find out on its own write
            # path, which closes the connection the usual way.
            transport.write(data)
            return
        if sent < len(data):
            transport.write(data[sent:])


def buffered_bytes(transport: Any) -> int:
    """Bytes a Twisted transport holds for its peer (its kernel buffer aside).

    Follows wrapping transports (TLS) down to the socket's FileDescriptor;
    0 when the transport does not say.
    """
    for _ in range(4):
        if hasattr(transport, "_tempDataLen"):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        transport = getattr(transport, "transport", None)
        if transport is None:
            break
    return 0
