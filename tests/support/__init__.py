"""Helpers shared by the tests: clients, servers, services."""
