//! The `images` table.

use rusqlite::{OptionalExtension, Row, params};

use crate::{Store, StoreError};

/// One published image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Name (validated by the caller).
    pub name: String,
    /// `build` or `import`.
    pub source: String,
    /// The catalog kernel its VMs boot.
    pub kernel: String,
    /// Recipe hash, for built images.
    pub recipe_hash: Option<String>,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// RFC 3339.
    pub created_at: String,
}

fn row(r: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: r.get(0)?,
        source: r.get(1)?,
        kernel: r.get(2)?,
        recipe_hash: r.get(3)?,
        size_bytes: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const COLUMNS: &str = "name, source, kernel, recipe_hash, size_bytes, created_at";

impl Store {
    /// Inserts or replaces the row of `image.name`.
    pub fn upsert_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        self.lock()
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ),
                params![
                    image.name,
                    image.source,
                    image.kernel,
                    image.recipe_hash,
                    image.size_bytes,
                    image.created_at
                ],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// Every image, by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM images ORDER BY name"))
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt.query_map([], row).map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// One image by exact name.
    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE name = ?1"),
                [name],
                row,
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Removes an image row; whether one existed.
    pub fn delete_image(&self, name: &str) -> Result<bool, StoreError> {
        self.lock()
            .execute("DELETE FROM images WHERE name = ?1", [name])
            .map(|n| n > 0)
            .map_err(|e| self.sqlite(e))
    }

    /// Names of the images that boot `kernel`.
    pub fn images_using_kernel(&self, kernel: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT name FROM images WHERE kernel = ?1 ORDER BY name")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([kernel], |r| r.get(0))
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// Names of the VMs created from `image`.
    pub fn vms_using_image(&self, image: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT name FROM vms WHERE image = ?1 ORDER BY name")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([image], |r| r.get(0))
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, kernel: &str) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            source: "build".into(),
            kernel: kernel.into(),
            recipe_hash: Some("abc".into()),
            size_bytes: 42,
            created_at: "2026-11-24T09:00:00Z".into(),
        }
    }

    #[test]
    fn upsert_replaces_and_references_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store.upsert_image(&image("deb", "generic-6.1")).unwrap();
        let mut newer = image("deb", "generic-6.1");
        newer.size_bytes = 43;
        store.upsert_image(&newer).unwrap();
        assert_eq!(store.list_images().unwrap(), [newer.clone()]);
        assert_eq!(store.get_image("deb").unwrap(), Some(newer));
        assert_eq!(store.images_using_kernel("generic-6.1").unwrap(), ["deb"]);
        assert!(store.images_using_kernel("other").unwrap().is_empty());
        assert!(store.delete_image("deb").unwrap());
        assert!(!store.delete_image("deb").unwrap());
    }
}
