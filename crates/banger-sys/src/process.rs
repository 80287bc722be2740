//! Spawning detached processes and asking whether a pid still lives.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Errors spawning a process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The output file could not be opened.
    #[error("open output file {}", path.display())]
    Output {
        /// The file stdout and stderr were to go to.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("start {}", program.display())]
    Start {
        /// The program.
        program: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A program to start in its own session, detached from the caller's
/// terminal and process group, so it outlives the caller and no signal aimed
/// at the caller's job reaches it.
#[derive(Debug, Clone)]
pub struct DetachedCommand {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    clear_env: bool,
}

impl DetachedCommand {
    /// A command running `program` with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            clear_env: false,
        }
    }

    /// Starts the child with only the variables set with [`Self::env`],
    /// none of the caller's.
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Appends one argument; it is passed as is, never through a shell.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Starts the program with stdin from /dev/null and stdout and stderr
    /// appended to `output` (created 0600). The returned child may be polled
    /// with `try_wait`; dropping it does not kill the process.
    pub fn spawn(&self, output: &Path) -> Result<Child, SpawnError> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(output)
                .map_err(|source| SpawnError::Output {
                    path: output.to_owned(),
                    source,
                })
        };
        let stdout = open()?;
        let stderr = open()?;
        let mut command = Command::new(&self.program);
        if self.clear_env {
            command.env_clear();
        }
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: setsid is async-signal-safe and touches no memory; it runs
        // in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().map_err(|source| SpawnError::Start {
            program: self.program.clone(),
            source,
        })
    }
}

/// Whether `pid` names a live process (a zombie counts as dead), judged from
/// `proc_root` (normally `/proc`).
///
/// A SIGKILLed multi-threaded process shows its leader as a zombie while
/// its other threads are still exiting, and those still hold its files (a
/// listening socket keeps accepting, then resets). So a zombie leader
/// counts as alive until no other thread of it is left running.
pub fn pid_alive_in(proc_root: &Path, pid: u32) -> bool {
    let dir = proc_root.join(pid.to_string());
    match task_alive(&dir.join("stat")) {
        Some(true) => true,
        None => false,
        Some(false) => std::fs::read_dir(dir.join("task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| task_alive(&task.path().join("stat")) == Some(true)),
    }
}

/// The state in a `stat` file: `Some(false)` for a zombie or a dead task,
/// `None` when it cannot be read.
fn task_alive(stat: &Path) -> Option<bool> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // The state follows the parenthesised comm, which may itself hold ')'.
    let rest = stat.rfind(')').map(|i| &stat[i + 1..])?;
    match rest.split_whitespace().next()? {
        "Z" | "X" => Some(false),
        _ => Some(true),
    }
}

/// Whether `pid` names a live process on this host.
pub fn pid_alive(pid: u32) -> bool {
    pid_alive_in(Path::new("/proc"), pid)
}

/// Runs `program` with `args` in the foreground, sharing this process's
/// terminal and standard streams, and returns how it exited.
pub fn run_foreground<I, S>(program: &str, args: I) -> std::io::Result<std::process::ExitStatus>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(program).args(args).status()
}

/// Replaces this process with `program` (returns only on failure).
pub fn exec<I, S>(program: &str, args: I) -> std::io::Error
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(program).args(args).exec()
}

/// Whether the command line of `pid` mentions `needle` (a VM's directory):
/// tells a VMM from an unrelated process that reused its pid.
pub fn cmdline_mentions(pid: u32, needle: &Path) -> bool {
    let needle = needle.as_os_str().as_encoded_bytes();
    std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
        .is_ok_and(|c| !needle.is_empty() && c.windows(needle.len()).any(|w| w == needle))
}

/// The command name (`/proc/<pid>/comm`) of `pid`, read from `proc_root`.
pub fn comm_in(proc_root: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .ok()
        .map(|c| c.trim_end_matches('\n').to_owned())
}

