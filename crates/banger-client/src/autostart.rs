//! Starting the daemon on demand: any CLI command that needs the daemon
//! calls [`ensure_daemon`], which starts `bangerd` when nothing answers and
//! waits, bounded, until it does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_api::Ping;
use banger_config::Layout;
use banger_sys::DetachedCommand;

use crate::client::{Client, ClientError};

/// How often the socket is polled while a daemon starts.
const POLL: Duration = Duration::from_millis(25);

use banger_api::exit::DAEMON_ALREADY_RUNNING as EXIT_ALREADY_RUNNING;

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Talking to the socket failed for a reason other than "nobody there".
    #[error("reach bangerd")]
    Client(#[from] ClientError),
    /// banger's directories could not be prepared.
    #[error("prepare directories")]
    Layout(#[from] banger_config::LayoutError),
    /// `bangerd` could not be launched.
    #[error("launch bangerd")]
    Spawn(#[from] banger_sys::SpawnError),
    /// `bangerd` exited before answering.
    #[error("bangerd exited ({status}) before answering{}; see {}", last_line.as_deref().map(|l| format!(": {l}")).unwrap_or_default(), log.display())]
    Exited {
        /// How it exited.
        status: std::process::ExitStatus,
        /// The last line of its log, usually the reason.
        last_line: Option<String>,
        /// The log file.
        log: PathBuf,
    },
    /// `bangerd` did not answer within the timeout.
    #[error("bangerd did not answer on {} within {}s; see {}", socket.display(), timeout.as_secs(), log.display())]
    Timeout {
        /// The socket polled.
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// The log file.
        log: PathBuf,
    },
}

/// A daemon that answers, and whether this call started it.
#[derive(Debug)]
pub struct Started {
    /// A client for it.
    pub client: Client,
    /// Its ping.
    pub ping: Ping,
    /// Whether this call launched it.
    pub launched: bool,
}

/// The `PATH` a daemon started by the CLI runs with, whatever the caller's.
pub const DAEMON_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables a daemon started by the CLI keeps from the caller's
/// environment: those naming its user and directories, the locale, the
/// proxy for registry pulls, and banger's own. Nothing else reaches it
/// (`LD_PRELOAD`, a `PATH` with a writable directory first, credentials).
const KEPT: [&str; 19] = [
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
    "DOCKER_CONFIG",
    "RUST_BACKTRACE",
    "SUDO_USER",
    // Registry pulls go through the user's proxy.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The environment a daemon started from `caller`'s gets: the [`KEPT`]
/// variables, every `BANGER_*` one, and [`DAEMON_PATH`].
pub fn daemon_env(
    caller: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = caller
        .into_iter()
        .filter(|(key, _)| {
            key.to_str()
                .is_some_and(|k| KEPT.contains(&k) || k.starts_with("BANGER_"))
        })
        .collect();
    env.push(("PATH".into(), DAEMON_PATH.into()));
    env
}

/// Returns a client of the running daemon, first starting `bangerd` (in its
/// own session, with this layout) when nothing answers on the socket.
pub async fn ensure_daemon(
    layout: &Layout,
    bangerd: &Path,
    timeout: Duration,
) -> Result<Started, StartError> {
    let client = Client::new(layout.socket_path());
    match client.ping().await {
        Ok(ping) => {
            return Ok(Started {
                client,
                ping,
                launched: false,
            });
        }
        Err(e) if e.is_not_running() => {}
        Err(e) => return Err(e.into()),
    }
    layout.ensure()?;
    let log = layout.log_path();
    let mut command = DetachedCommand::new(bangerd).arg("--detached").env_clear();
    for (key, value) in daemon_env(std::env::vars_os()) {
        command = command.env(key, value);
    }
    for (key, dir) in layout.env_overrides() {
        command = command.env(key, dir);
    }
    let mut child = command.spawn(&log)?;
    let deadline = Instant::now() + timeout;
    // A peer CLI may have launched a daemon at the same moment: ours then
    // exits with EXIT_ALREADY_RUNNING and we keep waiting for the winner.
    let mut lost_race = false;
    loop {
        match client.ping().await {
            Ok(ping) => {
                return Ok(Started {
                    client,
                    ping,
                    launched: !lost_race,
                });
            }
            Err(e) if e.is_not_running() => {}
            Err(e) => return Err(e.into()),
        }
        if !lost_race && let Ok(Some(status)) = child.try_wait() {
            if status.code() == Some(i32::from(EXIT_ALREADY_RUNNING)) {
                lost_race = true;
            } else {
                return Err(StartError::Exited {
                    status,
                    last_line: last_line(&log),
                    log,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(StartError::Timeout {
                socket: client.socket().to_owned(),
                timeout,
                log,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last non-empty line of the log; for a JSON line, its message and
/// error fields.
fn last_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => {
            let fields = &v["fields"];
            let msg = fields["message"].as_str().unwrap_or("");
            match fields["error"].as_str() {
                Some(err) => format!("{msg}: {err}"),
                None => msg.to_owned(),
            }
        }
        Err(_) => line.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_keeps_only_named_variables_and_gets_a_fixed_path() {
        let caller = [
            ("PATH", "/tmp/evil:/usr/bin"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("HOME", "/home/u"),
            ("BANGER_INIT_BIN", "/opt/banger-init"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = daemon_env(caller);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("PATH"), Some(DAEMON_PATH.into()));
        assert_eq!(get("HOME"), Some("/home/u".into()));
        assert_eq!(get("BANGER_INIT_BIN"), Some("/opt/banger-init".into()));
        assert_eq!(get("XDG_RUNTIME_DIR"), Some("/run/user/1000".into()));
        assert_eq!(get("LD_PRELOAD"), None);
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }

    #[test]
    fn last_line_prefers_json_message_and_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("l");
        std::fs::write(
            &log,
            "plain first\n{\"fields\":{\"message\":\"bangerd failed\",\"error\":\"open the store: schema too new\"}}\n\n",
        )
        .unwrap();
        assert_eq!(
            last_line(&log).unwrap(),
            "bangerd failed: open the store: schema too new"
        );
        std::fs::write(&log, "error: boom\n").unwrap();
        assert_eq!(last_line(&log).unwrap(), "error: boom");
        assert_eq!(last_line(&dir.path().join("missing")), None);
    }

    #[tokio::test]
    async fn missing_daemon_binary_is_a_spawn_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let err = ensure_daemon(
            &layout,
            Path::new("/nonexistent/bangerd"),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("/nonexistent/bangerd"), "{chain}");
    }

    #[tokio::test]
    async fn daemon_that_exits_early_is_reported_with_its_last_log_line() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let fake = dir.path().join("fake-bangerd");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'bangerd: error: store is from the future' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = ensure_daemon(&layout, &fake, Duration::from_secs(10))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exited"), "{text}");
        assert!(text.contains("store is from the future"), "{text}");
        assert!(text.contains("bangerd.log"), "{text}");
    }

    #[tokio::test]
    async fn daemon_that_never_answers_times_out_naming_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let fake = dir.path().join("silent-bangerd");
        let pidfile = dir.path().join("pid");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho $$ > {}\nexec sleep 30\n",
                pidfile.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = ensure_daemon(&layout, &fake, Duration::from_millis(300))
            .await
            .unwrap_err();
        let text = err.to_string();
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signalling the fake daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(text.contains("did not answer"), "{text}");
        assert!(text.contains("bangerd.log"), "{text}");
    }
}
