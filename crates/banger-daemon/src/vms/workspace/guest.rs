//! Shell sessions in a guest over the daemon's own SSH: a fixed script,
//! its arguments quoted for the guest's shell, the request's stream on its
//! stdin, and its output read with a bound (the guest writes it).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use banger_api::SshTarget;
use banger_api::text::shell_quote;

/// Why a guest session failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// ssh could not be started.
    #[error("run ssh: {0}")]
    Spawn(#[source] std::io::Error),
    /// The stream for the guest's stdin broke (the client went away, or
    /// sent a broken stream).
    #[error("the workspace stream broke: {0}")]
    Input(#[source] std::io::Error),
    /// The script failed in the guest (255: ssh itself failed).
    #[error("exit status {code}: {stderr}")]
    Exit {
        /// The exit code; -1 when ssh was killed.
        code: i32,
        /// The end of what it printed on stderr, made printable.
        stderr: String,
    },
    /// The guest printed more than the caller takes.
    #[error("the guest sent more than {0} bytes")]
    TooMuch(usize),
    /// Reading what the guest printed failed.
    #[error("read the guest's output: {0}")]
    Output(#[source] std::io::Error),
    /// The session outlived its deadline (ssh was killed).
    #[error("the guest did not finish within {}s", .0.as_secs())]
    TimedOut(Duration),
}

/// One script run in a guest.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// The script, for `sh -c`.
    pub script: &'a str,
    /// Its positional arguments.
    pub args: &'a [&'a str],
    /// Most stdout taken.
    pub max: usize,
    /// How long the whole session may take: a guest that never finishes
    /// must not hold the VM's workspace lock for ever.
    pub deadline: Duration,
}

/// Runs scripts in guests; faked in unit tests.
pub trait GuestShell: Send + Sync + std::fmt::Debug {
    /// Runs `session` in the guest at `target`, feeding it `input`; its
    /// stdout.
    fn run(
        &self,
        target: &SshTarget,
        session: &Session<'_>,
        input: &mut dyn Read,
    ) -> Result<Vec<u8>, GuestError>;

    /// Opens a control master for `target` at `control`, a process of its
    /// own that outlives this call, writing to `log`; whether it is up.
    fn open_master(&self, _target: &SshTarget, _control: &Path, _log: &Path) -> bool {
        false
    }

    /// Whether a master answers at `control`.
    fn master_alive(&self, _control: &Path) -> bool {
        false
    }

    /// Asks the master at `control` to exit.
    fn close_master(&self, _control: &Path) {}
}

