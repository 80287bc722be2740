//! Bounds on what one pull may unpack. A registry is hostile: a layer can
//! decompress to far more than it weighs, hold millions of entries (each
//! one kept while the layers are planned), or declare a PAX or GNU
//! long-name record of gigabytes that the `tar` crate would read whole
//! before any check. [`Guarded`] sits between the decompressor and the
//! `tar` crate, follows the archive's block structure as the bytes pass,
//! and fails the read (naming the bound) before any of that happens.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bounds, per pull (all layers together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Uncompressed tar bytes.
    pub max_bytes: u64,
    /// Tar entries (headers, long-name and PAX records included).
    pub max_entries: u64,
    /// Largest PAX or GNU long-name/long-link record.
    pub max_record: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
            max_record: 1 << 20,
        }
    }
}

/// What a pull has unpacked so far, shared by its layers' readers.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    bytes: Arc<AtomicU64>,
    entries: Arc<AtomicU64>,
}

/// A decompressed layer read under [`UnpackLimits`].
pub struct Guarded<R> {
    inner: R,
    limits: UnpackLimits,
    budget: Budget,
    /// The header block being collected.
    header: [u8; 512],
    filled: usize,
    /// Bytes of the current entry's data and padding still to pass.
    skip: u64,
    /// Data of a PAX record being read (its size is capped first), to
    /// learn a `size` it sets for the next entry, as the tar crate does.
    pax: Option<(Vec<u8>, usize)>,
    /// The size a PAX record set for the next entry.
    next_size: Option<u64>,
}

