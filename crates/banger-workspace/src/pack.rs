//! One tar stream of a checkout, for the guest's `tar -x`: entries owned
//! by root (the guest's git refuses a repository owned by someone else),
//! symlinks carried as symlinks and never followed, file contents streamed
//! (a 2 GiB file costs no memory).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::base::{Base, PREPARED_REF};
use crate::loose::{self, Loose};
use crate::repo::{Repo, RepoError};

/// What a pack carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// The work tree as the user sees it, and `.git`.
    WorkTree,
    /// `.git` alone: the guest checks a commit out itself.
    GitOnly,
}

/// The host checkout's state: its HEAD and the files a pack carries.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// HEAD's commit, if any.
    pub head: Option<String>,
    /// The branch HEAD is on, if any.
    pub branch: Option<String>,
    /// The work tree's files, relative to the top.
    pub files: Vec<PathBuf>,
    /// A digest of HEAD and every file's path, type, mode, size and
    /// modification time: when it changes, the host has moved on.
    pub fingerprint: String,
}

impl Snapshot {
    /// Reads `repo`'s state now (git, and a `stat` per file: no content).
    pub fn take(repo: &Repo) -> Result<Self, RepoError> {
        let mut snapshot = Self::unnamed(repo)?;
        snapshot.branch = repo.branch()?;
        Ok(snapshot)
    }

    /// [`Snapshot::fingerprint`] of `repo` now: one git fewer than
    /// [`Snapshot::take`] (the branch is not part of it), for a check that
    /// runs on every `vm exec`.
    pub fn fingerprint_now(repo: &Repo) -> Result<String, RepoError> {
        Ok(Self::unnamed(repo)?.fingerprint)
    }

    /// A snapshot without its branch.
    fn unnamed(repo: &Repo) -> Result<Self, RepoError> {
        let head = repo.head()?;
        // Each file's metadata as git listed it: one stat per file (this
        // runs on every `vm exec`).
        let listed = repo.stat_files()?;
        let mut digest = Sha256::new();
        digest.update(head.as_deref().unwrap_or("unborn").as_bytes());
        for (rel, m) in &listed {
            digest.update([0]);
            digest.update(rel.as_os_str().as_bytes());
            for n in [
                u64::from(m.mode()),
                m.size(),
                m.mtime().cast_unsigned(),
                m.mtime_nsec().cast_unsigned(),
            ] {
                digest.update(n.to_le_bytes());
            }
        }
        let files = listed.into_iter().map(|(rel, _)| rel).collect();
        let fingerprint = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            head,
            branch: None,
            files,
            fingerprint,
        })
    }
}

/// Counts of what a pack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packed {
    /// Entries written.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
}

/// Writes `contents` of `repo` (as `snapshot` lists them) to `out` as one
/// tar stream with paths relative to the top, for a disk built on the
/// host (`mke2fs -d`), where a file costs next to nothing: loose objects
/// go as they are (packing them would be the slowest step). A work tree
/// goes with its `base` ([`Base::of`], built before the stream starts:
/// the receiver waits on no hashing).
pub fn pack(
    repo: &Repo,
    snapshot: &Snapshot,
    contents: Contents,
    base: Option<&Base>,
    out: impl Write,
) -> Result<Packed, RepoError> {
    write(repo, snapshot, contents, base, None, out)
}

/// The paths (relative to the top) of the git object files named in
/// `names` (relative to `.git/objects`, as a guest listed them), keeping
/// only content-addressed ones.
pub fn held_paths(names: &[String]) -> HashSet<PathBuf> {
    names
        .iter()
        .filter(|n| banger_api::workspace::is_object_name(n))
        .map(|n| Path::new(".git/objects").join(n))
        .collect()
}

