//! The work tree as carried, as a commit: the base a guest's export diffs
//! against. Built on the host, where hashing is cheap (a guest under TCG
//! takes seconds to rehash a tree), with a scratch index and a scratch
//! object directory: the user's repository is never written. The new
//! objects travel in the pack, with `refs/banger/prepared` naming the
//! commit.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use banger_api::workspace::HeldFile;

use crate::repo::{Repo, RepoError, run_git_with};

/// The ref the guest keeps the base under.
pub const PREPARED_REF: &str = "refs/banger/prepared";

/// A base commit and the objects it needs beyond the repository's.
#[derive(Debug)]
pub struct Base {
    /// The commit (hex).
    pub commit: String,
    /// The scratch directory; `objects/` in it holds the new objects.
    scratch: tempfile::TempDir,
}

impl Base {
    /// The scratch object directory (loose objects, git's layout).
    pub fn objects(&self) -> PathBuf {
        self.scratch.path().join("objects")
    }

    /// Builds the base of `repo`'s work tree as it is now.
    pub fn of(repo: &Repo) -> Result<Self, RepoError> {
        let scratch = tempfile::tempdir().map_err(io(repo.top()))?;
        let mut base = Self {
            commit: String::new(),
            scratch,
        };
        for dir in ["objects", "empty"] {
            let dir = base.scratch.path().join(dir);
            std::fs::create_dir(&dir).map_err(io(&dir))?;
        }
        let no_config = base.scratch.path().join("no-config");
        std::fs::write(&no_config, b"").map_err(io(&no_config))?;
        let host_index = repo.top().join(".git/index");
        if host_index.exists() {
            // The host's stat data: only changed and untracked files are
            // hashed.
            let index = base.scratch.path().join("index");
            std::fs::copy(&host_index, &index).map_err(io(&host_index))?;
        }
        base.git(repo, &["add", "-A"])?;
        let tree = line(base.git(repo, &["write-tree"])?);
        base.commit = line(base.git(
            repo,
            &[
                "commit-tree",
                "-m",
                "banger: the workspace as prepared",
                &tree,
            ],
        )?);
        Ok(base)
    }

