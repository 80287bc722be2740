//! A VM's serial console log, kept bounded.
//!
//! The VMM appends guest output to `console.log` (QEMU opens it with
//! `append=on`), so a guest decides how fast it grows. The reaper calls
//! [`ConsoleLog::rotate_if_over`] every second, for VMMs that append (not
//! Firecracker, which writes at its own offset): past [`MAX_SEGMENT`] the
//! file is copied to `console.log.1` and truncated in place (the VMM keeps
//! appending to the same file). Disk use stays under two segments plus
//! one second of output. Readers use offsets into everything the console
//! ever held; `console.base` records where `console.log` starts in it.
//! Nothing here reads more than it returns: a reader gets at most
//! `max` bytes, a failed start only the [`tail`](ConsoleLog::tail).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Largest `console.log` before it is rotated.
pub const MAX_SEGMENT: u64 = 4 << 20;

/// Why a console read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The offset lies beyond what the console has held.
    #[error("offset {offset} is past the end of the console log ({end} bytes so far)")]
    PastEnd {
        /// The offset asked for.
        offset: u64,
        /// Bytes the console has held.
        end: u64,
    },
    /// A file could not be read.
    #[error("read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A chunk read from the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes.
    pub data: Vec<u8>,
    /// Where the next read starts.
    pub next_offset: u64,
}

/// The console files of one VM directory.
#[derive(Debug, Clone)]
pub struct ConsoleLog {
    current: PathBuf,
}

impl ConsoleLog {
    /// The log whose current segment is `current` (`<vm dir>/console.log`).
    pub fn new(current: impl Into<PathBuf>) -> Self {
        Self {
            current: current.into(),
        }
    }

    fn previous(&self) -> PathBuf {
        self.current.with_extension("log.1")
    }

    fn base_file(&self) -> PathBuf {
        self.current.with_extension("base")
    }

    /// Where `console.log` starts among all bytes the console held.
    fn base(&self) -> u64 {
        std::fs::read_to_string(self.base_file())
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Moves the current segment aside when it is over `max` bytes.
    pub fn rotate_if_over(&self, max: u64) -> std::io::Result<bool> {
        let len = match std::fs::metadata(&self.current) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if len <= max {
            return Ok(false);
        }
        let tmp = self.current.with_extension("log.1.tmp");
        let copied = std::io::copy(
            &mut File::open(&self.current)?.take(len),
            &mut File::create(&tmp)?,
        )?;
        std::fs::rename(&tmp, self.previous())?;
        // The new base first: a crash before the truncate repeats a segment
        // at two offsets rather than shifting every later offset.
        let base = self.base() + copied;
        let tmp = self.current.with_extension("base.tmp");
        std::fs::write(&tmp, format!("{base}\n"))?;
        std::fs::rename(&tmp, self.base_file())?;
        // What the guest wrote between the copy and here is lost: the
        // price of rotating a file another process appends to.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.current)?
            .set_len(0)?;
        Ok(true)
    }

    /// Up to `max` bytes from `offset`. An offset older than what is kept
    /// reads from the oldest kept byte; one past the end is refused.
    pub fn read(&self, offset: u64, max: u64) -> Result<Chunk, ConsoleError> {
        let base = self.base();
        let current_len = len_of(&self.current)?;
        let end = base + current_len;
        if offset > end {
            return Err(ConsoleError::PastEnd { offset, end });
        }
        let previous_len = len_of(&self.previous())?;
        let oldest = base.saturating_sub(previous_len);
        let offset = offset.max(oldest);
        let (path, at, until) = if offset < base {
            (self.previous(), offset - oldest, previous_len)
        } else {
            (self.current.clone(), offset - base, current_len)
        };
        let data = read_at(&path, at, max.min(until.saturating_sub(at)))?;
        Ok(Chunk {
            next_offset: offset + data.len() as u64,
            data,
        })
    }

    /// The last `max` bytes of the current segment (or of the previous one
    /// when the current is empty), for error messages.
    pub fn tail(&self, max: u64) -> Vec<u8> {
        [self.current.clone(), self.previous()]
            .iter()
            .find_map(|path| {
                let len = len_of(path).ok().filter(|l| *l > 0)?;
                read_at(path, len.saturating_sub(max), max).ok()
            })
            .unwrap_or_default()
    }
}

fn len_of(path: &Path) -> Result<u64, ConsoleError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(ConsoleError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_at(path: &Path, at: u64, max: u64) -> Result<Vec<u8>, ConsoleError> {
    let io = |source| ConsoleError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut buf = Vec::new();
    file.seek(SeekFrom::Start(at)).map_err(io)?;
    file.take(max).read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn a_console_that_keeps_growing_stays_under_two_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = ConsoleLog::new(&path);
        let mut total = 0u64;
        for i in 0..50u8 {
            append(&path, &[b'a' + i % 26; 1000]);
            total += 1000;
            log.rotate_if_over(4000).unwrap();
        }
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2 * 5000 + 64, "{on_disk} bytes kept");
        // Offsets count every byte ever written: the end is `total`.
        let end = log.read(total, 10).unwrap();
        assert_eq!(
            end,
            Chunk {
                data: Vec::new(),
                next_offset: total
            }
        );
        // Reading from 0 starts at the oldest byte kept; every byte read
        // is the one written at its offset.
        let first = log.read(0, 0).unwrap();
        assert!(first.next_offset > total - 10_000, "{}", first.next_offset);
        let mut offset = first.next_offset;
        while offset < total {
            let chunk = log.read(offset, 700).unwrap();
            assert!(!chunk.data.is_empty());
            for (k, byte) in chunk.data.iter().enumerate() {
                let at = offset + k as u64;
                assert_eq!(
                    *byte,
                    b'a' + u8::try_from(at / 1000 % 26).unwrap(),
                    "at {at}"
                );
            }
            offset = chunk.next_offset;
        }
        assert_eq!(offset, total);
        assert_eq!(log.tail(3), vec![b'a' + 49 % 26; 3]);
    }

    #[test]
    fn an_offset_past_the_end_is_refused_not_a_server_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = ConsoleLog::new(dir.path().join("console.log"));
        append(&dir.path().join("console.log"), b"boot\n");
        for offset in [6, 1 << 40, u64::MAX, 1 << 63] {
            let err = log.read(offset, 10).unwrap_err();
            assert!(matches!(err, ConsoleError::PastEnd { end: 5, .. }), "{err}");
        }
        assert_eq!(log.read(5, 10).unwrap().next_offset, 5);
        assert_eq!(log.read(2, 10).unwrap().data, b"ot\n");
    }

    #[test]
    fn no_console_yet_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = ConsoleLog::new(dir.path().join("console.log"));
        assert_eq!(
            log.read(0, 10).unwrap(),
            Chunk {
                data: Vec::new(),
                next_offset: 0
            }
        );
        assert!(log.tail(10).is_empty());
        assert!(!log.rotate_if_over(0).unwrap());
    }
}
