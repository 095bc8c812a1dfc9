"""The tables of an Oro database that oro-sync reads, as Oro creates them
(the columns that matter; PostgreSQL), filled for tests."""

from __future__ import annotations

from typing import Any

ORO_USER = (
    "CREATE TABLE oro_user ("
    " id SERIAL NOT NULL, organization_id INT DEFAULT NULL,"
    " username VARCHAR(255) NOT NULL, email VARCHAR(255) NOT NULL,"
    " password VARCHAR(255) NOT NULL, salt VARCHAR(255) DEFAULT NULL,"
    " enabled BOOLEAN NOT NULL, PRIMARY KEY(id))")
# OroConfigBundle's installer.
ORO_CONFIG = (
    "CREATE TABLE oro_config (id SERIAL NOT NULL, entity VARCHAR(255) DEFAULT NULL,"
    " record_id INT DEFAULT NULL, PRIMARY KEY(id))")
ORO_CONFIG_VALUE = (
    "CREATE TABLE oro_config_value (id SERIAL NOT NULL, config_id INT DEFAULT NULL,"
    " name VARCHAR(255) NOT NULL, section VARCHAR(50) DEFAULT NULL, text_value TEXT DEFAULT NULL,"
    " object_value TEXT DEFAULT NULL, array_value TEXT DEFAULT NULL, type VARCHAR(20) NOT NULL,"
    " created_at TIMESTAMP(0) WITHOUT TIME ZONE NOT NULL,"
    " updated_at TIMESTAMP(0) WITHOUT TIME ZONE NOT NULL, PRIMARY KEY(id),"
    " FOREIGN KEY (config_id) REFERENCES oro_config (id) ON DELETE CASCADE)")
# OroSyncBundle 6.1.0.6 / 7.0.0.1 migrations.
SERVER_STATE = (
    "CREATE TABLE oro_sync_websocket_server_state (id VARCHAR(15) NOT NULL,"
    " updated_at TIMESTAMP(0) WITHOUT TIME ZONE DEFAULT NULL, PRIMARY KEY(id))")


def create_oro_tables(db: Any, application_url: str | None, state: bool = True) -> None:
    """Oro's users, configuration (global scope, and an organization scope
    that must not be read) and, with ``state``, the websocket server state."""
    for statement in (ORO_USER, ORO_CONFIG, ORO_CONFIG_VALUE):
        db.execute(statement)
    db.execute("INSERT INTO oro_user (id, organization_id, username, email, password, enabled)"
               " VALUES (1, 1, 'admin', 'admin@example.com', 'hash-of-admin', TRUE)")
    db.execute("INSERT INTO oro_config (id, entity, record_id) VALUES (1, 'organization', 1),"
               " (2, 'app', 0)")
    db.execute("INSERT INTO oro_config_value (config_id, name, section, text_value, type,"
               " created_at, updated_at) VALUES (1, 'application_url', 'oro_ui',"
               " 'https://org-scope.example.com', 'scalar', now(), now())")
    if application_url is not None:
        set_application_url(db, application_url)
    if state:
        db.execute(SERVER_STATE)
        db.execute("INSERT INTO oro_sync_websocket_server_state (id, updated_at)"
                   " VALUES ('system_config', '2026-01-01 10:00:00')")


def set_application_url(db: Any, url: str) -> None:
    """What saving System Configuration > General Setup > Application Settings does."""
    if db.execute("SELECT 1 FROM oro_config_value WHERE config_id = 2 AND name = 'application_url'"):
        db.execute("UPDATE oro_config_value SET text_value = %s, updated_at = now()"
                   " WHERE config_id = 2 AND name = 'application_url'", (url,))
    else:
        db.execute("INSERT INTO oro_config_value (config_id, name, section, text_value, type,"
                   " created_at, updated_at) VALUES (2, 'application_url', 'oro_ui', %s,"
                   " 'scalar', now(), now())", (url,))


def bump_server_state(db: Any) -> None:
    """What Oro 6.1.7+ does after a system configuration change."""
    db.execute("UPDATE oro_sync_websocket_server_state"
               " SET updated_at = updated_at + interval '1 second' WHERE id = 'system_config'")
