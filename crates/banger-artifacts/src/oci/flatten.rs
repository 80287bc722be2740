//! Flattening an image's layers into one root file system tarball: later
//! layers replace earlier entries, `.wh.<name>` deletes one, `.wh..wh..opq`
//! empties a directory of what lower layers put there, and hard links may
//! point into lower layers. Owners, modes, times and xattrs (PAX records)
//! are copied from the layers; nothing is unpacked to the host, so nothing
//! loses its owner and no hostile path can touch the host.
//!
//! Two passes over the (decompressed) layers: the first builds the final
//! tree and refuses what may not be in it; the second writes it, every
//! directory first (so each parent precedes its children) and then the
//! other entries in layer order, their data streamed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::limits::{Budget, Guarded, UnpackLimits};
use crate::policy::Refusal;
use crate::tarscan::{TarSummary, check_path};

/// One layer blob, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob on disk.
    pub path: PathBuf,
    /// Its media type (which compression).
    pub media_type: String,
    /// Its digest, for messages.
    pub digest: String,
}

/// Why flattening failed.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// An entry of a layer is refused; nothing is published.
    #[error("layer {layer} ({digest}): entry {entry:?} refused: {why}")]
    Refused {
        /// 1-based position of the layer.
        layer: usize,
        /// Its digest.
        digest: String,
        /// The entry's name as in the layer.
        entry: String,
        /// Why.
        why: String,
    },
    /// A layer could not be read (corrupt, or not a tar).
    #[error("layer {layer} ({digest}): {what}")]
    Read {
        /// 1-based position of the layer.
        layer: usize,
        /// Its digest.
        digest: String,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("write {}", path.display())]
    Write {
        /// The output tarball.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Pos {
    layer: usize,
    entry: usize,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File,
    Symlink,
    /// A hard link to the version `target` of another path.
    Link {
        target: Pos,
    },
    Other,
}

#[derive(Debug, Clone)]
struct Version {
    pos: Pos,
    kind: Kind,
    /// The name the entry had; for links, the name of the data's version.
    path: Vec<u8>,
}

/// The paths of one archive, relative to its root, without `./`, empty or
/// `.` components; the root itself is the empty path.
fn normalize(raw: &[u8]) -> Result<Vec<u8>, Refusal> {
    check_path(raw)?;
    let parts: Vec<&[u8]> = raw
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    Ok(parts.join(&b'/'))
}

fn parent(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|b| *b == b'/')
        .map_or(&[][..], |i| &path[..i])
}

fn name(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|b| *b == b'/')
        .map_or(path, |i| &path[i + 1..])
}

fn under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() && !path.is_empty()
        || path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Opens a layer blob decompressed, by its media type (gzip, zstd, or a
/// plain tar).
/// Everything read is held to `limits`, counted in `budget`.
fn open(
    layer: &Layer,
    limits: UnpackLimits,
    budget: &Budget,
) -> std::io::Result<Guarded<Box<dyn Read>>> {
    let file = BufReader::new(File::open(&layer.path)?);
    let media = layer.media_type.as_str();
    let decompressed: Box<dyn Read> = if media.ends_with("gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if media.ends_with("zstd") {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(file)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        )
    } else if media.ends_with("tar") {
        Box::new(file)
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("media type {media} is not a tar layer banger can read"),
        ));
    };
    Ok(Guarded::new(decompressed, limits, budget.clone()))
}

/// PAX records kept with an entry (its extended attributes).
type Pax = Vec<(String, Vec<u8>)>;

/// The final tree: path -> winning version.
struct Tree {
    table: BTreeMap<Vec<u8>, Version>,
    /// Directory headers, with their PAX records, by path.
    dirs: HashMap<Vec<u8>, (Header, Pax)>,
    /// Symbolic links' targets, by path.
    links: HashMap<Vec<u8>, Vec<u8>>,
    /// The text of each os-release file met, by path.
    os_release: HashMap<Vec<u8>, String>,
}

impl Tree {
    fn remove_subtree(&mut self, dir: &[u8], below_layer: usize) {
        let doomed: Vec<Vec<u8>> = self
            .table
            .range(dir.to_vec()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .filter(|(p, v)| under(p, dir) && v.pos.layer < below_layer)
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.table.remove(&p);
        }
    }
}

