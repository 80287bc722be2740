use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use banger_api::{PrepareWorkspaceQuery, SshTarget};

use super::guest::{GuestError, GuestShell, Session};
use super::*;
use crate::vms::testkit::{Kit, kit};

mod held;

/// (first line of the script, args, stdin) of one session.
type Seen = (String, Vec<String>, Vec<u8>);

/// A guest that records each session and answers with `answer`.
#[derive(Debug, Default)]
struct FakeGuest {
    seen: Mutex<Vec<Seen>>,
    answer: Mutex<Option<GuestError>>,
    output: Vec<u8>,
    /// Sessions running now, and the most at once.
    now: AtomicUsize,
    most: AtomicUsize,
}

impl GuestShell for FakeGuest {
    fn run(
        &self,
        _target: &SshTarget,
        session: &Session<'_>,
        input: &mut dyn Read,
    ) -> Result<Vec<u8>, GuestError> {
        let (script, args) = (session.script, session.args);
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        let mut fed = Vec::new();
        let read = input.read_to_end(&mut fed);
        std::thread::sleep(Duration::from_millis(20));
        self.now.fetch_sub(1, Ordering::SeqCst);
        read.map_err(GuestError::Input)?;
        let kind = if script.contains("tar -x") {
            "prepare"
        } else {
            "export"
        };
        self.seen.lock().unwrap().push((
            kind.into(),
            args.iter().map(|a| (*a).to_owned()).collect(),
            fed,
        ));
        match self.answer.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(self.output.clone()),
        }
    }
}

fn with_guest(k: Kit, guest: FakeGuest) -> (Kit, Arc<FakeGuest>) {
    let guest = Arc::new(guest);
    (k.with_guest_shell(guest.clone()), guest)
}

fn query() -> PrepareWorkspaceQuery {
    PrepareWorkspaceQuery {
        host_path: "/home/dev/my repo".into(),
        commit: Some("c".repeat(40)),
        host_branch: Some("main".into()),
        checkout: None,
        branch: None,
        fingerprint: "f".repeat(64),
        git_name: Some("Dev O'Neil".into()),
        git_email: Some("dev@example.com".into()),
    }
}

#[test]
fn a_prepare_pipes_the_whole_stream_and_records_the_workspace() {
    let (k, guest) = with_guest(kit(""), FakeGuest::default());
    k.run_web("vmm");
    let vm = k
        .vms
        .prepare_workspace("web", &query(), &mut &b"TARBYTES"[..])
        .unwrap();
    let seen = guest.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(
            "prepare".to_owned(),
            vec![
                "/root/repo".into(),
                String::new(),
                String::new(),
                "Dev O'Neil".into(),
                "dev@example.com".into()
            ],
            b"TARBYTES".to_vec()
        )]
    );
    let ws = vm.workspace.unwrap();
    assert_eq!(
        (ws.host_path.as_str(), ws.guest_path.as_str()),
        ("/home/dev/my repo", "/root/repo")
    );
    assert_eq!(ws.branch.as_deref(), Some("main"));
    assert_eq!(
        k.vms.list().unwrap()[0].workspace.as_deref(),
        Some("/home/dev/my repo")
    );

    // --from and --branch: the guest checks out and branches; the record
    // names the new branch.
    let q = PrepareWorkspaceQuery {
        checkout: Some("d".repeat(40)),
        branch: Some("try/x".into()),
        ..query()
    };
    let ws = k
        .vms
        .prepare_workspace("web", &q, &mut &b""[..])
        .unwrap()
        .workspace
        .unwrap();
    assert_eq!(
        (ws.branch.as_deref(), ws.checkout),
        (Some("try/x"), Some("d".repeat(40)))
    );
    let args = &guest.seen.lock().unwrap()[1].1;
    assert_eq!(
        (args[1].as_str(), args[2].as_str()),
        ("d".repeat(40).as_str(), "try/x")
    );
}

