-- Published images. The files live in the cache directory; this row is
-- written after the directory is renamed into place, so a row always has
-- its files.
CREATE TABLE images (
    name        TEXT PRIMARY KEY,
    source      TEXT NOT NULL CHECK (source IN ('build', 'import')),
    kernel      TEXT NOT NULL,
    recipe_hash TEXT,
    size_bytes  INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