impl<R> std::fmt::Debug for Guarded<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("limits", &self.limits)
            .field("skip", &self.skip)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Guarded<R> {
    /// `inner` counted against `budget`.
    pub fn new(inner: R, limits: UnpackLimits, budget: Budget) -> Self {
        Self {
            inner,
            limits,
            budget,
            header: [0; 512],
            filled: 0,
            skip: 0,
            pax: None,
            next_size: None,
        }
    }

    fn follow(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let k = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                if let Some((data, want)) = &mut self.pax {
                    let take = k.min(want.saturating_sub(data.len()));
                    data.extend_from_slice(&bytes[..take]);
                    if data.len() == *want {
                        let (data, _) = self.pax.take().unwrap_or_default();
                        self.next_size = pax_size(&data)?;
                    }
                }
                self.skip -= k as u64;
                bytes = &bytes[k..];
                continue;
            }
            let k = (512 - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + k].copy_from_slice(&bytes[..k]);
            self.filled += k;
            bytes = &bytes[k..];
            if self.filled == 512 {
                self.filled = 0;
                self.on_header()?;
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> std::io::Result<()> {
        if self.header.iter().all(|b| *b == 0) {
            // End-of-archive blocks.
            return Ok(());
        }
        let entries = self.budget.entries.fetch_add(1, Ordering::Relaxed) + 1;
        if entries > self.limits.max_entries {
            return Err(refused(format!(
                "the image has more than {} tar entries (config image_max_entries)",
                self.limits.max_entries
            )));
        }
        let size = header_size(&self.header)
            .ok_or_else(|| refused("a tar header has an unreadable size".into()))?;
        let kind = self.header[156];
        if matches!(kind, b'L' | b'K' | b'x' | b'g') && size > self.limits.max_record {
            return Err(refused(format!(
                "a {} record of {size} bytes, more than the {} allowed",
                if matches!(kind, b'x' | b'g') {
                    "PAX"
                } else {
                    "GNU long-name"
                },
                self.limits.max_record
            )));
        }
        if kind == b'S' {
            // Extension blocks follow the header uncounted by its size:
            // the guard could not follow them, so it refuses them.
            return Err(refused("GNU sparse entries are not supported".into()));
        }
        // A PAX `size` (read above) is the size the tar crate uses for the
        // entry that follows it; meta records themselves keep theirs.
        let size = if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            size
        } else {
            self.next_size.take().unwrap_or(size)
        };
        if kind == b'x' && size > 0 {
            // Bounded by max_record just above.
            let want = usize::try_from(size).unwrap_or(usize::MAX);
            self.pax = Some((Vec::with_capacity(want), want));
        }
        self.skip = size.div_ceil(512).saturating_mul(512);
        Ok(())
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.budget.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limits.max_bytes {
            return Err(refused(format!(
                "the image unpacks to more than {} bytes (config image_max_unpacked_gib)",
                self.limits.max_bytes
            )));
        }
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

fn refused(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// The size field of a tar header: octal text, or base-256 when its first
/// byte has the high bit set (GNU, for sizes past 8 GiB). Strict: leading
/// spaces, octal digits, then only NULs and spaces. Anything the tar crate
/// might read another way (a tab, a sign) is refused, so the guard and
/// the parser behind it never disagree on where the next header is.
fn header_size(header: &[u8; 512]) -> Option<u64> {
    let field = &header[124..136];
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(n);
    }
    let start = field.iter().take_while(|b| **b == b' ').count();
    let digits = field[start..]
        .iter()
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .count();
    if !field[start + digits..]
        .iter()
        .all(|b| matches!(b, 0 | b' '))
    {
        return None;
    }
    let text = &field[start..start + digits];
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 8).ok()
}

/// The `size` a PAX record sets, if any; records the guard cannot read the
/// way the tar crate would (a sparse layout, a malformed `size`) refuse.
fn pax_size(data: &[u8]) -> std::io::Result<Option<u64>> {
    let mut size = None;
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.map_err(|_| refused("a malformed PAX record".into()))?;
        let key = ext
            .key()
            .map_err(|_| refused("a PAX key that is not UTF-8".into()))?;
        if key.starts_with("GNU.sparse") {
            return Err(refused("GNU sparse entries are not supported".into()));
        }
        if key == "size" {
            let value = ext
                .value()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| refused("a PAX size that is not a number".into()))?;
            size = Some(value);
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar stream: `(name, type, data size)` headers, data of zeros.
    fn archive(entries: &[(&str, u8, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, size) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(tar::EntryType::new(*kind));
            h.set_size(*size);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.resize(
                out.len() + usize::try_from(size.div_ceil(512) * 512).unwrap(),
                0,
            );
        }
        out.extend_from_slice(&[0; 1024]);
        out
    }

    /// Reads `bytes` through the guard in odd-sized pieces, as a
    /// decompressor might hand them over.
    fn read_all(bytes: &[u8], limits: UnpackLimits) -> std::io::Result<u64> {
        let mut guard = Guarded::new(bytes, limits, Budget::default());
        let mut buf = [0u8; 333];
        let mut total = 0;
        loop {
            match guard.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    }

    const SMALL: UnpackLimits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 10,
        max_record: 4096,
    };

    #[test]
    fn an_ordinary_archive_passes_whole() {
        let tar = archive(&[
            ("etc", b'5', 0),
            ("etc/passwd", b'0', 700),
            ("big", b'0', 5000),
        ]);
        assert_eq!(read_all(&tar, SMALL).unwrap(), tar.len() as u64);
        // And the tar crate reads it back through the guard.
        let guarded = Guarded::new(&tar[..], SMALL, Budget::default());
        assert_eq!(tar::Archive::new(guarded).entries().unwrap().count(), 3);
    }

    #[test]
    fn a_huge_long_name_or_pax_record_is_refused_before_it_is_read() {
        for kind in [b'L', b'K', b'x', b'g'] {
            // Declared at 1 GiB; only its header is ever produced.
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::new(kind));
            h.set_size(1 << 30);
            h.set_cksum();
            let err = read_all(h.as_bytes(), SMALL).unwrap_err().to_string();
            assert!(
                err.contains("1073741824 bytes, more than the 4096"),
                "{err}"
            );
        }
        let tar = archive(&[("././@LongLink", b'L', 100), ("x", b'0', 0)]);
        assert!(read_all(&tar, SMALL).is_ok());
    }

    #[test]
    fn too_many_entries_or_bytes_across_layers_are_refused() {
        let many: Vec<(String, u8, u64)> = (0..11).map(|i| (format!("f{i}"), b'0', 0)).collect();
        let many: Vec<(&str, u8, u64)> =
            many.iter().map(|(n, k, s)| (n.as_str(), *k, *s)).collect();
        let err = read_all(&archive(&many), SMALL).unwrap_err().to_string();
        assert!(err.contains("more than 10 tar entries"), "{err}");
        let err = read_all(&archive(&[("big", b'0', 2 << 20)]), SMALL)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unpacks to more than 1048576 bytes"), "{err}");
        // One budget for all layers: two layers of six entries are twelve.
        let budget = Budget::default();
        let six: Vec<(String, u8, u64)> = (0..6).map(|i| (format!("g{i}"), b'0', 0)).collect();
        let six: Vec<(&str, u8, u64)> = six.iter().map(|(n, k, s)| (n.as_str(), *k, *s)).collect();
        let layer = archive(&six);
        let mut first = Guarded::new(&layer[..], SMALL, budget.clone());
        std::io::copy(&mut first, &mut std::io::sink()).unwrap();
        let mut second = Guarded::new(&layer[..], SMALL, budget);
        assert!(std::io::copy(&mut second, &mut std::io::sink()).is_err());
    }

    /// The guard's idea of where entries start must be the tar crate's:
    /// a PAX record that resizes the next entry hides a 1 GiB long-name
    /// record inside what the header alone calls data.
    #[test]
    fn a_pax_size_is_followed_as_the_tar_crate_follows_it() {
        let mut out = Vec::new();
        // PAX record: the next entry has size 0 whatever its header says.
        let record = b"10 size=0\n";
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_cksum();
        out.extend_from_slice(pax.as_bytes());
        out.extend_from_slice(record);
        out.resize(out.len().div_ceil(512) * 512, 0);
        // Its header claims 4096 bytes of data...
        let mut file = tar::Header::new_ustar();
        file.set_path("x").unwrap();
        file.set_size(4096);
        file.set_cksum();
        out.extend_from_slice(file.as_bytes());
        // ...where the tar crate reads the next header: a huge long name.
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_size(1 << 30);
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        let err = read_all(&out, SMALL).unwrap_err().to_string();
        assert!(
            err.contains("GNU long-name record of 1073741824 bytes"),
            "{err}"
        );
    }

    #[test]
    fn sizes_the_tar_crate_might_read_otherwise_and_sparse_entries_are_refused() {
        let mut h = [0u8; 512];
        h[124..136].copy_from_slice(b"\t0000001750\0");
        assert_eq!(header_size(&h), None);
        h[124..136].copy_from_slice(b"0000001750x\0");
        assert_eq!(header_size(&h), None);
        h[124..136].copy_from_slice(b"  000001750 ");
        assert_eq!(header_size(&h), Some(1000));
        let mut sparse = tar::Header::new_gnu();
        sparse.set_entry_type(tar::EntryType::GNUSparse);
        sparse.set_size(0);
        sparse.set_cksum();
        let err = read_all(sparse.as_bytes(), SMALL).unwrap_err().to_string();
        assert!(err.contains("sparse"), "{err}");
        assert!(pax_size(b"22 GNU.sparse.major=1\n").is_err());
        assert_eq!(pax_size(b"11 size=42\n").unwrap(), Some(42));
    }

    #[test]
    fn sizes_are_read_in_octal_and_base_256() {
        let mut h = [0u8; 512];
        h[124..136].copy_from_slice(b"00000001750\0");
        assert_eq!(header_size(&h), Some(1000));
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]);
        assert_eq!(header_size(&h), Some(0x1000));
    }
}
