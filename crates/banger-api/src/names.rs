//! Names of VMs, images and kernels: the one grammar, checked at every
//! trust boundary (CLI, API). A name flows into paths, hostnames, DNS
//! records and kernel command lines, so it is a DNS label and nothing else.
//! [`VmName`] and [`ArtifactName`] carry a checked name from the edge to
//! the store.

use serde::{Deserialize, Serialize};

/// Whether an image pull argument is a registry reference
/// (`registry/repo:tag`, `repo@sha256:...`) rather than a catalog name,
/// which never holds `/`, `:` or `@`.
pub fn is_image_reference(text: &str) -> bool {
    text.contains(['/', ':', '@'])
}

/// Longest name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// How many lowercase hex digits a VM id has.
pub const VM_ID_LEN: usize = 16;

/// A name refused, and why: the first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// Nothing at all.
    #[error("{what} name is empty")]
    Empty {
        /// What the name is for (`vm`, `image`, `kernel`).
        what: String,
    },
    /// Over [`MAX_NAME_LEN`] bytes.
    #[error("{what} name {name:?} is {} bytes long, more than {MAX_NAME_LEN}", name.len())]
    TooLong {
        /// What the name is for.
        what: String,
        /// The name.
        name: String,
    },
    /// A character outside the grammar.
    #[error("{what} name {name:?} holds {found:?}: only {allowed} are allowed")]
    Character {
        /// What the name is for.
        what: String,
        /// The name.
        name: String,
        /// The first character refused.
        found: char,
        /// What the grammar allows.
        allowed: &'static str,
    },
    /// A leading or trailing `-` (labels), or a leading `.`, `_` or `-`
    /// (artifacts).
    #[error("{what} name {name:?} must {rule}")]
    Edge {
        /// What the name is for.
        what: String,
        /// The name.
        name: String,
        /// The rule broken.
        rule: &'static str,
    },
    /// `..` anywhere in an artifact name.
    #[error("{what} name {name:?} must not contain '..'")]
    DotDot {
        /// What the name is for.
        what: String,
        /// The name.
        name: String,
    },
    /// A VM name shaped like a VM id.
    #[error(
        "vm name {0:?} is shaped like a vm id ({VM_ID_LEN} hex digits); pick a name with another letter in it"
    )]
    IdShaped(String),
}

/// Checks `name`: 1 to 63 of `a-z`, `0-9`, `-`, no leading or trailing
/// `-`. Names are never rewritten: `MyVM` is refused, not lower-cased.
/// The error names the first problem.
pub fn validate_name(what: &str, name: &str) -> Result<(), InvalidName> {
    check_len(what, name)?;
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(InvalidName::Character {
            what: what.to_owned(),
            name: name.to_owned(),
            found,
            allowed: "a-z, 0-9 and -",
        });
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(InvalidName::Edge {
            what: what.to_owned(),
            name: name.to_owned(),
            rule: "not start or end with -",
        });
    }
    Ok(())
}