/// Whether `pid` (read from `proc_root`) is a live process named `comm`
/// whose argument list holds `flag` immediately followed by `value`.
pub fn has_arg_pair(proc_root: &Path, pid: u32, comm: &str, flag: &str, value: &Path) -> bool {
    let value = value.as_os_str().as_encoded_bytes();
    comm_in(proc_root, pid).as_deref() == Some(comm)
        && std::fs::read(proc_root.join(pid.to_string()).join("cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == flag.as_bytes() && w[1] == value)
        })
        && pid_alive_in(proc_root, pid)
}

/// The live processes (read from `proc_root`) named `comm` whose argument
/// list holds `flag` immediately followed by `value`: a VMM found by the
/// socket path on its command line.
pub fn find_by_arg(proc_root: &Path, comm: &str, flag: &str, value: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| has_arg_pair(proc_root, *pid, comm, flag, value))
        .collect();
    pids.sort_unstable();
    pids
}

/// SIGKILLs `pid`.
pub fn kill(pid: u32) {
    signal(pid, libc::SIGKILL);
}

/// SIGKILLs `pid` and waits, at most `within`, until it has died: SIGKILL
/// lands asynchronously, and a caller that reports "nothing left" must not
/// return while the process still holds its sockets and disks. Whether it
/// died in time.
pub fn kill_and_wait(pid: u32, within: std::time::Duration) -> bool {
    kill(pid);
    let deadline = std::time::Instant::now() + within;
    while pid_alive(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

/// Sends `sig` to `pid`; a pid that does not fit is ignored.
pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        // SAFETY: kill(2) on a plain pid touches no memory.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The process groups (read from `proc_root`) of every process whose
/// command line mentions `needle`, this process's own group excepted.
pub fn groups_mentioning(proc_root: &Path, needle: &str) -> Vec<u32> {
    let own = std::fs::read_to_string(proc_root.join("self/stat"))
        .ok()
        .and_then(|s| stat_pgid(&s));
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut groups: Vec<u32> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(needle))
            })
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| stat_pgid(&s))
        .filter(|g| Some(*g) != own && *g > 1)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn stat_pgid(stat: &str) -> Option<u32> {
    // pid (comm) state ppid pgrp ...
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(pid: u32, stat: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(pid.to_string())).unwrap();
        std::fs::write(dir.path().join(pid.to_string()).join("stat"), stat).unwrap();
        dir
    }

    #[test]
    fn cmdline_mentions_finds_a_path_among_the_arguments() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        assert!(cmdline_mentions(me, exe.parent().unwrap()));
        assert!(!cmdline_mentions(me, Path::new("/no/such/banger/dir")));
        assert!(!cmdline_mentions(me, Path::new("")));
    }

    #[test]
    fn pid_alive_reads_state_after_comm_with_parens() {
        let proc = fake_proc(42, "42 (weird) name) S 1 42 42 0 -1");
        assert!(pid_alive_in(proc.path(), 42));
        let proc = fake_proc(43, "43 (bangerd) Z 1 43 43 0 -1");
        assert!(!pid_alive_in(proc.path(), 43));
        assert!(!pid_alive_in(proc.path(), 44));
    }

    /// The real thing: a leader that left by `pthread_exit` is a zombie
    /// while its other thread still sleeps.
    #[test]
    fn a_process_whose_main_thread_exited_is_alive_until_its_last_thread_is() {
        let script = "import ctypes, threading, time\n\
                      threading.Thread(target=time.sleep, args=(30,)).start()\n\
                      ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", script])
            .spawn()
            .expect("python3 (scripts/lib.sh installs it)");
        let pid = child.id();
        let leader = Path::new("/proc").join(pid.to_string()).join("stat");
        let zombie = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            task_alive(&leader) == Some(false)
        });
        assert!(zombie, "the leader never became a zombie");
        assert!(pid_alive(pid), "its sleeping thread still runs");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn a_zombie_leader_is_alive_while_another_thread_still_runs() {
        let proc = fake_proc(50, "50 (bangerd) Z 1 50 50 0 -1");
        let task = |tid: u32, state: &str| {
            let dir = proc.path().join("50/task").join(tid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), format!("{tid} (tokio-rt) {state} 1")).unwrap();
        };
        task(50, "Z");
        assert!(!pid_alive_in(proc.path(), 50), "only the zombie leader");
        task(51, "R");
        assert!(pid_alive_in(proc.path(), 50), "a thread is still exiting");
        task(51, "X");
        assert!(!pid_alive_in(proc.path(), 50));
    }

    #[test]
    fn find_by_arg_wants_the_comm_the_flag_value_pair_and_a_live_process() {
        let proc = tempfile::tempdir().unwrap();
        let add = |pid: u32, comm: &str, cmdline: &[u8], state: &str| {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
            std::fs::write(dir.join("stat"), format!("{pid} ({comm}) {state} 1 {pid}")).unwrap();
        };
        let sock = Path::new("/s/vms/ab/vmm.sock");
        add(
            20,
            "firecracker",
            b"firecracker\0--api-sock\0/s/vms/ab/vmm.sock\0",
            "S",
        );
        // Another VM's socket, whose path merely starts the same way.
        add(
            21,
            "firecracker",
            b"firecracker\0--api-sock\0/s/vms/ab/vmm.sock2\0",
            "S",
        );
        // The path as a value of another flag.
        add(
            22,
            "firecracker",
            b"firecracker\0--log\0/s/vms/ab/vmm.sock\0",
            "S",
        );
        // A pid reused by something else that mentions the socket.
        add(23, "sh", b"sh\0--api-sock\0/s/vms/ab/vmm.sock\0", "S");
        // A dead (zombie) VMM.
        add(
            24,
            "firecracker",
            b"firecracker\0--api-sock\0/s/vms/ab/vmm.sock\0",
            "Z",
        );
        assert_eq!(
            find_by_arg(proc.path(), "firecracker", "--api-sock", sock),
            [20]
        );
        assert_eq!(comm_in(proc.path(), 23).as_deref(), Some("sh"));
        assert_eq!(comm_in(proc.path(), 99), None);
    }

    #[test]
    fn groups_mentioning_finds_the_group_of_a_matching_command_line() {
        let proc = tempfile::tempdir().unwrap();
        let add = |pid: u32, cmdline: &[u8], pgid: u32| {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
            std::fs::write(dir.join("stat"), format!("{pid} (x y) S 1 {pgid} {pgid} 0")).unwrap();
        };
        add(
            10,
            b"mmdebstrap\0--format=tar\0/c/images/.staging-deb-01/rootfs.tar\0",
            10,
        );
        add(11, b"make\0-C\0/c/kernels/.staging-k-02/work\0", 11);
        add(12, b"bash\0", 12);
        std::fs::create_dir_all(proc.path().join("self")).unwrap();
        std::fs::write(proc.path().join("self/stat"), "99 (t) S 1 99 99 0").unwrap();
        assert_eq!(groups_mentioning(proc.path(), ".staging-deb-01"), [10]);
        assert_eq!(groups_mentioning(proc.path(), "/c/"), [10, 11]);
        assert!(groups_mentioning(proc.path(), "nothing").is_empty());
    }

    #[test]
    fn pid_alive_sees_this_process() {
        assert!(pid_alive(std::process::id()));
    }

    #[test]
    fn detached_child_gets_own_session_and_output_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let mut child = DetachedCommand::new("/bin/sh")
            .arg("-c")
            .arg("echo sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$; echo err >&2")
            .spawn(&out)
            .unwrap();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&out).unwrap();
        // In its own session, the shell is the session leader: sid == pid.
        let first = text.lines().next().unwrap();
        let sid = first
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("sid=");
        let pid = first
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_start_matches("pid=");
        assert_eq!(sid, pid, "{text}");
        assert!(text.contains("err"), "{text}");
    }

    #[test]
    fn spawn_of_missing_program_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = DetachedCommand::new("/nonexistent/bangerd")
            .spawn(&dir.path().join("o"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/bangerd"), "{err}");
    }
}