    /// The regular files of the base that a guest holding `held` (as its
    /// listing names them: mode, blob and quoted path) need not be sent,
    /// by their paths from the top, each with whether the guest's copy is
    /// executable.
    ///
    /// Only where the same blob is the same bytes: nothing when the
    /// repository's config converts line endings (`core.autocrlf`), and
    /// no file git would convert on the way in (`text`, `eol`, `crlf`,
    /// `ident`, `filter`, `working-tree-encoding` attributes) or whose
    /// index entry tells git not to look at it (skip-worktree,
    /// assume-unchanged).
    pub fn held_files(
        &self,
        repo: &Repo,
        held: &[HeldFile],
    ) -> Result<HashMap<PathBuf, bool>, RepoError> {
        if held.is_empty()
            || self
                .git(repo, &["config", "core.autocrlf"])
                .is_ok_and(|v| line(v) != "false")
        {
            return Ok(HashMap::new());
        }
        let want: HashSet<(&str, &str, &str)> = held
            .iter()
            .map(|f| (f.mode.as_str(), f.blob.as_str(), f.path.as_str()))
            .collect();
        // The same listing twice, in the same order: raw names (any
        // bytes) beside the names as git quotes them, which is how the
        // guest's listing names them.
        let raw = self.git(repo, &["ls-tree", "-r", "-z", &self.commit])?;
        let quoted = self.git(
            repo,
            &["-c", "core.quotePath=true", "ls-tree", "-r", &self.commit],
        )?;
        let raw: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|l| !l.is_empty()).collect();
        let quoted: Vec<&[u8]> = quoted
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        if raw.len() != quoted.len() {
            return Ok(HashMap::new());
        }
        let split = |l: &[u8]| -> Option<(Vec<u8>, Vec<u8>)> {
            let tab = l.iter().position(|b| *b == b'\t')?;
            Some((l[..tab].to_vec(), l[tab + 1..].to_vec()))
        };
        let mut files = HashMap::new();
        for (r, q) in raw.into_iter().zip(quoted) {
            let (Some((meta, path)), Some((_, shown))) = (split(r), split(q)) else {
                continue;
            };
            let meta = String::from_utf8_lossy(&meta);
            let mut meta = meta.split(' ');
            let (Some(mode), Some("blob"), Some(blob)) = (meta.next(), meta.next(), meta.next())
            else {
                continue;
            };
            if want.contains(&(mode, blob, &*String::from_utf8_lossy(&shown))) {
                files.insert(PathBuf::from(OsStr::from_bytes(&path)), mode == "100755");
            }
        }
        // Entries git does not look at: `h`, `s`, ... (assume-unchanged)
        // and `S` (skip-worktree).
        let flagged = self.git(repo, &["ls-files", "-v", "-z"])?;
        for entry in flagged.split(|b| *b == 0) {
            if let [tag, b' ', path @ ..] = entry
                && (tag.is_ascii_lowercase() || *tag == b'S')
            {
                files.remove(Path::new(OsStr::from_bytes(path)));
            }
        }
        let candidates: Vec<PathBuf> = files.keys().cloned().collect();
        for chunk in candidates.chunks(1000) {
            let mut args: Vec<&OsStr> = [
                "check-attr",
                "-z",
                "text",
                "eol",
                "crlf",
                "ident",
                "filter",
                "working-tree-encoding",
                "--",
            ]
            .iter()
            .map(OsStr::new)
            .collect();
            args.extend(chunk.iter().map(|p| p.as_os_str()));
            // <path> NUL <attribute> NUL <value> NUL, for each pair.
            let out = self.git_os(repo, &args)?;
            let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
            for triple in fields.chunks_exact(3) {
                if !matches!(triple[2], b"unspecified" | b"unset") {
                    files.remove(Path::new(OsStr::from_bytes(triple[0])));
                }
            }
        }
        Ok(files)
    }

    /// git in `repo` with the base's scratch index and object directory,
    /// and none of the user's global and system config and attributes
    /// (autocrlf, LFS filters), which the guest does not have: it hashes
    /// as the guest will. An empty HOME for gits older than
    /// GIT_CONFIG_GLOBAL.
    fn git(&self, repo: &Repo, args: &[&str]) -> Result<Vec<u8>, RepoError> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.git_os(repo, &args)
    }

    fn git_os(&self, repo: &Repo, args: &[&OsStr]) -> Result<Vec<u8>, RepoError> {
        let scratch = self.scratch.path();
        let (index, objects) = (scratch.join("index"), scratch.join("objects"));
        let (empty, no_config) = (scratch.join("empty"), scratch.join("no-config"));
        let host_objects = repo.top().join(".git/objects");
        let env: [(&str, &OsStr); 11] = [
            ("GIT_CONFIG_NOSYSTEM", OsStr::new("1")),
            ("GIT_CONFIG_GLOBAL", no_config.as_os_str()),
            ("HOME", empty.as_os_str()),
            ("XDG_CONFIG_HOME", empty.as_os_str()),
            ("GIT_INDEX_FILE", index.as_os_str()),
            ("GIT_OBJECT_DIRECTORY", objects.as_os_str()),
            ("GIT_ALTERNATE_OBJECT_DIRECTORIES", host_objects.as_os_str()),
            ("GIT_AUTHOR_NAME", OsStr::new("banger")),
            ("GIT_AUTHOR_EMAIL", OsStr::new("banger@localhost")),
            ("GIT_COMMITTER_NAME", OsStr::new("banger")),
            ("GIT_COMMITTER_EMAIL", OsStr::new("banger@localhost")),
        ];
        let mut all = vec![
            OsStr::new("-c"),
            OsStr::new("core.fsmonitor=false"),
            OsStr::new("-c"),
            OsStr::new("core.hooksPath=/dev/null"),
            // A split index would leave a sharedindex file in .git.
            OsStr::new("-c"),
            OsStr::new("core.splitIndex=false"),
        ];
        all.extend(args);
        run_git_with(repo.top(), &env, &all)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError {
    let path = path.to_owned();
    move |source| RepoError::Read { path, source }
}

fn line(out: Vec<u8>) -> String {
    String::from_utf8_lossy(&out).trim().to_owned()
}
