"""The adjustments oro-sync makes to Autobahn for speed keep its behaviour."""

from __future__ import annotations

import txaio
from autobahn.websocket import protocol as ab_protocol
from twisted.trial import unittest

from oro_sync.websocket.connection import WampConnection
from oro_sync.websocket.factory import WampServerFactory


class PformatTests(unittest.TestCase):
    def test_formats_only_for_debug(self) -> None:
        WampServerFactory()  # a factory applies the adjustment
        level = txaio.get_global_log_level()
        self.addCleanup(txaio.set_global_log_level, level)
        txaio.set_global_log_level("info")
        self.assertIn("not formatted", ab_protocol.pformat({"a": 1}))
        txaio.set_global_log_level("debug")
        self.assertEqual(ab_protocol.pformat({"a": 1}), "{'a': 1}")


class SharedOptionsTests(unittest.TestCase):
    def test_options_are_class_attributes_of_a_factory_protocol(self) -> None:
        factory = WampServerFactory(maxMessageSize=1234)
        self.assertEqual(factory.protocol.maxMessagePayloadSize, 1234)
        self.assertFalse(factory.protocol.failByDrop)
        other = WampServerFactory(maxMessageSize=99)
        self.assertEqual(other.protocol.maxMessagePayloadSize, 99)
        self.assertEqual(factory.protocol.maxMessagePayloadSize, 1234)  # not shared across factories
        factory.setProtocolOptions(autoPingInterval=7)
        self.assertEqual(factory.protocol.autoPingInterval, 7)
        self.assertTrue(issubclass(factory.protocol, WampConnection))
