//! A git checkout on the host, asked about with git itself (never by
//! walking ignored directories), as the user who runs banger.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_sys::Cmd;

/// Why a directory cannot be a workspace, or a git question failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The path does not exist or cannot be read.
    #[error("{}: {source}", path.display())]
    Path {
        /// The path given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The path is a file.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// No git work tree contains the path.
    #[error("{} is not inside a git work tree (banger carries a repository: run `git init` there, or give a path inside one)", .0.display())]
    NotARepository(PathBuf),
    /// A bare repository has no files to carry.
    #[error("{} is a bare git repository: it has no work tree to carry; give a checkout of it", .0.display())]
    Bare(PathBuf),
    /// `.git` is a file: a linked worktree or a submodule's checkout, whose
    /// repository lives elsewhere.
    #[error("{}/.git is a file (a linked worktree or a submodule checkout); banger carries a main checkout: give the repository it belongs to", .0.display())]
    GitFile(PathBuf),
    /// `--from` names nothing git knows as a commit.
    #[error("--from {0:?} is not a commit in this repository")]
    UnknownRef(String),
    /// `--branch` is not a name git accepts.
    #[error("--branch {0:?} is not a valid branch name (see `git check-ref-format --branch`)")]
    BadBranch(String),
    /// `--branch` names a branch the repository already has.
    #[error("--branch {0:?} already exists in this repository; choose a new name")]
    BranchExists(String),
    /// A path or value banger will not carry.
    #[error("{0}")]
    Refused(String),
    /// git could not be run.
    #[error("run git: {0} (is git installed?)")]
    Spawn(#[source] std::io::Error),
    /// git failed.
    #[error("git {args} failed: {stderr}")]
    Git {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// Reading a file to carry failed.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A git command in `dir`, deaf to the caller's `GIT_DIR` and friends so
/// it asks about `dir` and nothing else.
pub(crate) fn git(dir: &Path) -> Command {
    let mut cmd = Cmd::new("git").arg("-C").arg(dir).to_command();
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_CEILING_DIRECTORIES",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs git; its stdout, or `None` when it exits non-zero.
fn try_git(dir: &Path, args: &[&str]) -> Result<Option<Vec<u8>>, RepoError> {
    let out = git(dir).args(args).output().map_err(RepoError::Spawn)?;
    Ok(out.status.success().then_some(out.stdout))
}

/// Runs git; its stdout, or its stderr as the error.
pub(crate) fn run_git(dir: &Path, args: &[&OsStr]) -> Result<Vec<u8>, RepoError> {
    run_git_with(dir, &[], args)
}

/// [`run_git`] with `env` set.
pub(crate) fn run_git_with(
    dir: &Path,
    env: &[(&str, &OsStr)],
    args: &[&OsStr],
) -> Result<Vec<u8>, RepoError> {
    let out = git(dir)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .map_err(RepoError::Spawn)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(RepoError::Git {
        args: args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn line(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim_end().to_owned()
}

/// A checkout banger can carry: the top of a non-bare work tree whose
/// `.git` is a directory.
#[derive(Debug, Clone)]
pub struct Repo {
    top: PathBuf,
}

impl Repo {
    /// The work tree containing `path`.
    pub fn open(path: &Path) -> Result<Self, RepoError> {
        let meta = std::fs::metadata(path).map_err(|source| RepoError::Path {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(RepoError::NotADirectory(path.to_owned()));
        }
        // One git for the usual case (`vm exec` opens the checkout on every
        // call); a second only to say why it failed.
        let top = match try_git(
            path,
            &["rev-parse", "--is-bare-repository", "--show-toplevel"],
        )? {
            Some(out) if out.starts_with(b"false\n") => {
                PathBuf::from(OsStr::from_bytes(out[6..].trim_ascii_end()))
            }
            _ => match try_git(path, &["rev-parse", "--is-bare-repository"])? {
                Some(out) if out.trim_ascii_end() == b"true" => {
                    return Err(RepoError::Bare(path.to_owned()));
                }
                _ => return Err(RepoError::NotARepository(path.to_owned())),
            },
        };
        if top.as_os_str().is_empty() {
            // Inside `.git` itself: no work tree.
            return Err(RepoError::NotARepository(path.to_owned()));
        }
        // `.git` a directory, as for a recorded top.
        Self::recorded(&top)?;
        let alternates = top.join(".git/objects/info/alternates");
        if std::fs::symlink_metadata(&alternates).is_ok() {
            return Err(RepoError::Refused(format!(
                "{} borrows objects from another repository ({}: a --shared or --reference clone); the guest could not read them: run `git repack -a -d` and remove that file, or carry a plain clone",
                top.display(),
                alternates.display()
            )));
        }
        if top.as_os_str().as_bytes().iter().any(u8::is_ascii_control) {
            return Err(RepoError::Refused(format!(
                "{:?}: a repository path with control characters cannot be recorded",
                top
            )));
        }
        Ok(Self { top })
    }

    /// The checkout at `top`, the top of a work tree [`Repo::open`]
    /// accepted before (a workspace's record): its `.git` must still be a
    /// directory, and nothing else is asked of git.
    pub fn recorded(top: &Path) -> Result<Self, RepoError> {
        let dot_git = top.join(".git");
        match std::fs::symlink_metadata(&dot_git) {
            Ok(meta) if meta.is_dir() => Ok(Self {
                top: top.to_owned(),
            }),
            Ok(_) => Err(RepoError::GitFile(top.to_owned())),
            Err(source) => Err(RepoError::Path {
                path: dot_git,
                source,
            }),
        }
    }

    /// The top of the work tree.
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// The commit HEAD points at; `None` in a repository with no commits.
    pub fn head(&self) -> Result<Option<String>, RepoError> {
        Ok(try_git(&self.top, &["rev-parse", "-q", "--verify", "HEAD^{commit}"])?.map(line))
    }

    /// The branch HEAD is on; `None` when detached.
    pub fn branch(&self) -> Result<Option<String>, RepoError> {
        Ok(try_git(&self.top, &["symbolic-ref", "-q", "--short", "HEAD"])?.map(line))
    }

    /// The full commit id `reference` names.
    pub fn resolve(&self, reference: &str) -> Result<String, RepoError> {
        if reference.starts_with('-') || reference.is_empty() {
            return Err(RepoError::UnknownRef(reference.to_owned()));
        }
        let spec = format!("{reference}^{{commit}}");
        try_git(
            &self.top,
            // A leading '-' was refused above: no option can be smuggled.
            &["rev-parse", "-q", "--verify", &spec],
        )?
        .map(line)
        .ok_or_else(|| RepoError::UnknownRef(reference.to_owned()))
    }

    /// Checks that `name` can be a new branch here.
    pub fn check_new_branch(&self, name: &str) -> Result<(), RepoError> {
        let valid = !name.starts_with('-')
            && try_git(&self.top, &["check-ref-format", "--branch", name])?.is_some();
        if !valid {
            return Err(RepoError::BadBranch(name.to_owned()));
        }
        let full = format!("refs/heads/{name}");
        if try_git(&self.top, &["rev-parse", "-q", "--verify", &full])?.is_some() {
            return Err(RepoError::BranchExists(name.to_owned()));
        }
        Ok(())
    }

    /// The user's git identity here: see [`identity`].
    pub fn identity(&self) -> (Option<String>, Option<String>) {
        identity(&self.top)
    }

    /// `.git/config` without what must not reach a guest: credential
    /// helpers and settings, `http.*.extraheader` (where CI checkouts keep
    /// their token), and passwords or tokens in remote URLs.
    pub fn guest_config(&self) -> Result<Vec<u8>, RepoError> {
        let source = self.top.join(".git/config");
        let read = |e| RepoError::Read {
            path: source.clone(),
            source: e,
        };
        let copy = tempfile::NamedTempFile::new().map_err(read)?;
        std::fs::copy(&source, copy.path()).map_err(read)?;
        let file = copy.path().as_os_str();
        let entries = |pattern: &str| -> Result<Vec<(String, String)>, RepoError> {
            let args = [
                OsStr::new("config"),
                OsStr::new("--file"),
                file,
                OsStr::new("--null"),
                OsStr::new("--get-regexp"),
                OsStr::new(pattern),
            ];
            let found = git(&self.top)
                .args(args)
                .output()
                .map_err(RepoError::Spawn)?
                .stdout;
            Ok(found
                .split(|b| *b == 0)
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let e = String::from_utf8_lossy(e);
                    let (k, v) = e.split_once('\n').unwrap_or((&e, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect())
        };
        let edit = |args: &[&str]| -> Result<(), RepoError> {
            let mut all: Vec<&OsStr> = vec![OsStr::new("config"), OsStr::new("--file"), file];
            all.extend(args.iter().map(OsStr::new));
            run_git(&self.top, &all).map(drop)
        };
        for (key, _) in entries(r"^(credential\.|http\..*extraheader$)")? {
            edit(&["--unset-all", &key])?;
        }
        for (key, url) in entries(r"^(remote|submodule)\..*\.(url|pushurl)$")? {
            if let Some(clean) = without_userinfo(&url) {
                edit(&["--replace-all", &key, &clean])?;
            }
        }
        std::fs::read(copy.path()).map_err(read)
    }

    /// The work tree's files as the user sees them: tracked ones and
    /// untracked ones not ignored, with each submodule's own, relative to
    /// the top. Tracked files deleted from the work tree are left out (the
    /// guest's `git status` shows them deleted, as the host's does).
    pub fn files(&self) -> Result<Vec<PathBuf>, RepoError> {
        Ok(self.stat_files()?.into_iter().map(|(rel, _)| rel).collect())
    }

    /// [`Repo::files`], each with its metadata as it was listed.
    pub(crate) fn stat_files(&self) -> Result<Vec<(PathBuf, std::fs::Metadata)>, RepoError> {
        let mut out = Vec::new();
        list(&self.top, Path::new(""), &mut out)?;
        Ok(out)
    }
}

fn list(
    top: &Path,
    prefix: &Path,
    out: &mut Vec<(PathBuf, std::fs::Metadata)>,
) -> Result<(), RepoError> {
    let dir = top.join(prefix);
    let raw = run_git(
        &dir,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]
        .map(OsStr::new),
    )?;
    // An unmerged path is listed once per stage (`--deduplicate` is newer
    // than some gits banger runs with).
    let mut names: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
    names.dedup();
    for name in names {
        let rel = prefix.join(OsStr::from_bytes(name));
        let Ok(meta) = std::fs::symlink_metadata(top.join(&rel)) else {
            continue;
        };
        if meta.is_dir() {
            // A gitlink: a submodule's checkout, carried with its own files
            // (its `.git` file points into the superproject's `.git`).
            if let Ok(git) = std::fs::symlink_metadata(top.join(&rel).join(".git")) {
                out.push((rel.join(".git"), git));
                list(top, &rel, out)?;
            }
            continue;
        }
        out.push((rel, meta));
    }
    Ok(())
}

/// The user's git identity (`user.name`, `user.email`) as git sees it in
/// `dir` (a repository's own, else the global one), each if set and
/// printable; none when git is missing.
pub fn identity(dir: &Path) -> (Option<String>, Option<String>) {
    // One git for both (each run costs the CLI a few milliseconds).
    let found = try_git(
        dir,
        &["config", "--null", "--get-regexp", r"^user\.(name|email)$"],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    let (mut name, mut email) = (None, None);
    for entry in found.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('\n') else {
            continue;
        };
        if value.is_empty() || value.chars().any(char::is_control) {
            continue;
        }
        // The last one wins, as in git (local over global).
        match key {
            "user.name" => name = Some(value.to_owned()),
            "user.email" => email = Some(value.to_owned()),
            _ => {}
        }
    }
    (name, email)
}

/// `url` without a user and password, when it has them
/// (`https://user:token@host/x` -> `https://host/x`).
fn without_userinfo(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..host_end].rfind('@')?;
    // A bare user on ssh is a login name, not a secret.
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    if !http && !rest[..at].contains(':') {
        return None;
    }
    Some(format!("{scheme}://{}", &rest[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_urls() {
        assert_eq!(
            without_userinfo("https://x-access-token:ghs_abc@github.com/o/r.git").as_deref(),
            Some("https://github.com/o/r.git")
        );
        assert_eq!(without_userinfo("https://github.com/o/r.git"), None);
        assert_eq!(without_userinfo("git@github.com:o/r.git"), None);
        assert_eq!(without_userinfo("ssh://git@host/r"), None);
        assert_eq!(
            without_userinfo("ssh://git:pw@host/r").as_deref(),
            Some("ssh://host/r")
        );
        assert_eq!(
            without_userinfo("https://TOKEN@host/r").as_deref(),
            Some("https://host/r")
        );
    }
}
