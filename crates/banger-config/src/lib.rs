//! Where banger keeps its files and what the user configured.
//!
//! [`Layout`] resolves the config, state, cache and runtime directories from
//! XDG, each overridable by a `BANGER_*_DIR` variable so tests run fully
//! isolated. [`Config`] is `config.toml`; `docs/config.md` documents every
//! key and a test keeps the two in step. Neither touches anything outside
//! those directories.

pub mod config;
pub mod file_sync;
pub mod install;
pub mod layout;

pub use config::{Accel, Config, ConfigError, LogLevel, VmmChoice, check_guest_path};
pub use file_sync::FileSync;
pub use layout::{Layout, LayoutError};
