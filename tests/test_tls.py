"""Native TLS: the server on a Twisted ``ssl:`` endpoint, clients over wss://."""

from __future__ import annotations

import datetime
import os

from twisted.internet import defer, endpoints, reactor, ssl
from twisted.trial import unittest

from oro_sync.websocket.kernel_write import buffered_bytes
from tests.support.client import connect
from tests.support.oro_server import start_oro_server


def self_signed(directory: str) -> tuple[str, str, bytes]:
    """A key and a certificate for localhost/127.0.0.1, made for this test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with open(cert_path, "wb") as f:
        f.write(pem)
    return key_path, cert_path, pem


class TlsTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_wss_subscribe_and_backend_publish(self):
        server = start_oro_server(self)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, cert, pem = self_signed(directory)
        endpoint = endpoints.serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        port = yield endpoint.listen(server.factory)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        tls = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(pem))
        user = yield connect(number, path=server.path("admin"), tls=tls)
        self.addCleanup(user.abort)
        backend = yield connect(number, path=server.path(), tls=tls)
        self.addCleanup(backend.abort)
        user.subscribe("oro/maintenance")
        call_id = user.call("urn:round-trip")
        answer = yield user.next_message()
        self.assertEqual(answer[:2], [4, call_id])
        backend.publish("oro/maintenance", {"isOn": True}, [], [])
        event = yield user.next_message()
        self.assertEqual(event, [8, "oro/maintenance", {"isOn": True}])
        # Really TLS, and the slow-consumer accounting reaches the socket's
        # buffer under the TLS layer.
        from twisted.protocols.tls import TLSMemoryBIOProtocol
        session = server.factory.hub.sessions[user.session_id]
        self.assertIsInstance(session.connection.transport, TLSMemoryBIOProtocol)
        socket_transport = session.connection.transport.transport
        socket_transport.write(b"")  # nothing queued: 0 either way
        self.assertEqual(buffered_bytes(session.connection.transport), buffered_bytes(socket_transport))
        self.assertTrue(hasattr(socket_transport, "_tempDataLen"))
