//! `config.toml`: what the user chose. Every key is documented, with its
//! default, in `docs/config.md`; a test keeps the two in step.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::file_sync::FileSync;

/// Errors loading `config.toml`. A missing file is not an error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key holds a value of the wrong type or out of range.
    #[error("config file {}: key `{key}`: {message}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong with the value.
        message: String,
    },
}

/// The daemon's log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-connection detail.
    Trace,
    /// Every request, routine ones included.
    Debug,
    /// Lifecycle events and failures.
    Info,
    /// Failures and oddities only.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The level as `tracing`'s filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// banger's configuration. Missing keys take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The daemon's log verbosity.
    pub log_level: LogLevel,
    /// How long a CLI command waits for a daemon it started to answer.
    pub daemon_start_timeout_secs: u64,
    /// Debian mirror for image builds; empty means the one apt uses.
    pub debian_mirror: String,
    /// The bridge every VM's tap joins.
    pub bridge: String,
    /// The host's address on the bridge and the guests' subnet.
    pub bridge_subnet: String,
    /// How guests' CPUs run: `auto` (KVM when the probe says it works),
    /// `kvm` or `tcg`.
    pub accel: Accel,
    /// How long a start waits for the guest's SSH server.
    pub boot_timeout_secs: u64,
    /// How long a stop waits for the guest to power off before killing it.
    pub stop_timeout_secs: u64,
    /// Which VMM runs guests: `auto` (Firecracker when it is installed and
    /// KVM is usable, else QEMU), `qemu` or `firecracker`.
    pub vmm: VmmChoice,
    /// The Firecracker binary (a name looked up on PATH, or a path).
    pub firecracker_bin: String,
    /// The jailer binary; empty runs Firecracker without it.
    pub jailer_bin: String,
    /// Most a registry image may unpack to, all layers together, in GiB.
    pub image_max_unpacked_gib: u64,
    /// Most tar entries a registry image may hold, all layers together.
    pub image_max_entries: u64,
    /// Where a VM's workspace (the repository `vm run PATH` and `vm
    /// workspace prepare` carry) lives in the guest: an absolute path
    /// under `/root` (the work disk, kept across stop and start).
    pub workspace_guest_path: String,
    /// Host files and directories copied onto each new VM's work disk.
    pub file_sync: Vec<FileSync>,
}

/// Which VMM runs guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmmChoice {
    /// Firecracker when installed and KVM is usable, else QEMU.
    Auto,
    /// QEMU microvm.
    Qemu,
    /// Firecracker; VMs fail to create where KVM is unusable.
    Firecracker,
}

impl VmmChoice {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Qemu => "qemu",
            Self::Firecracker => "firecracker",
        }
    }
}

/// How guests' CPUs are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a probe boot under KVM works, else TCG.
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG (software).
    Tcg,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            daemon_start_timeout_secs: 15,
            debian_mirror: String::new(),
            bridge: "banger0".to_owned(),
            bridge_subnet: "10.77.0.1/24".to_owned(),
            accel: Accel::Auto,
            boot_timeout_secs: 180,
            stop_timeout_secs: 60,
            vmm: VmmChoice::Auto,
            firecracker_bin: "firecracker".to_owned(),
            jailer_bin: String::new(),
            image_max_unpacked_gib: 64,
            image_max_entries: 4_000_000,
            workspace_guest_path: "/root/repo".to_owned(),
            file_sync: Vec::new(),
        }
    }
}

/// A workspace path in the guest: under `/root` (so it is on the work
/// disk and survives stop and start), plain components only, so it can
/// be given to the guest's shell quoted and never reinterpreted.
pub fn check_guest_path(path: &str) -> Result<(), String> {
    let rest = path.strip_prefix("/root/").unwrap_or_default();
    // No dot components: `/root/.ssh` would lose the guest its key.
    let plain = |c: &str| {
        !c.is_empty()
            && !c.starts_with('.')
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
    };
    if rest.is_empty() || path.len() > 200 || !rest.split('/').all(plain) {
        return Err(format!(
            "must be an absolute path under /root made of letters, digits, '.', '_' and '-', no component starting with '.' (like /root/repo), got {path:?}"
        ));
    }
    Ok(())
}

/// A loaded configuration and the warnings its loading raised (unknown keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// One human-readable line per ignored key.
    pub warnings: Vec<String>,
}

