//! Exit codes one binary reads from another: `bangerd` tells the CLI's
//! autostart that it lost the race to a daemon already running.

/// `bangerd` found another daemon serving the socket.
pub const DAEMON_ALREADY_RUNNING: u8 = 3;

/// `banger daemon status`/`stop` found no daemon.
pub const DAEMON_NOT_RUNNING: u8 = 3;