#[test]
fn a_stopped_or_busy_vm_gets_no_session_and_no_record() {
    let (k, guest) = with_guest(kit(""), FakeGuest::default());
    let err = k
        .vms
        .prepare_workspace("web", &query(), &mut &b"x"[..])
        .unwrap_err();
    assert!(matches!(err, VmError::NotRunning { .. }), "{err}");
    k.run_web("vmm");
    let lifecycle = k.vms.vm_lock(&k.vm.id);
    let held = lifecycle.lock().unwrap();
    let err = k
        .vms
        .prepare_workspace("web", &query(), &mut &b"x"[..])
        .unwrap_err();
    assert!(matches!(err, VmError::Busy(_)), "{err}");
    assert_eq!(
        crate::error::ApiError::from(err).code,
        banger_api::ErrorCode::Conflict
    );
    let err = k.vms.export_workspace("web").unwrap_err();
    assert!(matches!(err, VmError::Busy(_)), "{err}");
    drop(held);
    assert!(guest.seen.lock().unwrap().is_empty());
    assert_eq!(k.vms.get("web").unwrap().workspace, None);
    // No prepare yet: nothing to export.
    let err = k.vms.export_workspace("web").unwrap_err();
    assert!(matches!(err, VmError::NoWorkspace(_)), "{err}");
    assert!(
        err.to_string().contains("banger vm workspace prepare web"),
        "{err}"
    );
}

#[test]
fn a_failed_session_records_nothing_and_says_why() {
    let (k, guest) = with_guest(kit(""), FakeGuest::default());
    k.run_web("vmm");
    *guest.answer.lock().unwrap() = Some(GuestError::Exit {
        code: 2,
        stderr: "tar: Unexpected EOF in archive".into(),
    });
    let err = k
        .vms
        .prepare_workspace("web", &query(), &mut &b"x"[..])
        .unwrap_err();
    assert!(matches!(err, VmError::Failed(_)), "{err}");
    assert!(err.to_string().contains("Unexpected EOF"), "{err}");
    assert_eq!(k.vms.get("web").unwrap().workspace, None);

    // A broken client stream is the client's error.
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("client went away"))
        }
    }
    let err = k
        .vms
        .prepare_workspace("web", &query(), &mut Broken)
        .unwrap_err();
    assert!(matches!(err, VmError::Invalid(_)), "{err}");
    assert_eq!(k.vms.get("web").unwrap().workspace, None);
}

#[test]
fn a_guest_whose_held_files_changed_is_a_stale_prepare_the_client_may_retry() {
    let (k, guest) = with_guest(kit(""), FakeGuest::default());
    k.run_web("vmm");
    *guest.answer.lock().unwrap() = Some(GuestError::Exit {
        code: STALE,
        stderr: "work-tree files the guest held changed in the guest since the host asked: prepare again".into(),
    });
    let err = k
        .vms
        .prepare_workspace("web", &query(), &mut &b"x"[..])
        .unwrap_err();
    assert!(matches!(err, VmError::Stale(_)), "{err}");
    assert!(err.to_string().contains("changed in the guest"), "{err}");
    let api = crate::error::ApiError::from(err);
    assert_eq!(api.code, banger_api::ErrorCode::Stale);
    assert_eq!(
        crate::error::status_for(api.code),
        http::StatusCode::CONFLICT
    );
    assert_eq!(k.vms.get("web").unwrap().workspace, None);
}

#[test]
fn an_export_hands_back_what_the_guest_printed() {
    let (k, _guest) = with_guest(
        kit(""),
        FakeGuest {
            output: b"diff --git a/x b/x\n".to_vec(),
            ..FakeGuest::default()
        },
    );
    k.run_web("vmm");
    k.vms
        .prepare_workspace("web", &query(), &mut &b""[..])
        .unwrap();
    assert_eq!(
        k.vms.export_workspace("web").unwrap(),
        b"diff --git a/x b/x\n"
    );
}

#[test]
fn prepares_of_one_vm_run_one_after_the_other() {
    let (k, guest) = with_guest(kit(""), FakeGuest::default());
    k.run_web("vmm");
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                k.vms
                    .prepare_workspace("web", &query(), &mut &b"t"[..])
                    .unwrap()
            });
        }
    });
    assert_eq!(guest.most.load(Ordering::SeqCst), 1);
    assert_eq!(guest.seen.lock().unwrap().len(), 3);
}

