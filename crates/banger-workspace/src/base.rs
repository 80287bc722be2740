//! The work tree as carried, as a commit: the base a guest's export diffs
//! against. Built on the host, where hashing is cheap (a guest under TCG
//! takes seconds to rehash a tree), with a scratch index and a scratch
//! object directory: the user's repository is never written. The new
//! objects travel in the pack, with `refs/banger/prepared` naming the
//! commit.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

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
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RepoError::Read { path, source }
        };
        let scratch = tempfile::tempdir().map_err(io(repo.top()))?;
        let objects = scratch.path().join("objects");
        std::fs::create_dir(&objects).map_err(io(&objects))?;
        let index = scratch.path().join("index");
        let host_index = repo.top().join(".git/index");
        if host_index.exists() {
            // The host's stat data: only changed and untracked files are
            // hashed.
            std::fs::copy(&host_index, &index).map_err(io(&host_index))?;
        }
        let host_objects = repo.top().join(".git/objects");
        // Hashed as the guest will hash: without the user's global and
        // system config and attributes (autocrlf, LFS filters), which
        // the guest does not have. An empty HOME for gits older than
        // GIT_CONFIG_GLOBAL.
        let empty = scratch.path().join("empty");
        std::fs::create_dir(&empty).map_err(io(&empty))?;
        let no_config = scratch.path().join("no-config");
        std::fs::write(&no_config, b"").map_err(io(&no_config))?;
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
        let git = |args: &[&str]| -> Result<String, RepoError> {
            let mut all = vec![
                OsStr::new("-c"),
                OsStr::new("core.fsmonitor=false"),
                OsStr::new("-c"),
                OsStr::new("core.hooksPath=/dev/null"),
                // A split index would leave a sharedindex file in .git.
                OsStr::new("-c"),
                OsStr::new("core.splitIndex=false"),
            ];
            all.extend(args.iter().map(OsStr::new));
            let out = run_git_with(repo.top(), &env, &all)?;
            Ok(String::from_utf8_lossy(&out).trim().to_owned())
        };
        git(&["add", "-A"])?;
        let tree = git(&["write-tree"])?;
        let commit = git(&[
            "commit-tree",
            "-m",
            "banger: the workspace as prepared",
            &tree,
        ])?;
        Ok(Self { commit, scratch })
    }
}