/// What a receiving guest already holds, by path from the top.
#[derive(Debug, Default)]
pub struct Held {
    /// Object files (from [`held_paths`]).
    pub objects: HashSet<PathBuf>,
    /// Work-tree files (from [`Base::held_files`]), each with whether the
    /// guest's copy is executable.
    pub files: HashMap<PathBuf, bool>,
    /// The guest's `refs/banger/prepared` those files are as of
    /// ([`banger_api::workspace::HeldObjects::prepared`]): without it no
    /// file is left out.
    pub prepared: Option<String>,
}

/// [`pack`] for a running guest's `tar -x`, which pays for every file it
/// creates (under TCG): loose objects under 1 MiB go as one pack. What is
/// `held` is left out: the receiver links its own copies, and checks the
/// manifests ([`banger_api::workspace::HELD_MANIFEST`] and
/// [`banger_api::workspace::HELD_FILES_MANIFEST`], written before the end
/// marker) of what was left out.
pub fn pack_for_guest(
    repo: &Repo,
    snapshot: &Snapshot,
    contents: Contents,
    base: Option<&Base>,
    held: &Held,
    out: impl Write,
) -> Result<Packed, RepoError> {
    write(repo, snapshot, contents, base, Some(held), out)
}

/// [`pack`] (`held` is `None`) or [`pack_for_guest`].
fn write(
    repo: &Repo,
    snapshot: &Snapshot,
    contents: Contents,
    base: Option<&Base>,
    held: Option<&Held>,
    out: impl Write,
) -> Result<Packed, RepoError> {
    let nothing = Held::default();
    let mut packer = Packer {
        top: repo.top(),
        tar: tar::Builder::new(out),
        done: Packed::default(),
        config: None,
        dirs: HashSet::new(),
        held: held.unwrap_or(&nothing),
        left_out: Vec::new(),
        files_left_out: Vec::new(),
    };
    packer.tar.mode(tar::HeaderMode::Complete);
    let base = base.filter(|_| contents == Contents::WorkTree);
    let base_objects = base.map(Base::objects);
    let (mut small, mut big) = packer.sort_loose(base_objects.as_deref())?;
    if held.is_none() {
        big.append(&mut small);
    }
    std::thread::scope(|scope| {
        // Made while the rest is sent: the guest takes the tree long
        // before the pack would hold it up.
        let making = scope.spawn(|| loose::pack(repo.top(), base_objects.as_deref(), &small));
        packer.config = Some(repo.guest_config()?);
        packer.tree(Path::new(".git"))?;
        packer.config = None;
        if let Some(base) = base {
            // A file that changes between the base and its packing is
            // carried changed, and an export shows that change too.
            packer.bytes(
                Path::new(".git").join(PREPARED_REF).as_path(),
                format!("{}\n", base.commit).as_bytes(),
            )?;
        }
        if contents == Contents::WorkTree {
            for rel in &snapshot.files {
                // A nested repository's `.git` directory goes whole.
                packer.tree(rel)?;
            }
        }
        packer.loose(&big)?;
        match making.join() {
            Ok(Ok(Some(made))) => packer.made(&made)?,
            Ok(Ok(None)) => {}
            // git could not pack them (an old git, a damaged object):
            // they go as they are, as the guest's git would find them.
            Ok(Err(_)) | Err(_) => packer.loose(&small)?,
        }
        Ok::<_, RepoError>(())
    })?;
    if let (false, Some(prepared)) = (packer.files_left_out.is_empty(), &packer.held.prepared) {
        // The commit first: the guest takes the rest only while its
        // workspace is still as prepared then.
        let mut manifest = prepared.as_bytes().to_vec();
        manifest.push(0);
        for rel in &packer.files_left_out {
            manifest.extend_from_slice(rel.as_os_str().as_bytes());
            manifest.push(0);
        }
        packer.bytes(
            Path::new(banger_api::workspace::HELD_FILES_MANIFEST),
            &manifest,
        )?;
    }
    if !packer.left_out.is_empty() {
        let mut manifest = packer.left_out.join("\n");
        manifest.push('\n');
        packer.bytes(
            Path::new(banger_api::workspace::HELD_MANIFEST),
            manifest.as_bytes(),
        )?;
    }
    packer.marker()?;
    packer
        .tar
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|source| RepoError::Read {
            path: repo.top().to_owned(),
            source,
        })?;
    Ok(packer.done)
}

