-- Images pulled from OCI and Docker registries have source 'oci'. SQLite
-- cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE images_new (
    name        TEXT PRIMARY KEY,
    source      TEXT NOT NULL CHECK (source IN ('build', 'import', 'oci')),
    kernel      TEXT NOT NULL,
    recipe_hash TEXT,
    size_bytes  INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
INSERT INTO images_new (name, source, kernel, recipe_hash, size_bytes, created_at)
    SELECT name, source, kernel, recipe_hash, size_bytes, created_at FROM images;
DROP TABLE images;
ALTER TABLE images_new RENAME TO images;