/// Whether `text` is shaped like a whole VM id: 16 lowercase hex digits.
pub fn is_vm_id(text: &str) -> bool {
    text.len() == VM_ID_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a new VM's name: a DNS label ([`validate_name`]) that is not
/// shaped like a VM id, so a name can never stand for another VM's id.
pub fn validate_vm_name(name: &str) -> Result<(), InvalidName> {
    validate_name("vm", name)?;
    if is_vm_id(name) {
        return Err(InvalidName::IdShaped(name.to_owned()));
    }
    Ok(())
}

/// Checks a kernel or image name: 1 to 63 of `a-z`, `0-9`, `.`, `_`, `-`,
/// starting with a letter or digit and without `..`, so it is one plain
/// path component (`generic-6.1`, `debian-bookworm`). Never rewritten.
pub fn validate_artifact_name(what: &str, name: &str) -> Result<(), InvalidName> {
    check_len(what, name)?;
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidName::Character {
            what: what.to_owned(),
            name: name.to_owned(),
            found,
            allowed: "a-z, 0-9, '.', '_' and '-'",
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(InvalidName::Edge {
            what: what.to_owned(),
            name: name.to_owned(),
            rule: "start with a letter or digit",
        });
    }
    if name.contains("..") {
        return Err(InvalidName::DotDot {
            what: what.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn check_len(what: &str, name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty {
            what: what.to_owned(),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong {
            what: what.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Declares a validated name type: made only through its check, so code
/// holding one never checks again (serde runs the check on the way in).
macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        /// As the string: messages quote names with `{:?}`.
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl $ty {
            /// Checks `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
                let name = name.into();
                ($check)(name.as_str())?;
                Ok(Self(name))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidName;
            fn try_from(name: String) -> Result<Self, InvalidName> {
                Self::new(name)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// A VM's name: a DNS label not shaped like a VM id.
    VmName,
    validate_vm_name
);

name_type!(
    /// A kernel's or an image's name: one plain path component.
    ArtifactName,
    |n| validate_artifact_name("kernel or image", n)
);

impl VmName {
    /// A name read back from the store: a DNS label, possibly shaped like
    /// an id (rows from before such names were refused; lookups never
    /// treat a name as an id, so they stay harmless).
    pub fn stored(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        validate_name("vm", &name)?;
        Ok(Self(name))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_and_catalog_names_are_told_apart() {
        for r in [
            "127.0.0.1:5000/test:latest",
            "debian:bookworm",
            "ghcr.io/a/b",
            "a@sha256:00",
        ] {
            assert!(is_image_reference(r), "{r}");
        }
        for n in ["debian-bookworm", "generic-6.1", "my_image"] {
            assert!(!is_image_reference(n), "{n}");
            assert!(validate_artifact_name("image", n).is_ok());
        }
    }

    #[test]
    fn artifact_names_allow_versions_but_not_paths() {
        for ok in ["generic-6.1", "debian-bookworm", "ubuntu_24.04", "a"] {
            assert!(validate_artifact_name("image", ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            (".hidden", "start with"),
            ("-x", "start with"),
            ("a..b", "'..'"),
            ("a/b", "'/'"),
            ("Deb", "'D'"),
            ("a b", "' '"),
            (&"x".repeat(64), "more than 63"),
        ] {
            let err = validate_artifact_name("image", bad).unwrap_err();
            assert!(err.to_string().contains(says), "{bad:?}: {err}");
        }
    }

    use super::*;

    #[test]
    fn vm_names_shaped_like_ids_are_refused() {
        let err = validate_vm_name("0a1b2c3d4e5f6071").unwrap_err();
        assert!(err.to_string().contains("shaped like a vm id"), "{err}");
        assert!(is_vm_id("0a1b2c3d4e5f6071"));
        // One digit short, one too many, upper case or a non-hex letter: names.
        for name in [
            "0a1b2c3d4e5f607",
            "0a1b2c3d4e5f60712",
            "0a1b2c3d4e5f607g",
            "deadbeef",
        ] {
            assert!(!is_vm_id(name), "{name}");
            assert!(validate_vm_name(name).is_ok(), "{name}");
        }
        assert!(!is_vm_id("0A1B2C3D4E5F6071"));
    }

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "debian-bookworm", "0", "a-b-c", &"x".repeat(63)] {
            assert!(validate_name("vm", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else_naming_the_problem() {
        for (bad, says) in [
            ("", "empty"),
            ("a b", "' '"),
            ("a\nb", "'\\n'"),
            ("a.b", "'.'"),
            ("a/b", "'/'"),
            ("box/../evil", "'/'"),
            ("a:b", "':'"),
            ("a=b", "'='"),
            ("MyVM", "'M'"),
            ("naïve", "'ï'"),
            ("-a", "start or end"),
            ("a-", "start or end"),
            (&"x".repeat(64), "more than 63"),
        ] {
            let err = validate_name("vm", bad).unwrap_err();
            assert!(err.to_string().contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn name_types_check_on_the_way_in_and_serialize_as_strings() {
        assert!(VmName::new("0a1b2c3d4e5f6071").is_err());
        assert!(VmName::stored("0a1b2c3d4e5f6071").is_ok());
        assert!(VmName::stored("Web").is_err());
        let web: VmName = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(web, "web");
        assert_eq!(serde_json::to_string(&web).unwrap(), "\"web\"");
        let err = serde_json::from_str::<VmName>("\"We b\"").unwrap_err();
        assert!(err.to_string().contains("holds 'W'"), "{err}");
        assert!(serde_json::from_str::<ArtifactName>("\"../x\"").is_err());
        assert_eq!(
            ArtifactName::new("generic-6.1").unwrap().as_str(),
            "generic-6.1"
        );
    }
}
