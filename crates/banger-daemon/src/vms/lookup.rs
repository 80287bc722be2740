//! Finding a VM by what a request names it: an exact name, a full id, or
//! (for views only) an id prefix.

use banger_store::VmRecord;

use super::VmError;

/// How much of a reference may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// An exact name or an exact full id: for anything that changes a VM,
    /// so a mistyped `web` can never stop or delete `web-prod`.
    Exact,
    /// Also an unambiguous prefix of an id (never of a name): for views.
    ReadOnly,
}

/// Finds `reference` among `all`. Ids and names live apart: a reference
/// shaped like a full id ([`banger_api::names::is_vm_id`]) is looked up
/// only as an id, anything else only as a name (names of that shape are
/// refused at create, so no name can stand for another VM's id).
pub fn resolve_in(all: &[VmRecord], reference: &str, lookup: Lookup) -> Result<VmRecord, VmError> {
    let is_id = banger_api::names::is_vm_id(reference);
    let exact = if is_id {
        all.iter().find(|v| v.id == reference)
    } else {
        all.iter().find(|v| v.name == reference)
    };
    if let Some(vm) = exact {
        return Ok(vm.clone());
    }
    let prefix_allowed = lookup == Lookup::ReadOnly
        && !is_id
        && reference.len() >= MIN_ID_PREFIX
        && reference.bytes().all(|b| b.is_ascii_hexdigit());
    let matches: Vec<&VmRecord> = if prefix_allowed {
        all.iter().filter(|v| v.id.starts_with(reference)).collect()
    } else {
        Vec::new()
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] if lookup == Lookup::Exact => Err(VmError::NoSuchVmExact(reference.to_owned())),
        [] => Err(VmError::NoSuchVm(reference.to_owned())),
        many => Err(VmError::Ambiguous {
            reference: reference.to_owned(),
            matches: many
                .iter()
                .map(|v| format!("{} ({})", v.name, v.id))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The shortest id prefix a read-only request may use.
const MIN_ID_PREFIX: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use banger_api::ErrorCode;
    use banger_testutil::stopped_vm;

    fn vms() -> Vec<VmRecord> {
        vec![
            stopped_vm("0a1b2c3d4e5f6071", "web-prod", "img"),
            stopped_vm("0a1b99999999aaaa", "db", "img"),
            stopped_vm("f00dfeedf00dfeed", "cafe", "img"),
        ]
    }

    #[test]
    fn a_change_never_acts_on_a_name_prefix() {
        let err = ApiError::from(resolve_in(&vms(), "web", Lookup::Exact).unwrap_err());
        assert_eq!(err.code, ErrorCode::NotFound);
        assert!(
            err.message.contains("exact name or full id"),
            "{}",
            err.message
        );
        // Nor does a view: names are never matched by prefix.
        let err = ApiError::from(resolve_in(&vms(), "web", Lookup::ReadOnly).unwrap_err());
        assert_eq!(err.code, ErrorCode::NotFound);
    }

    #[test]
    fn a_change_never_acts_on_an_id_prefix() {
        let err = ApiError::from(resolve_in(&vms(), "f00dfeed", Lookup::Exact).unwrap_err());
        assert_eq!(err.code, ErrorCode::NotFound);
        let found = resolve_in(&vms(), "f00dfeed", Lookup::ReadOnly).unwrap();
        assert_eq!(found.name, "cafe");
    }

    #[test]
    fn exact_names_and_full_ids_resolve_for_changes() {
        assert_eq!(
            resolve_in(&vms(), "db", Lookup::Exact).unwrap().id,
            "0a1b99999999aaaa"
        );
        assert_eq!(
            resolve_in(&vms(), "0a1b2c3d4e5f6071", Lookup::Exact)
                .unwrap()
                .name,
            "web-prod"
        );
    }

    #[test]
    fn a_name_shaped_like_an_id_never_reaches_another_vm() {
        // A row from before names of that shape were refused: its name is
        // never looked up as an id, and a reference of that shape is only
        // ever an id.
        let mut all = vms();
        all.push(stopped_vm("1111222233334444", "0a1b2c3d4e5f6071", "img"));
        let found = resolve_in(&all, "0a1b2c3d4e5f6071", Lookup::Exact).unwrap();
        assert_eq!(found.id, "0a1b2c3d4e5f6071");
        assert_eq!(found.name, "web-prod");
    }

    #[test]
    fn a_hex_name_wins_over_an_id_prefix_and_short_prefixes_are_refused() {
        // "cafe" is a name and a hex string: the name is found first.
        assert_eq!(
            resolve_in(&vms(), "cafe", Lookup::ReadOnly).unwrap().id,
            "f00dfeedf00dfeed"
        );
        // Under four digits a prefix is too likely to be a typo.
        assert!(resolve_in(&vms(), "f00", Lookup::ReadOnly).is_err());
        let err = ApiError::from(resolve_in(&vms(), "0a1b", Lookup::ReadOnly).unwrap_err());
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("ambiguous"), "{}", err.message);
    }
}