/// The remote command: `sh -c SCRIPT NAME ARGS...`, each word quoted, as
/// ssh sends the guest one string for its shell.
pub fn remote_command(script: &str, args: &[&str]) -> String {
    ["sh", "-c", script, "banger"]
        .iter()
        .chain(args)
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The real thing: `ssh` with the daemon's key and pinned host key.
#[derive(Debug)]
pub struct SshShell;

/// Most of the guest's stderr kept for an error message.
const STDERR_TAIL: usize = 8 * 1024;

/// How long a master may take to connect and authenticate, and a
/// control command to answer.
const MASTER_DEADLINE: Duration = Duration::from_secs(20);
const CONTROL_DEADLINE: Duration = Duration::from_secs(5);

impl GuestShell for SshShell {
    fn open_master(&self, target: &SshTarget, control: &Path, log: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(log)
        };
        let (Ok(out), Ok(err)) = (open(), open()) else {
            return false;
        };
        // -f: ssh goes to the background once authenticated (its own
        // session, so no signal meant for the daemon reaches it), and the
        // call returns; -N: no command, it only carries others' sessions.
        let cmd = session_options(target)
            .args(["-M", "-N", "-f", "-o", "ControlPersist=yes"])
            .arg("-o")
            .arg(format!("ControlPath={}", control.display()))
            .arg(target.destination());
        let mut command = cmd.to_command();
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        exits_ok_within(command, MASTER_DEADLINE)
    }

    fn master_alive(&self, control: &Path) -> bool {
        exits_ok_within(control_cmd(control, "check"), CONTROL_DEADLINE)
    }

    fn close_master(&self, control: &Path) {
        exits_ok_within(control_cmd(control, "exit"), CONTROL_DEADLINE);
    }

    fn run(
        &self,
        target: &SshTarget,
        session: &Session<'_>,
        input: &mut dyn Read,
    ) -> Result<Vec<u8>, GuestError> {
        let cmd = session_cmd(target, session);
        let mut child = cmd
            .to_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(GuestError::Spawn)?;
        let pid = child.id();
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(GuestError::Spawn(std::io::Error::other("no pipes")));
        };
        // The readers and the watchdog may stop ssh; it is reaped only
        // after all three are joined, so the pid is still its own.
        let control = target.control_path.clone();
        let kill = move || {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid.cast_signed(), libc::SIGKILL) };
            // Through a master, the session's pipes are also the master's,
            // closed only when the guest closes the channel: a guest that
            // never does would hold this call for ever. The master goes
            // (the next session opens another).
            if let Some(control) = &control {
                exits_ok_within(control_cmd(Path::new(control), "exit"), CONTROL_DEADLINE);
            }
        };
        let deadline = session.deadline;
        let (done, watchdog) = watchdog(deadline, kill.clone());
        let max = session.max;
        let stop = kill.clone();
        let out = std::thread::spawn(move || bounded(stdout, max, stop));
        let err = std::thread::spawn(move || tail(stderr));
        // Big writes: 8 KiB ones (io::copy's) cost the host CPU the
        // guest's emulated CPUs are short of.
        let fed = copy_big(input, &mut stdin).and_then(|()| stdin.flush());
        if fed.is_err() {
            // Killed before stdin closes: the guest must not see a clean
            // end of a stream that broke.
            kill();
        }
        drop(stdin);
        let out = out.join().unwrap_or(Err(GuestError::TooMuch(max)));
        let stderr = err.join().unwrap_or_default();
        let _ = done.send(());
        let late = watchdog.join().unwrap_or(true);
        let status = child.wait().map_err(GuestError::Spawn)?;
        if late {
            return Err(GuestError::TimedOut(deadline));
        }
        verdict(status, fed, out, &stderr)
    }
}

/// The ssh command for `session`.
fn session_cmd(target: &SshTarget, session: &Session<'_>) -> banger_sys::Cmd {
    session_options(target)
        .arg(target.destination())
        .arg(remote_command(session.script, session.args))
}

/// `ssh -O <op>` to the master at `control`, quiet.
fn control_cmd(control: &Path, op: &str) -> std::process::Command {
    let mut command = banger_sys::Cmd::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-O", op])
        .arg("-o")
        .arg(format!("ControlPath={}", control.display()))
        .arg("banger-master")
        .to_command();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Runs `command`, killing it after `deadline`; whether it exited 0.
/// Polled, so the pid is never signalled once reaped.
fn exits_ok_within(mut command: std::process::Command, deadline: Duration) -> bool {
    let Ok(mut child) = command.spawn() else {
        return false;
    };
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The daemon's ssh options for guest sessions, without the destination.
fn session_options(target: &SshTarget) -> banger_sys::Cmd {
    super::super::ssh::daemon_ssh_options(target)
        // A guest that dies or a VM that stops mid-session ends it.
        .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
        // AES-GCM first (`^`: ahead of ssh's defaults): with AES-NI (or QEMU's helpers for it under
        // TCG) it moved 60 MB into a guest in 6.7 s where ssh's
        // default, chacha20-poly1305, took 11.
        .args([
            "-o",
            "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com",
        ])
}

/// Copies all of `from` to `to` in writes of up to 256 KiB.
fn copy_big(from: &mut dyn Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut filled = 0;
        // Fill the buffer (or reach the end) before each write.
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        to.write_all(&buf[..filled])?;
    }
}

/// A thread that calls `kill` unless told (through the sender) that the
/// session ended within `deadline`; it answers whether it killed.
fn watchdog(
    deadline: Duration,
    kill: impl FnOnce() + Send + 'static,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let late = finished.recv_timeout(deadline).is_err();
        if late {
            kill();
        }
        late
    });
    (done, thread)
}

