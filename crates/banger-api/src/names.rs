//! Names of VMs, images and kernels: the one grammar, checked at every
//! trust boundary (CLI, API). A name flows into paths, hostnames, DNS
//! records and kernel command lines, so it is a DNS label and nothing else.

/// Whether an image pull argument is a registry reference
/// (`registry/repo:tag`, `repo@sha256:...`) rather than a catalog name,
/// which never holds `/`, `:` or `@`.
pub fn is_image_reference(text: &str) -> bool {
    text.contains(['/', ':', '@'])
}

/// Longest name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// Checks `name`: 1 to 63 of `a-z`, `0-9`, `-`, no leading or trailing
/// `-`. Names are never rewritten: `MyVM` is refused, not lower-cased.
/// The error names the first problem.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    check_len(what, name)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{what} name {name:?} holds {c:?}: only a-z, 0-9 and - are allowed"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!("{what} name {name:?} must not start or end with -"));
    }
    Ok(())
}

/// How many lowercase hex digits a VM id has.
pub const VM_ID_LEN: usize = 16;

/// Whether `text` is shaped like a whole VM id: 16 lowercase hex digits.
pub fn is_vm_id(text: &str) -> bool {
    text.len() == VM_ID_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a new VM's name: a DNS label ([`validate_name`]) that is not
/// shaped like a VM id, so a name can never stand for another VM's id.
pub fn validate_vm_name(name: &str) -> Result<(), String> {
    validate_name("vm", name)?;
    if is_vm_id(name) {
        return Err(format!(
            "vm name {name:?} is shaped like a vm id ({VM_ID_LEN} hex digits); pick a name with another letter in it"
        ));
    }
    Ok(())
}

/// Checks a kernel or image name: 1 to 63 of `a-z`, `0-9`, `.`, `_`, `-`,
/// starting with a letter or digit and without `..`, so it is one plain
/// path component (`generic-6.1`, `debian-bookworm`). Never rewritten.
pub fn validate_artifact_name(what: &str, name: &str) -> Result<(), String> {
    check_len(what, name)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} name {name:?} holds {c:?}: only a-z, 0-9, '.', '_' and '-' are allowed"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{what} name {name:?} must start with a letter or digit"
        ));
    }
    if name.contains("..") {
        return Err(format!("{what} name {name:?} must not contain '..'"));
    }
    Ok(())
}

fn check_len(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} name {name:?} is {} bytes long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    Ok(())
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
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    use super::*;

    #[test]
    fn vm_names_shaped_like_ids_are_refused() {
        let err = validate_vm_name("0a1b2c3d4e5f6071").unwrap_err();
        assert!(err.contains("shaped like a vm id"), "{err}");
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
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