impl Config {
    /// Every key with its default as written in TOML, in documentation order.
    pub const KEYS: &'static [(&'static str, &'static str)] = &[
        ("log_level", "\"info\""),
        ("daemon_start_timeout_secs", "15"),
        ("debian_mirror", "\"\""),
        ("bridge", "\"banger0\""),
        ("bridge_subnet", "\"10.77.0.1/24\""),
        ("accel", "\"auto\""),
        ("boot_timeout_secs", "180"),
        ("stop_timeout_secs", "60"),
        ("vmm", "\"auto\""),
        ("firecracker_bin", "\"firecracker\""),
        ("jailer_bin", "\"\""),
        ("image_max_unpacked_gib", "64"),
        ("image_max_entries", "4000000"),
        ("workspace_guest_path", "\"/root/repo\""),
        ("file_sync", "[]"),
    ];

    /// Loads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded {
                config: Self::default(),
                warnings: Vec::new(),
            }),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.message().to_owned() + &location(text, e.span()),
                })?;
        let mut unknown = Vec::new();
        let config: Self = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
            toml::Value::Table(table),
            &mut |p: serde_ignored::Path<'_>| unknown.push(p.to_string()),
        ))
        .map_err(|e| ConfigError::Value {
            path: path.to_owned(),
            key: e.path().to_string(),
            message: e.into_inner().message().to_owned(),
        })?;
        config.validate(path)?;
        let warnings = unknown
            .into_iter()
            .map(|key| {
                format!(
                    "config file {}: unknown key `{key}` ignored",
                    path.display()
                )
            })
            .collect();
        Ok(Loaded { config, warnings })
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let value = |key: &str, message: String| ConfigError::Value {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        check_guest_path(&self.workspace_guest_path)
            .map_err(|m| value("workspace_guest_path", m))?;
        for (i, entry) in self.file_sync.iter().enumerate() {
            let key = format!("file_sync[{i}]");
            entry
                .check(&self.workspace_guest_path)
                .map_err(|m| value(&key, m))?;
            // One tree per guest path: two entries laid over each other
            // could meet a file where a directory is expected.
            if let Some(j) = self.file_sync[..i].iter().position(|other| {
                crate::file_sync::is_within(&entry.guest, &other.guest)
                    || crate::file_sync::is_within(&other.guest, &entry.guest)
            }) {
                return Err(value(
                    &key,
                    format!("guest {:?} overlaps file_sync[{j}]'s", entry.guest),
                ));
            }
        }
        banger_api::net::check_ifname("bridge", &self.bridge, "")
            .map_err(|e| value("bridge", e.to_string()))?;
        self.subnet()
            .map_err(|e| value("bridge_subnet", e.to_string()))?;
        for (key, secs) in [
            ("boot_timeout_secs", self.boot_timeout_secs),
            ("stop_timeout_secs", self.stop_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(value(
                    key,
                    format!("must be between 1 and 3600 seconds, got {secs}"),
                ));
            }
        }
        if !(1..=16384).contains(&self.image_max_unpacked_gib) {
            return Err(value(
                "image_max_unpacked_gib",
                format!(
                    "must be between 1 and 16384 GiB, got {}",
                    self.image_max_unpacked_gib
                ),
            ));
        }
        if !(1000..=1_000_000_000).contains(&self.image_max_entries) {
            return Err(value(
                "image_max_entries",
                format!(
                    "must be between 1000 and 1000000000, got {}",
                    self.image_max_entries
                ),
            ));
        }
        if !(1..=600).contains(&self.daemon_start_timeout_secs) {
            return Err(ConfigError::Value {
                path: path.to_owned(),
                key: "daemon_start_timeout_secs".into(),
                message: format!(
                    "must be between 1 and 600 seconds, got {}",
                    self.daemon_start_timeout_secs
                ),
            });
        }
        for (key, bin, may_be_empty) in [
            ("firecracker_bin", &self.firecracker_bin, false),
            ("jailer_bin", &self.jailer_bin, true),
        ] {
            if bin.is_empty() && !may_be_empty {
                return Err(value(key, "must name a binary".to_owned()));
            }
            if bin.chars().any(char::is_control) {
                return Err(value(key, "must not contain control characters".to_owned()));
            }
        }
        let mirror = &self.debian_mirror;
        let scheme_ok = ["http://", "https://", "file:/"]
            .iter()
            .any(|p| mirror.starts_with(p));
        if !mirror.is_empty() && !scheme_ok {
            return Err(ConfigError::Value {
                path: path.to_owned(),
                key: "debian_mirror".into(),
                message: format!("must be an http://, https:// or file:/ URL, got {mirror:?}"),
            });
        }
        if mirror.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::Value {
                path: path.to_owned(),
                key: "debian_mirror".into(),
                message: "must not contain whitespace".into(),
            });
        }
        Ok(())
    }

    /// The parsed `bridge_subnet`.
    pub fn subnet(&self) -> Result<banger_api::net::Subnet, banger_api::net::InvalidValue> {
        self.bridge_subnet.parse()
    }

    /// The Debian mirror to build from: the configured one, else the first
    /// non-security mirror in apt's sources under `etc_apt`, else
    /// `http://deb.debian.org/debian`.
    pub fn debian_mirror_or_apt(&self, etc_apt: &Path) -> String {
        if !self.debian_mirror.is_empty() {
            return self.debian_mirror.clone();
        }
        apt_mirror(etc_apt).unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
    }
}

