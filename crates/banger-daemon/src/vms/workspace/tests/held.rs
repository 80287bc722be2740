//! The objects a re-prepare may leave out.

use std::time::Duration;

use super::*;

#[test]
fn held_objects_are_the_guests_content_named_files_and_none_without_a_workspace() {
    let loose = format!("ab/{}", "c".repeat(38));
    let pack = format!("pack/pack-{}.pack", "d".repeat(40));
    let listing =
        format!("{loose}\ninfo/commit-graph\n../../etc/passwd\n{pack}\npack/pack-x.keep\n");
    let (k, guest) = with_guest(
        kit(""),
        FakeGuest {
            output: listing.into_bytes(),
            ..FakeGuest::default()
        },
    );
    k.run_web("vmm");
    // No workspace yet: nothing held, no session.
    assert_eq!(
        k.vms.held_objects("web").unwrap().names,
        Vec::<String>::new()
    );
    assert!(guest.seen.lock().unwrap().is_empty());

    k.vms
        .prepare_workspace("web", &query(), &mut &b""[..])
        .unwrap();
    assert_eq!(k.vms.held_objects("web").unwrap().names, [loose, pack]);
    let seen = guest.seen.lock().unwrap().clone();
    assert_eq!(seen[1].1, ["/root/repo"]);

    // A listing that fails sends everything, rather than failing the
    // prepare.
    *guest.answer.lock().unwrap() = Some(GuestError::TimedOut(Duration::from_secs(1)));
    assert_eq!(
        k.vms.held_objects("web").unwrap().names,
        Vec::<String>::new()
    );
}
