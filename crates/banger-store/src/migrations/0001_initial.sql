-- The history of applied migrations; PRAGMA user_version mirrors its maximum.
CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- Durable intent for each VM. Transient kernel handles (pid, tap) are not
-- stored here: they live in the daemon's memory and the VM's handles.json.
CREATE TABLE vms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    state      TEXT NOT NULL CHECK (state IN ('created', 'running', 'stopped', 'error')),
    image      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