struct Packer<'a, W: Write> {
    top: &'a Path,
    tar: tar::Builder<W>,
    done: Packed,
    /// `.git/config` as the guest gets it, while `.git` is packed.
    config: Option<Vec<u8>>,
    /// Directories written so far: every entry's parents come before it
    /// (`mke2fs -d` makes none itself, unlike `tar -x`).
    dirs: HashSet<PathBuf>,
    /// What the receiver holds: left out.
    held: &'a Held,
    /// Object files left out, relative to `.git/objects`.
    left_out: Vec<String>,
    /// Work-tree files left out.
    files_left_out: Vec<PathBuf>,
}

impl<W: Write> Packer<'_, W> {
    /// A directory and everything under it, never following a symlink.
    fn tree(&mut self, rel: &Path) -> Result<(), RepoError> {
        if rel == Path::new(".git/refs/banger")
            || rel == Path::new(banger_api::workspace::END_MARKER)
            || rel == Path::new(banger_api::workspace::HELD_MANIFEST)
            || rel == Path::new(banger_api::workspace::HELD_FILES_MANIFEST)
        {
            // banger's own refs and files come from this prepare, not
            // the host.
            return Ok(());
        }
        if rel.parent() == Some(Path::new(".git/objects"))
            && rel
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            // Loose objects: sorted into a pack or sent as files, apart.
            return Ok(());
        }
        let path = self.top.join(rel);
        let meta = self.entry(rel)?;
        if !meta.is_some_and(|m| m.is_dir()) {
            return Ok(());
        }
        let read = |source| RepoError::Read {
            path: path.clone(),
            source,
        };
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .map_err(read)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read)?;
        names.sort();
        for name in names {
            self.tree(&rel.join(name))?;
        }
        Ok(())
    }

    /// The directories above `rel` not written yet, outermost first, with
    /// the host's modes (or 0755 for one only banger makes).
    fn parents(&mut self, rel: &Path) -> Result<(), RepoError> {
        let missing: Vec<PathBuf> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty() && !self.dirs.contains(*a))
            .map(Path::to_owned)
            .collect();
        for dir in missing.into_iter().rev() {
            let mode = std::fs::symlink_metadata(self.top.join(&dir))
                .ok()
                .filter(std::fs::Metadata::is_dir)
                .map_or(0o755, |m| m.mode() & 0o7777);
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mode(mode);
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            self.tar
                .append_data(&mut header, &dir, std::io::empty())
                .map_err(|source| RepoError::Read {
                    path: self.top.join(&dir),
                    source,
                })?;
            self.dirs.insert(dir);
        }
        Ok(())
    }

    /// One entry; its metadata when it was carried (sockets, fifos and
    /// devices are not: a `.git` may hold fsmonitor's socket).
    fn entry(&mut self, rel: &Path) -> Result<Option<std::fs::Metadata>, RepoError> {
        if self.leaves_out(rel) {
            return Ok(None);
        }
        self.parents(rel)?;
        if self.dirs.contains(rel) {
            // A directory already written (as a parent): its content
            // follows.
            return Ok(std::fs::symlink_metadata(self.top.join(rel)).ok());
        }
        let path = self.top.join(rel);
        let err = |source| RepoError::Read {
            path: path.clone(),
            source,
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Gone since git listed it: the guest sees it gone too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let kind = meta.file_type();
        let executable = meta.mode() & 0o100 != 0;
        if kind.is_file()
            && self.held.prepared.is_some()
            && self.held.files.get(rel) == Some(&executable)
        {
            self.files_left_out.push(rel.to_owned());
            return Ok(None);
        }
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(meta.mtime().max(0).cast_unsigned());
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(err)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            self.tar
                .append_link(&mut header, rel, &target)
                .map_err(err)?;
        } else if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            self.tar
                .append_data(&mut header, rel, std::io::empty())
                .map_err(err)?;
            self.dirs.insert(rel.to_owned());
        } else if kind.is_file() && rel == Path::new(".git/config") && self.config.is_some() {
            let config = self.config.take().unwrap_or_default();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(config.len() as u64);
            self.tar
                .append_data(&mut header, rel, config.as_slice())
                .map_err(err)?;
        } else if kind.is_file() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(err)?;
            let size = file.metadata().map_err(err)?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            // Exactly `size` bytes, whatever happens to the file meanwhile:
            // a short read is an error, never a torn archive.
            let body = Exact {
                inner: file.take(size),
                left: size,
            };
            self.tar.append_data(&mut header, rel, body).map_err(err)?;
            self.done.bytes += size;
        } else {
            return Ok(None);
        }
        self.done.entries += 1;
        Ok(Some(meta))
    }
}

