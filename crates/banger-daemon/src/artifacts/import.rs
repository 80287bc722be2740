//! Importing a local tarball or ext4 file as an image: the file is opened
//! once, judged as opened, and copied into staging.

use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_api::{Operation, OperationKind};
use banger_artifacts::image;

use super::ArtifactError;
use super::{Artifacts, DEFAULT_KERNEL, Done, KindKey, out_name};

impl Artifacts {
    /// Starts the import of a tarball or ext4 file as image `name`.
    pub fn import_image(
        self: &Arc<Self>,
        op_id: &str,
        name: &str,
        path: &Path,
        kernel: Option<&str>,
    ) -> Result<Operation, ArtifactError> {
        let kernel = kernel.unwrap_or(DEFAULT_KERNEL).to_owned();
        if self.catalog.kernel(&kernel).is_none() {
            return Err(ArtifactError::UnknownKernel(kernel));
        }
        let (opened, format) = open_import(path)?;
        if self.db.get_image(name)?.is_some()
            || self
                .inflight()
                .contains_key(&(KindKey::Image, name.to_owned()))
        {
            return Err(ArtifactError::Exists(format!(
                "image {name:?} already exists; delete it first or pick another name"
            )));
        }
        let opened = Mutex::new(opened);
        self.start(
            op_id,
            KindKey::Image,
            OperationKind::ImageImport,
            name,
            false,
            Box::new(move |_, out, env| {
                let name = out_name(out);
                let mut opened = banger_sys::wait::lock(&opened);
                match format {
                    Format::Ext4 => image::import_ext4(&name, &kernel, &mut opened, out, env),
                    Format::Tar => image::import_tar(&name, &kernel, &mut opened, out, env),
                }
                .map(|m| Done::Image(Box::new(m)))
            }),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Ext4,
}

/// Decides what an import file is from its first bytes.
/// Opens the file to import once and judges that open file: the path is
/// never looked up again, so it cannot be swapped (for a FIFO that would
/// hang the import, or a symlink to a file the user may not read) between
/// the check and the copy. `O_NOFOLLOW` refuses a symlink in the last
/// component and `O_NONBLOCK` keeps the open of a FIFO or device from
/// blocking, so the check can refuse it.
fn open_import(path: &Path) -> Result<(image::Opened, Format), ArtifactError> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if !path.is_absolute() {
        return Err(ArtifactError::Invalid(format!(
            "import path {} must be absolute",
            path.display()
        )));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                ArtifactError::Invalid(format!(
                    "{} is a symbolic link; give the path of the file itself",
                    path.display()
                ))
            } else {
                ArtifactError::Invalid(format!("cannot open {}: {e}", path.display()))
            }
        })?;
    let kind = file
        .metadata()
        .map_err(|e| ArtifactError::Invalid(format!("cannot read {}: {e}", path.display())))?
        .file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(ArtifactError::Invalid(format!(
            "{} is {what}; banger imports a regular file (a plain tar or an ext4 file)",
            path.display()
        )));
    }
    let mut head = [0u8; 512];
    let n = file.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    for (magic, what) in [
        (&[0x1f, 0x8b][..], "gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z'][..], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        (&[b'B', b'Z', b'h'][..], "bzip2"),
    ] {
        if head.starts_with(magic) {
            return Err(ArtifactError::Invalid(format!(
                "{} is {what}-compressed; decompress it first (banger imports a plain tar or an ext4 file)",
                path.display()
            )));
        }
    }
    let mut magic = [0u8; 2];
    let format = if file.seek(SeekFrom::Start(1080)).is_ok()
        && file.read_exact(&mut magic).is_ok()
        && magic == [0x53, 0xef]
    {
        Format::Ext4
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Format::Tar
    } else {
        return Err(ArtifactError::Invalid(format!(
            "{} is neither a tar archive nor an ext4 file system",
            path.display()
        )));
    };
    let opened = image::Opened {
        file,
        path: path.to_owned(),
    };
    Ok((opened, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_import_refuses_a_fifo_without_blocking_and_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path of our own temp dir.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Nobody writes to it: a blocking open would never return.
        let err = open_import(&fifo).unwrap_err();
        assert!(err.message().contains("is a FIFO"), "{}", err.message());
        let target = dir.path().join("t.tar");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link.tar");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_import(&link).unwrap_err();
        assert!(
            err.message().contains("is a symbolic link"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn open_import_tells_tar_ext4_and_compressed_apart() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("t.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "a", &b""[..]).unwrap();
        b.into_inner().unwrap();
        assert_eq!(open_import(&tar_path).unwrap().1, Format::Tar);

        let gz = dir.path().join("t.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(
            open_import(&gz)
                .unwrap_err()
                .message()
                .contains("gzip-compressed")
        );

        let ext4 = dir.path().join("fs.ext4");
        let mut bytes = vec![0u8; 2048];
        bytes[1080] = 0x53;
        bytes[1081] = 0xef;
        std::fs::write(&ext4, bytes).unwrap();
        assert_eq!(open_import(&ext4).unwrap().1, Format::Ext4);

        assert!(
            open_import(Path::new("rel.tar"))
                .unwrap_err()
                .message()
                .contains("absolute")
        );
        assert!(
            open_import(dir.path())
                .unwrap_err()
                .message()
                .contains("is a directory")
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(
            open_import(&junk)
                .unwrap_err()
                .message()
                .contains("neither")
        );
    }
}
