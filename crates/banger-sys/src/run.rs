//! Running a program to completion with its output in a log file, under a
//! cancellation flag: the build steps of kernels and images.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A shared "stop now" flag. Cheap to clone; every clone sees the same flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A program and its arguments, run directly (never through a shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The program, a path or a name looked up in PATH.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// The working directory, when not the caller's.
    pub cwd: Option<PathBuf>,
    /// Where to record the command's process group while it runs
    /// ([`crate::GroupRecord`]), for a later daemon to stop it by.
    pub group_record: Option<PathBuf>,
}

impl Cmd {
    /// `program` with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            group_record: None,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Records the process group at `path` while the command runs.
    pub fn record_group(mut self, path: impl Into<PathBuf>) -> Self {
        self.group_record = Some(path.into());
        self
    }

    /// The command for callers that wire its standard streams themselves
    /// (a pipe to stream into, output to read): program, arguments,
    /// environment and working directory, stdin from /dev/null until the
    /// caller says otherwise.
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command
    }

    /// The command as one line for logs and messages (not for a shell).
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Errors running a command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("start `{command}`")]
    Start {
        /// The command line.
        command: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be opened.
    #[error("open log {}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{command}` failed ({status}); its output is in {}", log.display())]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Where its output went.
        log: PathBuf,
    },
    /// The cancel flag was set; the program's process group was killed.
    #[error("cancelled")]
    Cancelled,
}

/// Runs commands to completion. Code above this trait is tested with a
/// recording fake; [`HostRunner`] is the real thing.
pub trait Runner: Send + Sync + std::fmt::Debug {
    /// Runs `cmd` with stdin from /dev/null and stdout and stderr appended
    /// to `log`; kills it when `cancel` is set.
    fn run(&self, cmd: &Cmd, log: &Path, cancel: &Cancel) -> Result<(), RunError>;
}

/// Runs commands on this host, each in its own process group so that a
/// cancel kills the whole tree (make and its compilers), and with a
/// parent-death signal so a killed daemon does not leave builds running.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostRunner;

impl Runner for HostRunner {
    fn run(&self, cmd: &Cmd, log: &Path, cancel: &Cancel) -> Result<(), RunError> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(log)
                .map_err(|source| RunError::Log {
                    path: log.to_owned(),
                    source,
                })
        };
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .process_group(0);
        if let Some(dir) = &cmd.cwd {
            command.current_dir(dir);
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of ours;
        // it runs in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| RunError::Start {
            command: cmd.display(),
            source,
        })?;
        let pgid = child.id();
        let group = crate::GroupRecord::of(Path::new("/proc"), pgid);
        let recorded = cmd.group_record.as_deref().filter(|path| {
            match group.as_ref().map(|r| r.write(path)) {
                Some(Ok(())) => true,
                // Unrecorded, a crash leaves the group to its parent-death
                // signal alone; the command itself is fine.
                Some(Err(_)) | None => false,
            }
        });
        let result = wait(&mut child, pgid, group.as_ref(), cmd, log, cancel);
        if let Some(path) = recorded {
            let _ = std::fs::remove_file(path);
        }
        result
    }
}

/// Runs `cmd` to completion and returns its standard output, at most
/// `max` bytes of it (more is an error, not a silent cut); standard error
/// goes to `log`. For short queries whose answer is parsed (`ip -json`).
pub fn output(cmd: &Cmd, log: &Path, max: usize) -> Result<Vec<u8>, RunError> {
    use std::io::Read;
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|source| RunError::Log {
            path: log.to_owned(),
            source,
        })?;
    let start = |source| RunError::Start {
        command: cmd.display(),
        source,
    };
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(start)?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|s| s.take(max as u64 + 1).read_to_end(&mut out));
    let status = child.wait().map_err(start)?;
    if let Some(Err(e)) = read {
        return Err(start(e));
    }
    if out.len() > max {
        return Err(start(std::io::Error::other(format!(
            "printed more than {max} bytes"
        ))));
    }
    if !status.success() {
        return Err(RunError::Failed {
            command: cmd.display(),
            status,
            log: log.to_owned(),
        });
    }
    Ok(out)
}

/// How long a cancelled command's group gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// How soon a running command sees a cancel.
const CANCEL_TICK: Duration = Duration::from_millis(50);

