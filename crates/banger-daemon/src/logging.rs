//! The daemon's logs: JSON lines, to stderr and to `bangerd.log` in the
//! state directory. Every line a request causes carries its op id (the
//! `request` span).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_config::LogLevel;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Variable that overrides the configured level with a full filter
/// directive, e.g. `BANGER_LOG=debug`.
pub const LOG_ENV: &str = "BANGER_LOG";

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log file could not be opened.
    #[error("open log file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `BANGER_LOG` held an invalid filter.
    #[error("{LOG_ENV}={value:?} is not a valid log filter: {message}")]
    Filter {
        /// The variable's value.
        value: String,
        /// The parser's message.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Installs the global subscriber: JSON lines to `log_path` (appended,
/// 0600) and, when `to_stderr`, to stderr as well.
pub fn init(log_path: &Path, level: LogLevel, to_stderr: bool) -> Result<(), LoggingError> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LoggingError::Filter {
                message: e.to_string(),
                value,
            })?
        }
        _ => EnvFilter::new(level.as_str()),
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_path)
        .map_err(|source| LoggingError::Open {
            path: log_path.to_owned(),
            source,
        })?;
    let file_layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(Arc::new(file));
    let stderr_layer = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)
}