impl<W: Write> Packer<'_, W> {
    /// Whether `rel` is an object file the receiver holds (and so is left
    /// out, and listed in the manifest).
    fn leaves_out(&mut self, rel: &Path) -> bool {
        if !self.held.objects.contains(rel) {
            return false;
        }
        let name = rel
            .strip_prefix(".git/objects")
            .ok()
            .and_then(Path::to_str)
            .unwrap_or_default();
        self.left_out.push(name.to_owned());
        true
    }

    /// The last entry: the guest takes the tree as whole only when it came.
    fn marker(&mut self) -> Result<(), RepoError> {
        self.bytes(Path::new(banger_api::workspace::END_MARKER), b"")
    }

    /// A root-owned file at `rel` holding `data`.
    fn bytes(&mut self, rel: &Path, data: &[u8]) -> Result<(), RepoError> {
        self.parents(rel)?;
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        self.tar
            .append_data(&mut header, rel, data)
            .map_err(|source| RepoError::Read {
                path: self.top.join(rel),
                source,
            })
    }

    /// The repository's loose objects and those in `extra` (the base's),
    /// the receiver's left out: those to pack, and those to send as files.
    fn sort_loose(&mut self, extra: Option<&Path>) -> Result<(Vec<Loose>, Vec<Loose>), RepoError> {
        let mut all = loose::list(&self.top.join(".git/objects"))?;
        if let Some(extra) = extra {
            all.extend(loose::list(extra)?);
        }
        let mut seen = HashSet::new();
        let (mut small, mut big) = (Vec::new(), Vec::new());
        for object in all {
            if !seen.insert(object.name.clone())
                || self.leaves_out(&Path::new(".git/objects").join(&object.name))
            {
                continue;
            }
            if object.size < loose::PACK_BELOW {
                small.push(object);
            } else {
                big.push(object);
            }
        }
        Ok((small, big))
    }

    /// Loose objects, as files.
    fn loose(&mut self, objects: &[Loose]) -> Result<(), RepoError> {
        for object in objects {
            let rel = Path::new(".git/objects").join(&object.name);
            self.file_as(&object.path, &rel)?;
        }
        Ok(())
    }

    /// A pack made of loose objects, with its index.
    fn made(&mut self, made: &loose::Made) -> Result<(), RepoError> {
        for ext in ["pack", "idx"] {
            let rel = Path::new(".git/objects/pack").join(format!("{}.{ext}", made.name));
            if !self.leaves_out(&rel) {
                self.file_as(&made.file(ext), &rel)?;
            }
        }
        Ok(())
    }

    /// The file at `path`, read-only and root's, at `rel`; streamed (a
    /// big untracked file makes a big object).
    fn file_as(&mut self, path: &Path, rel: &Path) -> Result<(), RepoError> {
        let err = |source| RepoError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(0o444);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        let body = Exact {
            inner: file.take(size),
            left: size,
        };
        self.parents(rel)?;
        self.tar.append_data(&mut header, rel, body).map_err(err)?;
        self.done.entries += 1;
        self.done.bytes += size;
        Ok(())
    }
}

/// A reader that fails instead of ending early.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was packed",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