fn pax_records(entry: &mut tar::Entry<'_, impl Read>) -> std::io::Result<Pax> {
    let Some(exts) = entry.pax_extensions()? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ext in exts {
        let ext = ext?;
        let Ok(key) = ext.key() else { continue };
        // Only extended attributes: the path, link, size and times are
        // written afresh from the header.
        if key.starts_with("SCHILY.xattr.") {
            out.push((key.to_owned(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Builds the final tree of `layers`, refusing hostile entries.
fn plan(layers: &[Layer], limits: UnpackLimits) -> Result<Tree, FlattenError> {
    let budget = Budget::default();
    let mut tree = Tree {
        table: BTreeMap::new(),
        dirs: HashMap::new(),
        links: HashMap::new(),
        os_release: HashMap::new(),
    };
    for (li, layer) in layers.iter().enumerate() {
        let read_err = |what: &str| {
            let what = what.to_owned();
            move |source| FlattenError::Read {
                layer: li + 1,
                digest: layer.digest.clone(),
                what,
                source,
            }
        };
        let mut archive =
            tar::Archive::new(open(layer, limits, &budget).map_err(read_err("open"))?);
        for (ei, entry) in archive.entries().map_err(read_err("read"))?.enumerate() {
            let mut entry = entry.map_err(read_err("read an entry"))?;
            let raw = entry.path_bytes().into_owned();
            let refuse = |why: String| FlattenError::Refused {
                layer: li + 1,
                digest: layer.digest.clone(),
                entry: lossy(&raw),
                why,
            };
            let path = normalize(&raw).map_err(|r| refuse(r.to_string()))?;
            let pos = Pos {
                layer: li,
                entry: ei,
            };
            let base = name(&path);
            if base == b".wh..wh..opq" {
                tree.remove_subtree(parent(&path), li);
                continue;
            }
            if let Some(hidden) = base.strip_prefix(b".wh.") {
                let mut target = parent(&path).to_vec();
                if !target.is_empty() {
                    target.push(b'/');
                }
                target.extend_from_slice(hidden);
                if tree.table.get(&target).is_some_and(|v| v.pos.layer < li) {
                    tree.table.remove(&target);
                }
                tree.remove_subtree(&target, li);
                continue;
            }
            if path.is_empty() {
                // The root directory itself: the file system makes it.
                continue;
            }
            // Every parent must be a directory of the tree: a path through
            // a symlink would be written wherever the link points.
            let mut ancestor = parent(&path);
            while !ancestor.is_empty() {
                match tree.table.get(ancestor).map(|v| &v.kind) {
                    Some(Kind::Symlink) => {
                        return Err(refuse(format!(
                            "its parent {:?} is a symbolic link: the entry would be written through it",
                            lossy(ancestor)
                        )));
                    }
                    Some(Kind::Dir) | None => {}
                    Some(_) => {
                        return Err(refuse(format!(
                            "its parent {:?} is not a directory",
                            lossy(ancestor)
                        )));
                    }
                }
                ancestor = parent(ancestor);
            }
            let header = entry.header();
            let kind = match header.entry_type() {
                EntryType::Directory => Kind::Dir,
                EntryType::Regular | EntryType::Continuous => Kind::File,
                EntryType::Symlink => Kind::Symlink,
                EntryType::Fifo => Kind::Other,
                kind @ (EntryType::Char | EntryType::Block) => {
                    crate::policy::check_device(kind, header).map_err(|r| refuse(r.to_string()))?;
                    Kind::Other
                }
                EntryType::Link => {
                    let raw_target = entry
                        .link_name_bytes()
                        .ok_or_else(|| refuse("hard link without a target".into()))?
                        .into_owned();
                    let target = normalize(&raw_target).map_err(|why| {
                        refuse(format!("hard link target {:?}: {why}", lossy(&raw_target)))
                    })?;
                    let version = tree.table.get(&target).ok_or_else(|| {
                        refuse(format!(
                            "hard link to {:?}, which no earlier entry made",
                            lossy(&target)
                        ))
                    })?;
                    let target = match &version.kind {
                        Kind::Link { target } => *target,
                        Kind::File => version.pos,
                        _ => {
                            return Err(refuse(format!(
                                "hard link to {:?}, which is not a regular file",
                                lossy(&target)
                            )));
                        }
                    };
                    Kind::Link { target }
                }
                other => {
                    return Err(refuse(format!("unsupported entry type {other:?}")));
                }
            };
            if matches!(kind, Kind::File)
                && matches!(path.as_slice(), b"etc/os-release" | b"usr/lib/os-release")
            {
                let mut text = String::new();
                let _ = (&mut entry).take(64 << 10).read_to_string(&mut text);
                tree.os_release.insert(path.clone(), text);
            }
            if matches!(kind, Kind::Symlink) {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                tree.links.insert(path.clone(), target);
            }
            if matches!(kind, Kind::Dir) {
                let pax = pax_records(&mut entry).map_err(read_err("read PAX records"))?;
                tree.dirs
                    .insert(path.clone(), (entry.header().clone(), pax));
            } else {
                // A non-directory replacing a directory replaces its
                // contents too.
                tree.remove_subtree(&path, li + 1);
            }
            tree.table.insert(
                path.clone(),
                Version {
                    pos,
                    kind,
                    path: path.clone(),
                },
            );
        }
    }
    Ok(tree)
}

/// What a flattened tree holds that decides whether it boots as a VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flattened {
    /// Entries and bytes written.
    pub summary: TarSummary,
    /// `/sbin/init` resolves to a file.
    pub has_init: bool,
    /// `/usr/sbin/sshd` (or `/sbin/sshd`) resolves to a file.
    pub has_sshd: bool,
    /// The text of `/etc/os-release` (or `/usr/lib/os-release`), if any.
    pub os_release: Option<String>,
}

impl Tree {
    /// Whether `path` resolves, through the tree's symbolic links, to a
    /// non-directory.
    fn resolves_to_file(&self, path: &str) -> bool {
        self.resolve_file(path).is_some()
    }

    /// The path of the non-directory `path` resolves to, through the
    /// tree's symbolic links.
    fn resolve_file(&self, path: &str) -> Option<Vec<u8>> {
        let mut parts: Vec<Vec<u8>> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let mut at: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while !parts.is_empty() {
            let part = parts.remove(0);
            match part.as_slice() {
                b"." => continue,
                b".." => {
                    at.pop();
                    continue;
                }
                _ => {}
            }
            at.push(part);
            let key = at.join(&b'/');
            let version = self.table.get(&key)?;
            if matches!(version.kind, Kind::Symlink) {
                hops += 1;
                let target = self.links.get(&key)?;
                if hops > 16 {
                    return None;
                }
                at.pop();
                if target.first() == Some(&b'/') {
                    at.clear();
                }
                let mut rest: Vec<Vec<u8>> = target
                    .split(|b| *b == b'/')
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                rest.append(&mut parts);
                parts = rest;
            } else if parts.is_empty() {
                return (!matches!(version.kind, Kind::Dir)).then_some(key);
            } else if !matches!(version.kind, Kind::Dir) {
                return None;
            }
        }
        None
    }
}

/// Writes the flattened tree of `layers` to the tarball `out`.
pub fn flatten(
    layers: &[Layer],
    out: &Path,
    limits: UnpackLimits,
) -> Result<Flattened, FlattenError> {
    let tree = plan(layers, limits)?;
    // The second pass reads the same layers; it gets a budget of its own.
    let budget = Budget::default();
    let has_init = tree.resolves_to_file("/sbin/init");
    let has_sshd = tree.resolves_to_file("/usr/sbin/sshd") || tree.resolves_to_file("/sbin/sshd");
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .filter_map(|p| tree.resolve_file(p))
        .find_map(|key| tree.os_release.get(&key).cloned());
    let write_err = |source| FlattenError::Write {
        path: out.to_owned(),
        source,
    };
    // Which positions are written, and under which name.
    let winners: HashMap<Pos, &Version> = tree.table.values().map(|v| (v.pos, v)).collect();
    // A link whose data's version no longer wins (replaced or deleted
    // later) carries the data itself: the first such link gets it, the
    // others link to that one.
    let mut carrier: HashMap<Pos, Vec<u8>> = HashMap::new();
    let mut carriers: HashSet<Pos> = HashSet::new();
    for v in tree.table.values() {
        if let Kind::Link { target } = v.kind
            && !winners.contains_key(&target)
            && !carrier.contains_key(&target)
        {
            carrier.insert(target, v.path.clone());
            carriers.insert(v.pos);
        }
    }
    let mut builder = tar::Builder::new(BufWriter::new(File::create(out).map_err(write_err)?));
    builder.follow_symlinks(false);
    let mut summary = TarSummary::default();
    // Every directory first, parents before children (a parent's path is
    // a prefix of its children's, so it sorts first). A directory a layer
    // only implied (it holds `a/b` but no `a/`) is made root's, 0755.
    let mut dirs: BTreeMap<&[u8], Option<&(Header, Pax)>> = BTreeMap::new();
    for (path, version) in &tree.table {
        let mut ancestor = parent(path);
        while !ancestor.is_empty() && !tree.table.contains_key(ancestor) {
            dirs.entry(ancestor).or_insert(None);
            ancestor = parent(ancestor);
        }
        if matches!(version.kind, Kind::Dir) {
            dirs.insert(path, tree.dirs.get(path));
        }
    }
    for (path, found) in dirs {
        let mut header = match found {
            Some((header, pax)) => {
                append_pax(&mut builder, pax).map_err(write_err)?;
                header.clone()
            }
            None => {
                let mut h = Header::new_gnu();
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h
            }
        };
        header.set_size(0);
        builder
            .append_data(&mut header, OsStr::from_bytes(path), std::io::empty())
            .map_err(write_err)?;
        summary.entries += 1;
    }
    for (li, layer) in layers.iter().enumerate() {
        let read_err = |what: &'static str| {
            move |source| FlattenError::Read {
                layer: li + 1,
                digest: layer.digest.clone(),
                what: what.to_owned(),
                source,
            }
        };
        let mut archive =
            tar::Archive::new(open(layer, limits, &budget).map_err(read_err("open"))?);
        for (ei, entry) in archive.entries().map_err(read_err("read"))?.enumerate() {
            let mut entry = entry.map_err(read_err("read an entry"))?;
            let pos = Pos {
                layer: li,
                entry: ei,
            };
            let name: Vec<u8> = match (winners.get(&pos), carrier.get(&pos)) {
                (Some(v), _) if !matches!(v.kind, Kind::Dir) && !carriers.contains(&pos) => {
                    v.path.clone()
                }
                (_, Some(link_name)) => link_name.clone(),
                _ => continue,
            };
            let pax = pax_records(&mut entry).map_err(read_err("read PAX records"))?;
            let mut header = entry.header().clone();
            append_pax(&mut builder, &pax).map_err(write_err)?;
            let path = OsStr::from_bytes(&name);
            match winners.get(&pos).map(|v| &v.kind) {
                Some(Kind::Link { target }) if !carrier.contains_key(&pos) => {
                    let target_name = carrier
                        .get(target)
                        .cloned()
                        .or_else(|| winners.get(target).map(|v| v.path.clone()))
                        .unwrap_or_default();
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, OsStr::from_bytes(&target_name))
                        .map_err(write_err)?;
                }
                Some(Kind::Symlink) => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    builder
                        .append_link(&mut header, path, OsStr::from_bytes(&target))
                        .map_err(write_err)?;
                }
                _ => {
                    if carrier.contains_key(&pos) {
                        // A version that survives only through its links:
                        // written as a regular file under the first one.
                        header.set_entry_type(EntryType::Regular);
                    }
                    summary.bytes += header.size().unwrap_or(0);
                    builder
                        .append_data(&mut header, path, &mut entry)
                        .map_err(write_err)?;
                }
            }
            summary.entries += 1;
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(write_err)?;
    Ok(Flattened {
        summary,
        has_init,
        has_sshd,
        os_release,
    })
}

fn append_pax<W: Write>(
    builder: &mut tar::Builder<W>,
    records: &[(String, Vec<u8>)],
) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}
