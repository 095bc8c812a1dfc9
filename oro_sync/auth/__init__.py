"""Authentication: Oro sync tickets, users, origins."""