/// A pidfd for `pid`, readable once it exits; `None` where the kernel has
/// none.
fn pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new file
    // descriptor or -1; the pid is our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = std::os::fd::RawFd::try_from(fd)
        .ok()
        .filter(|fd| *fd >= 0)?;
    // SAFETY: a descriptor just returned to us, owned by nobody else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Waits until `fd` is readable (the process exited) or `timeout` passes;
/// whether it is.
fn until_readable(fd: &std::os::fd::OwnedFd, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the call's duration; an interrupted or
    // failed poll just returns early, and the caller checks again.
    let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
    ready == 1 && poll.revents & libc::POLLIN != 0
}

/// Waits for `child` (leader of group `pgid`), stopping the group on cancel.
fn wait(
    child: &mut std::process::Child,
    pgid: u32,
    group: Option<&crate::GroupRecord>,
    cmd: &Cmd,
    log: &Path,
    cancel: &Cancel,
) -> Result<(), RunError> {
    // Most commands (ip, tune2fs, nft) finish in a few milliseconds. A
    // pidfd wakes this wait the moment the child exits (a poll with a
    // back-off charged a 17 ms nft transaction 25 to 33 ms); its timeout
    // is how soon a cancel is seen. Without pidfds (Linux before 5.3),
    // poll fast first and back off.
    let exited = pidfd(child.id());
    let mut tick = Duration::from_millis(1);
    loop {
        if cancel.is_cancelled() {
            // TERM first: a build (mmdebstrap) removes its temporary
            // files on it; KILL what is left after the grace. The grace is
            // the whole group's: children still cleaning up after the
            // leader has gone are waited for too.
            crate::group::signal_group(pgid, libc::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline {
                let leader_gone = !matches!(child.try_wait(), Ok(None));
                let group_gone = group.is_none_or(|g| g.members(Path::new("/proc")).is_empty());
                if leader_gone && group_gone {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            crate::group::signal_group(pgid, libc::SIGKILL);
            let _ = child.wait();
            return Err(RunError::Cancelled);
        }
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                // Reap anything the leader left in its group.
                crate::group::signal_group(pgid, libc::SIGKILL);
                return Err(RunError::Failed {
                    command: cmd.display(),
                    status,
                    log: log.to_owned(),
                });
            }
            Ok(None) => match &exited {
                Some(fd) => {
                    until_readable(fd, CANCEL_TICK);
                }
                None => {
                    std::thread::sleep(tick);
                    tick = (tick * 2).min(CANCEL_TICK);
                }
            },
            Err(source) => {
                return Err(RunError::Failed {
                    command: cmd.display(),
                    status: ExitStatus::from_raw(source.raw_os_error().unwrap_or(1) << 8),
                    log: log.to_owned(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupRecord;

    #[test]
    fn output_goes_to_the_log_and_failure_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        HostRunner
            .run(&Cmd::new("/bin/echo").arg("hello"), &log, &Cancel::new())
            .unwrap();
        let err = HostRunner
            .run(
                &Cmd::new("/bin/sh").args(["-c", "echo oops >&2; exit 4"]),
                &log,
                &Cancel::new(),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit status: 4"), "{text}");
        assert!(text.contains("build.log"), "{text}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\noops\n");
    }

    #[test]
    fn cancel_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("l");
        let pidfile = dir.path().join("grandchild");
        let cancel = Cancel::new();
        let flag = cancel.clone();
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            HostRunner.run(&Cmd::new("/bin/sh").args(["-c", &script]), &log, &flag)
        });
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        cancel.cancel();
        assert!(matches!(t.join().unwrap(), Err(RunError::Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(30));
        let grandchild: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !crate::pid_alive(grandchild)
        });
        assert!(gone, "the grandchild must die with its group");
    }

    #[test]
    fn output_is_captured_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("l");
        let out = output(&Cmd::new("/bin/echo").arg("hi"), &log, 16).unwrap();
        assert_eq!(out, b"hi\n");
        let err = output(&Cmd::new("/bin/echo").arg("x".repeat(64)), &log, 16).unwrap_err();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("more than 16 bytes"), "{cause}");
        let err = output(
            &Cmd::new("/bin/sh").args(["-c", "echo no >&2; exit 3"]),
            &log,
            16,
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Failed { .. }));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "no\n");
    }

    #[test]
    fn cancel_asks_with_sigterm_before_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("term");
        let ready = dir.path().join("ready");
        let script = format!(
            "trap 'echo term > {}; exit 0' TERM; sleep 60 & touch {}; wait",
            mark.display(),
            ready.display()
        );
        let (result, took) = cancel_once_ready(&script, &ready, &dir.path().join("l"));
        assert!(matches!(result, Err(RunError::Cancelled)));
        assert_eq!(std::fs::read_to_string(&mark).unwrap(), "term\n");
        assert!(took < TERM_GRACE, "it went at TERM, not at KILL");
    }

    /// Runs `script`, cancels it once `ready` exists; returns the run's
    /// result and how long it took from the cancel.
    fn cancel_once_ready(
        script: &str,
        ready: &Path,
        log: &Path,
    ) -> (Result<(), RunError>, Duration) {
        let cancel = Cancel::new();
        let (flag, script, log) = (cancel.clone(), script.to_owned(), log.to_owned());
        let t = std::thread::spawn(move || {
            HostRunner.run(&Cmd::new("/bin/sh").args(["-c", &script]), &log, &flag)
        });
        while !ready.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        cancel.cancel();
        let result = t.join().unwrap();
        (result, started.elapsed())
    }

    #[test]
    fn a_cancelled_groups_children_get_the_grace_too() {
        let dir = tempfile::tempdir().unwrap();
        let (done, ready) = (dir.path().join("done"), dir.path().join("ready"));
        let script = format!(
            "(trap 'sleep 0.3; echo done > {}; exit 0' TERM; while :; do sleep 0.05; done) & \
             trap 'exit 0' TERM; touch {}; wait",
            done.display(),
            ready.display()
        );
        let (result, _) = cancel_once_ready(&script, &ready, &dir.path().join("l"));
        assert!(matches!(result, Err(RunError::Cancelled)));
        assert_eq!(std::fs::read_to_string(&done).unwrap(), "done\n");
    }

    #[test]
    fn the_group_is_recorded_while_the_command_runs_and_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join(".build-group");
        let copy = dir.path().join("copy");
        let script = format!(
            "while [ ! -s {r} ]; do sleep 0.01; done; cat {r} > {c}; echo $$ >> {c}",
            r = record.display(),
            c = copy.display()
        );
        HostRunner
            .run(
                &Cmd::new("/bin/sh")
                    .args(["-c", &script])
                    .record_group(&record),
                &dir.path().join("l"),
                &Cancel::new(),
            )
            .unwrap();
        assert!(!record.exists(), "the record outlived its command");
        let text = std::fs::read_to_string(&copy).unwrap();
        let mut lines = text.lines();
        let seen = lines.next().unwrap();
        let pid = lines.next().unwrap();
        assert!(seen.starts_with(&format!("{pid} ")), "{text}");
    }

    /// What a daemon starting after a crash does: the recorded group stops,
    /// a bystander whose command line names the same directory does not.
    #[test]
    fn a_recorded_group_is_stopped_and_a_bystander_naming_its_path_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join(".build-group");
        let (r, l) = (record.clone(), dir.path().join("l"));
        let build = std::thread::spawn(move || {
            HostRunner.run(
                &Cmd::new("/bin/sh")
                    .args(["-c", "sleep 60 & wait"])
                    .record_group(&r),
                &l,
                &Cancel::new(),
            )
        });
        let mut bystander = Command::new("/bin/sh")
            .args(["-c", "sleep 60"])
            .arg(dir.path())
            .spawn()
            .unwrap();
        while GroupRecord::read(&record).is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let group = GroupRecord::read(&record).unwrap();
        assert!(group.stop(Duration::from_secs(5)));
        assert!(matches!(
            build.join().unwrap(),
            Err(RunError::Failed { .. })
        ));
        assert!(
            matches!(bystander.try_wait(), Ok(None)),
            "the bystander was killed"
        );
        let _ = bystander.kill();
        let _ = bystander.wait();
        assert!(
            !group.stop(Duration::from_secs(1)),
            "nothing is left to stop"
        );
    }

    #[test]
    fn a_childs_pidfd_turns_readable_when_it_exits_and_not_before() {
        let mut child = Cmd::new("sh")
            .args(["-c", "read line"])
            .to_command()
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let fd = pidfd(child.id()).expect("pidfd_open on Linux 5.3 or later");
        // Blocked on its stdin: still running after the wait.
        assert!(!until_readable(&fd, Duration::from_millis(100)));
        drop(child.stdin.take());
        assert!(until_readable(&fd, Duration::from_secs(30)));
        assert!(child.try_wait().unwrap().is_some());
    }
}