/// What a session's exit status, input copy, stdout and stderr add up to.
fn verdict(
    status: std::process::ExitStatus,
    fed: std::io::Result<()>,
    out: Result<Vec<u8>, GuestError>,
    stderr: &[u8],
) -> Result<Vec<u8>, GuestError> {
    if let Err(e) = fed {
        // A guest that exits early (a failed tar) closes the pipe: its
        // own error says more than the broken pipe.
        if e.kind() != std::io::ErrorKind::BrokenPipe || status.success() {
            return Err(GuestError::Input(e));
        }
    }
    let out = out?;
    if !status.success() {
        return Err(GuestError::Exit {
            code: status.code().unwrap_or(-1),
            stderr: banger_api::text::printable(&String::from_utf8_lossy(stderr))
                .trim()
                .to_owned(),
        });
    }
    Ok(out)
}

/// Reads all of `r` if it holds at most `max` bytes; else stops the
/// writer and fails.
fn bounded(r: impl Read, max: usize, stop: impl FnOnce()) -> Result<Vec<u8>, GuestError> {
    let mut out = Vec::new();
    let n = r
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(GuestError::Output)?;
    if n > max {
        stop();
        return Err(GuestError::TooMuch(max));
    }
    Ok(out)
}

/// The last [`STDERR_TAIL`] bytes of `r`.
fn tail(mut r: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_goes_on_in_big_writes_whole() {
        /// Hands out 1000 bytes a read.
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(1000).min(self.0.len() - self.1);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        #[derive(Default)]
        struct Writes(Vec<usize>, Vec<u8>);
        impl Write for Writes {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.push(buf.len());
                self.1.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Writes::default();
        copy_big(&mut Trickle(data.clone(), 0), &mut out).unwrap();
        assert_eq!(out.1, data);
        assert_eq!(out.0, [256 * 1024, 256 * 1024, 600_000 - 512 * 1024]);
    }

    #[test]
    fn every_word_reaches_the_guest_shell_as_one_word() {
        assert_eq!(shell_quote("make"), "make");
        assert_eq!(shell_quote("exit 7"), "'exit 7'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        let cmd = remote_command("echo \"$1\"", &["a b", "$(id)"]);
        assert_eq!(cmd, r#"sh -c 'echo "$1"' banger 'a b' '$(id)'"#);
        // What a shell makes of it.
        let out = banger_sys::Cmd::new("sh")
            .arg("-c")
            .arg(&cmd)
            .to_command()
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"a b\n");
    }

    #[test]
    fn output_past_the_bound_stops_the_writer() {
        let stopped = std::cell::Cell::new(false);
        assert_eq!(
            bounded(&b"12345"[..], 5, || stopped.set(true)).unwrap(),
            b"12345"
        );
        assert!(!stopped.get());
        assert!(matches!(
            bounded(&b"123456"[..], 5, || stopped.set(true)),
            Err(GuestError::TooMuch(5))
        ));
        assert!(stopped.get());
        let long = vec![b'x'; STDERR_TAIL * 3];
        assert_eq!(tail(&long[..]).len(), STDERR_TAIL);
    }

    #[test]
    fn the_watchdog_kills_only_a_late_session() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let killed = Arc::new(AtomicBool::new(false));
        let k = killed.clone();
        let (done, thread) = watchdog(Duration::from_secs(30), move || {
            k.store(true, Ordering::SeqCst)
        });
        done.send(()).unwrap();
        assert!(!thread.join().unwrap());
        assert!(!killed.load(Ordering::SeqCst));
        let k = killed.clone();
        let (_done, thread) = watchdog(Duration::from_millis(20), move || {
            k.store(true, Ordering::SeqCst)
        });
        assert!(thread.join().unwrap());
        assert!(killed.load(Ordering::SeqCst));
    }
}