#[test]
fn values_the_guest_would_misread_are_refused() {
    check_query(&query()).unwrap();
    let bad = [
        PrepareWorkspaceQuery {
            commit: Some("HEAD".into()),
            ..query()
        },
        PrepareWorkspaceQuery {
            checkout: Some("--orphan".into()),
            ..query()
        },
        PrepareWorkspaceQuery {
            branch: Some("-b".into()),
            ..query()
        },
        PrepareWorkspaceQuery {
            branch: Some("a b".into()),
            ..query()
        },
        PrepareWorkspaceQuery {
            host_path: "relative".into(),
            ..query()
        },
        PrepareWorkspaceQuery {
            host_path: "/a\nb".into(),
            ..query()
        },
        PrepareWorkspaceQuery {
            git_name: Some("x\ny".into()),
            ..query()
        },
        PrepareWorkspaceQuery {
            fingerprint: "short".into(),
            ..query()
        },
    ];
    for q in bad {
        assert!(matches!(check_query(&q), Err(VmError::Invalid(_))), "{q:?}");
    }
}

#[test]
fn the_prepare_script_checks_the_end_marker_the_cli_sends() {
    let marker = banger_api::workspace::END_MARKER;
    assert!(scripts::PREPARE.contains(&format!("[ ! -e \"$new/{marker}\" ]")));
    assert!(scripts::PREPARE.contains(&format!("rm -f \"$new/{marker}\"")));
}

/// A checkout's tar as the CLI sends it, ending with the marker unless
/// `cut`; `extra` is one more entry's name.
fn workspace_tar(extra: &str, cut: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut names = vec![".git/HEAD", "src/main.rs", extra];
    if !cut {
        names.push(banger_api::workspace::END_MARKER);
    }
    for name in names {
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        if name == banger_api::workspace::END_MARKER {
            h.set_size(0);
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        } else {
            // `append_data` refuses `..`; a hostile client would not.
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, &b"abc"[..]).unwrap();
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn a_vm_born_with_a_workspace_disk_gets_the_checkout_before_its_first_boot() {
    let (k, guest) = with_guest(kit(""), FakeGuest::default());
    k.set_state(&k.vm.id, banger_api::VmState::Created);
    let repo = k.vms.dir(&k.vm.id).disks().repo;
    std::fs::write(&repo, b"empty ext4").unwrap();
    k.take_calls();

    let cut = k
        .vms
        .prepare_workspace("web", &query(), &mut &workspace_tar("README", true)[..])
        .unwrap_err();
    assert!(cut.to_string().contains("ended early"), "{cut}");
    let hostile = k
        .vms
        .prepare_workspace("web", &query(), &mut &workspace_tar("../escape", false)[..])
        .unwrap_err();
    assert!(matches!(hostile, VmError::Invalid(_)), "{hostile}");
    assert!(hostile.to_string().contains("../escape"), "{hostile}");
    assert_eq!(
        std::fs::read(&repo).unwrap(),
        b"empty ext4",
        "a refused stream changes nothing"
    );
    assert_eq!(k.vms.get("web").unwrap().workspace, None);

    let lifecycle = k.vms.vm_lock(&k.vm.id);
    let held = lifecycle.lock().unwrap();
    let busy = k
        .vms
        .prepare_workspace("web", &query(), &mut &workspace_tar("README", false)[..])
        .unwrap_err();
    assert!(matches!(busy, VmError::Busy(_)), "{busy}");
    drop(held);

    let vm = k
        .vms
        .prepare_workspace("web", &query(), &mut &workspace_tar("README", false)[..])
        .unwrap();
    assert_eq!(vm.workspace.unwrap().guest_path, "/root/repo");
    assert!(
        String::from_utf8(std::fs::read(&repo).unwrap())
            .unwrap()
            .starts_with("ext4 of")
    );
    let calls = k.take_calls();
    assert_eq!(
        calls.iter().filter(|c| c.contains("mke2fs")).count(),
        1,
        "{calls:?}"
    );
    assert!(guest.seen.lock().unwrap().is_empty(), "no guest session");
    let dir = k.vms.dir(&k.vm.id);
    assert!(!dir.path().join("workspace.tar").exists());
    assert!(!repo.with_extension("ext4.next").exists());

    // --from needs git in the guest: not laid in, so refused until it runs.
    let q = PrepareWorkspaceQuery {
        checkout: Some("d".repeat(40)),
        ..query()
    };
    let err = k
        .vms
        .prepare_workspace("web", &q, &mut &b""[..])
        .unwrap_err();
    assert!(matches!(err, VmError::NotRunning { .. }), "{err}");
}
