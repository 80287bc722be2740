//! What a guest's listing ([`super::scripts::HELD`]) says its workspace
//! holds, kept only where it has the expected shape. The guest writes
//! the listing, so it is bounded ([`MAX_HELD`] entries) and a line that
//! does not parse is dropped: a guest that lies only makes its own
//! prepare carry less, or fail its own check.

use std::collections::HashSet;

use banger_api::workspace::{HeldFile, HeldObjects, MAX_HELD, is_object_name};

/// The objects and the unchanged work-tree files in `listing`.
pub(super) fn parse(listing: &str) -> HeldObjects {
    let mut lines = listing.lines();
    let mut commit = None;
    let names = lines
        .by_ref()
        .take_while(|l| match l.strip_prefix("\t--- files ") {
            Some(c) => {
                commit = Some(c).filter(|c| hex(c)).map(str::to_owned);
                false
            }
            None => true,
        })
        .filter(|n| is_object_name(n))
        .take(MAX_HELD)
        .map(str::to_owned)
        .collect();
    let prepared: Vec<HeldFile> = lines
        .by_ref()
        .take_while(|l| *l != "\t--- changed")
        .filter_map(file)
        .take(MAX_HELD)
        .collect();
    let mut changed = HashSet::new();
    let mut whole = false;
    for line in lines {
        if line == "\t--- end" {
            whole = true;
            break;
        }
        if changed.len() == MAX_HELD {
            break;
        }
        changed.insert(line);
    }
    // Without the end line the changed paths may be cut short: a file
    // not named there may have changed all the same.
    let files = if whole && commit.is_some() {
        prepared
            .into_iter()
            .filter(|f| !changed.contains(f.path.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    HeldObjects {
        names,
        prepared: commit.filter(|_| !files.is_empty()),
        files,
    }
}

/// A full object id: 40 or 64 lowercase hex digits.
fn hex(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One `git ls-tree` line (`<mode> <type> <id>\t<path>`) of a regular
/// file; a symlink, a submodule or anything malformed is `None`.
fn file(line: &str) -> Option<HeldFile> {
    let (meta, path) = line.split_once('\t')?;
    let mut meta = meta.split(' ');
    let (mode, kind, blob) = (meta.next()?, meta.next()?, meta.next()?);
    // git quotes every name that is not plain printable ASCII; an
    // absolute or `..` path is never one it lists.
    let plain = !path.is_empty()
        && path.len() <= 4096
        && path.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !path.starts_with('/')
        && !path
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty());
    let ok = meta.next().is_none()
        && ["100644", "100755"].contains(&mode)
        && kind == "blob"
        && hex(blob)
        && plain;
    ok.then(|| HeldFile {
        mode: mode.to_owned(),
        blob: blob.to_owned(),
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: &str = "0123456789abcdef0123456789abcdef01234567";

    fn line(mode: &str, kind: &str, path: &str) -> String {
        format!("{mode} {kind} {BLOB}\t{path}")
    }

    #[test]
    fn files_are_the_prepared_regular_files_git_does_not_find_changed() {
        let loose = format!("ab/{}", "c".repeat(38));
        let listing = [
            loose.clone(),
            "info/commit-graph".into(),
            format!("\t--- files {BLOB}"),
            line("100644", "blob", "src/main.rs"),
            line("100755", "blob", "run.sh"),
            line("100644", "blob", "\"sp\\303\\274 ace\\n\""),
            line("100644", "blob", "edited.txt"),
            line("100644", "blob", "--- end"),
            line("100644", "blob", "z-after-the-name-end.txt"),
            line("120000", "blob", "link"),
            line("160000", "commit", "submodule"),
            line("100644", "blob", "../../etc/passwd"),
            line("100644", "blob", "/etc/passwd"),
            line("100644", "blob", "a//b"),
            line("100644", "tree", "dir"),
            format!("100644 blob {}\tshort", &BLOB[..10]),
            format!("100644 blob {BLOB} extra\tx"),
            "\t--- changed".into(),
            "--- end".into(),
            "edited.txt".into(),
            "z-after-the-name-end.txt".into(),
            "\t--- end".into(),
        ]
        .join("\n");
        let held = parse(&listing);
        assert_eq!(held.names, [loose]);
        let paths: Vec<_> = held.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["src/main.rs", "run.sh", "\"sp\\303\\274 ace\\n\""]);
        assert_eq!(held.files[1].mode, "100755");
        assert_eq!(held.files[0].blob, BLOB);
        assert_eq!(held.prepared.as_deref(), Some(BLOB));
    }

    #[test]
    fn without_the_end_line_or_the_prepared_ref_no_file_is_held() {
        let files = format!("\t--- files {BLOB}");
        let a = line("100644", "blob", "a");
        let cut = [files.as_str(), &a, "\t--- changed"].join("\n");
        assert_eq!(parse(&cut).files, []);
        // A user's file named like the end line is a name, not the end.
        let named = [files.as_str(), &a, "\t--- changed", "--- end"].join("\n");
        assert_eq!(parse(&named).files, []);
        let whole = [files.as_str(), &a, "\t--- changed", "\t--- end"].join("\n");
        assert_eq!(parse(&whole).files.len(), 1);
        let no_commit = whole.replace(BLOB, "HEAD");
        assert_eq!(parse(&no_commit).files, []);
        let objects_only = format!("ab/{}\n", "c".repeat(38));
        assert_eq!(parse(&objects_only).names.len(), 1);
        assert_eq!(parse(&objects_only).files, []);
    }
}
