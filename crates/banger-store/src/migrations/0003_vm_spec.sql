-- What a VM is made of and where it sits on the bridge. The tap name is
-- kept durably (not only in handles.json) so that a crash never leaks it.
CREATE TABLE vms_new (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL CHECK (state IN ('created', 'running', 'stopped', 'error')),
    image       TEXT NOT NULL,
    kernel      TEXT NOT NULL,
    vcpus       INTEGER NOT NULL CHECK (vcpus BETWEEN 1 AND 64),
    memory_mib  INTEGER NOT NULL CHECK (memory_mib BETWEEN 128 AND 1048576),
    disk_bytes  INTEGER NOT NULL CHECK (disk_bytes > 0),
    nat         INTEGER NOT NULL CHECK (nat IN (0, 1)),
    ip          TEXT NOT NULL UNIQUE,
    tap         TEXT NOT NULL UNIQUE,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- No release ever created VM rows; any that exist cannot be booted.
DROP TABLE vms;
ALTER TABLE vms_new RENAME TO vms;
