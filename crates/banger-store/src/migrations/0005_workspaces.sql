-- A VM's workspace as recorded at its last prepare: one row per VM at most,
-- gone with the VM.
CREATE TABLE workspaces (
    vm_id        TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
    host_path    TEXT NOT NULL,
    guest_path   TEXT NOT NULL,
    commit_id    TEXT,
    branch       TEXT,
    checkout     TEXT,
    fingerprint  TEXT NOT NULL,
    prepared_at  TEXT NOT NULL
);