/// The first Debian mirror in apt's sources that is not a security
/// mirror, from one-line `sources.list` files and deb822 `.sources` files.
pub fn apt_mirror(etc_apt: &Path) -> Option<String> {
    let mut files = vec![etc_apt.join("sources.list")];
    if let Ok(dir) = std::fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let usable = |uri: &str| {
        (uri.starts_with("http://") || uri.starts_with("https://")) && !uri.contains("security")
    };
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "sources" {
            for line in text.lines() {
                if let Some(uris) = line.strip_prefix("URIs:")
                    && let Some(uri) = uris.split_whitespace().find(|u| usable(u))
                {
                    return Some(uri.trim_end_matches('/').to_owned());
                }
            }
        } else if ext == "list" {
            for line in text.lines().map(str::trim) {
                let mut words = line.split_whitespace();
                if words.next() != Some("deb") {
                    continue;
                }
                // Skip an options block: deb [arch=amd64] URL suite ...
                let uri = words.find(|w| !w.starts_with('[') && !w.ends_with(']'));
                if let Some(uri) = uri.filter(|u| usable(u)) {
                    return Some(uri.trim_end_matches('/').to_owned());
                }
            }
        }
    }
    None
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
    format!(" (line {line}, column {col})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Config::parse(text, Path::new("/etc/x/config.toml"))
    }

    #[test]
    fn the_workspace_path_is_a_plain_path_under_root() {
        assert_eq!(
            parse("workspace_guest_path = \"/root/src/app\"\n")
                .unwrap()
                .config
                .workspace_guest_path,
            "/root/src/app"
        );
        for bad in [
            "/root",
            "/root/",
            "/root/.ssh",
            "/root/a/.config",
            "/etc/x",
            "root/x",
            "/root/../etc",
            "/root/a b",
            "/root/$(id)",
            "/root//x",
            "/root/x'",
        ] {
            let err = parse(&format!("workspace_guest_path = {bad:?}\n")).unwrap_err();
            assert!(
                err.to_string().contains("workspace_guest_path"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn file_sync_entries_parse_and_a_bad_one_is_named_by_index() {
        let text = "[[file_sync]]\nhost = \"~/.aws\"\nguest = \"/root/.aws\"\n\n[[file_sync]]\nhost = \"~/.npmrc\"\nguest = \"/root/.npmrc\"\nmode = \"0600\"\n";
        let config = parse(text).unwrap().config;
        assert_eq!(config.file_sync.len(), 2);
        assert_eq!(config.file_sync[1].mode_bits(), Some(0o600));
        let err = parse(&text.replace("/root/.npmrc", "/etc/npmrc"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`file_sync[1]`") && err.contains("guest must be"),
            "{err}"
        );
        let err = parse("[[file_sync]]\nhost = \"~/.aws\"\ngest = \"/root/.aws\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("file_sync") && err.contains("gest"), "{err}");
        let err = parse(&format!(
            "{text}\n[[file_sync]]\nhost = \"~/x\"\nguest = \"/root/.aws/x\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`file_sync[2]`") && err.contains("overlaps file_sync[0]"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = Config::load(&dir.path().join("config.toml")).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn empty_file_gives_defaults_and_keys_override() {
        assert_eq!(parse("").unwrap().config, Config::default());
        let loaded = parse("log_level = \"debug\"\ndaemon_start_timeout_secs = 30\n").unwrap();
        assert_eq!(loaded.config.log_level, LogLevel::Debug);
        assert_eq!(loaded.config.daemon_start_timeout_secs, 30);
    }

    #[test]
    fn unknown_key_is_a_warning_naming_it() {
        let loaded = parse("log_level = \"warn\"\nbridge_nmae = \"x\"\n[extra]\nk = 1\n").unwrap();
        assert_eq!(loaded.config.log_level, LogLevel::Warn);
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("`bridge_nmae`"),
            "{:?}",
            loaded.warnings
        );
        assert!(
            loaded.warnings[0].contains("/etc/x/config.toml"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn bad_value_is_an_error_naming_key_and_file() {
        let err = parse("log_level = \"loud\"\n").unwrap_err().to_string();
        assert!(err.contains("/etc/x/config.toml"), "{err}");
        assert!(err.contains("`log_level`"), "{err}");
        assert!(err.contains("loud"), "{err}");

        let err = parse("daemon_start_timeout_secs = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`daemon_start_timeout_secs`"), "{err}");

        let err = parse("daemon_start_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`daemon_start_timeout_secs`"), "{err}");
        assert!(err.contains("between 1 and 600"), "{err}");

        for (text, key) in [
            ("image_max_unpacked_gib = 0\n", "`image_max_unpacked_gib`"),
            ("image_max_entries = 10\n", "`image_max_entries`"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("must be between"),
                "{err}"
            );
        }
        let ok = parse("image_max_unpacked_gib = 2\nimage_max_entries = 5000\n").unwrap();
        assert_eq!(
            (
                ok.config.image_max_unpacked_gib,
                ok.config.image_max_entries
            ),
            (2, 5000)
        );
    }

    #[test]
    fn vmm_keys_parse_and_refuse_what_cannot_be_a_choice_or_binary() {
        let ok = parse("vmm = \"firecracker\"\njailer_bin = \"/usr/bin/jailer\"\n").unwrap();
        assert_eq!(ok.config.vmm, VmmChoice::Firecracker);
        assert_eq!(ok.config.jailer_bin, "/usr/bin/jailer");
        assert_eq!(ok.config.firecracker_bin, "firecracker");
        let err = parse("vmm = \"kvmtool\"\n").unwrap_err().to_string();
        assert!(err.contains("`vmm`") && err.contains("kvmtool"), "{err}");
        let err = parse("firecracker_bin = \"\"\n").unwrap_err().to_string();
        assert!(
            err.contains("`firecracker_bin`") && err.contains("must name a binary"),
            "{err}"
        );
        let err = parse("jailer_bin = \"jail\\ner\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`jailer_bin`") && err.contains("control"),
            "{err}"
        );
    }

    #[test]
    fn debian_mirror_must_be_a_url() {
        let err = parse("debian_mirror = \"ftp.example\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`debian_mirror`"), "{err}");
        let ok = parse("debian_mirror = \"http://mirror.example/debian\"\n").unwrap();
        assert_eq!(ok.config.debian_mirror, "http://mirror.example/debian");
    }

    #[test]
    fn apt_mirror_reads_deb822_and_one_line_sources_skipping_security() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n",
        )
        .unwrap();
        assert_eq!(
            apt_mirror(dir.path()).unwrap(),
            "http://mirror.example/debian"
        );
        std::fs::write(
            dir.path().join("sources.list"),
            "# c\ndeb [arch=amd64] http://one.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(apt_mirror(dir.path()).unwrap(), "http://one.example/debian");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(apt_mirror(empty.path()), None);
        assert_eq!(
            Config::default().debian_mirror_or_apt(empty.path()),
            "http://deb.debian.org/debian"
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse("log_level = \"info\"\nthis is not toml\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/x/config.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn documented_defaults_parse_to_the_default_config() {
        let text: String = Config::KEYS
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let loaded = parse(&text).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn docs_config_md_lists_every_key_with_its_default() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md"))
                .unwrap();
        for (key, default) in Config::KEYS {
            let row = format!("`{key} = {default}`");
            assert!(doc.contains(&row), "docs/config.md lacks {row}");
        }
    }
}
