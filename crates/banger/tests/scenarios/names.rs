//! VM names: refused everywhere when bad, matched exactly, referred to by
//! name or full id (views also by an unambiguous id prefix, changes never
//! by a prefix).

use crate::common::Env;
use crate::support::{Leftovers, Scenario, fails, leftovers, show};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("invalid-names-are-refused-with-nothing-stored", invalid),
        Scenario::new("names-are-exact-and-changes-never-take-prefixes", exact),
    ]
}

const BAD: [&str; 13] = [
    "has space",
    "new\nline",
    "dot.ted",
    "sl/ash",
    "co:lon",
    "eq=ual",
    "Upper",
    "ünï",
    "-lead",
    "trail-",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "box/../evil",
    "",
];

/// Bad names never reach the store, whether sent by the CLI (which does
/// not even start the daemon) or straight to the API (a 400).
fn invalid(env: &Env) {
    assert_eq!(BAD[10].len(), 64);
    for name in BAD {
        let err = fails(
            env,
            &["vm", "create", "--no-start", &format!("--name={name}")],
        );
        assert!(err.contains("vm name"), "{name:?}: {err}");
    }
    assert!(env.daemon_pid().is_none(), "a bad name reached the daemon");
    env.ok(&["vm", "list"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for name in BAD {
        let body = serde_json::json!({ "name": name, "no_start": true }).to_string();
        let resp = rt
            .block_on(banger_testutil::raw_request(
                &env.socket(),
                "POST",
                "/v1/vms",
                &[("content-type", "application/json")],
                body,
            ))
            .unwrap();
        assert_eq!(resp.status, 400, "API accepted {name:?}");
        let err: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(err["code"], "invalid_argument", "{name:?}");
    }
    assert_eq!(leftovers(env), Leftovers::none());
}

/// `beta` is a name of its own while `beta-sandbox` exists; an exact
/// duplicate fails; a mistyped name never reaches another VM (`delete
/// beta-s` deletes nothing); an id prefix works only for views; a name
/// shaped like an id is refused.
fn exact(env: &Env) {
    env.ok(&["vm", "create", "--no-start", "--name", "beta-sandbox"]);
    env.ok(&["vm", "create", "--no-start", "--name", "beta"]);
    let dup = fails(env, &["vm", "create", "--no-start", "--name", "beta"]);
    assert!(dup.contains("already exists"), "{dup}");
    let idlike = fails(
        env,
        &["vm", "create", "--no-start", "--name", "0123456789abcdef"],
    );
    assert!(idlike.contains("shaped like a vm id"), "{idlike}");

    assert_eq!(show(env, "beta")["name"], "beta");
    let missing = fails(env, &["vm", "show", "beta-s"]);
    assert!(missing.contains("no vm"), "{missing}");
    let kept = fails(env, &["vm", "delete", "--force", "beta-s"]);
    assert!(kept.contains("exact name or full id"), "{kept}");
    assert_eq!(show(env, "beta-sandbox")["state"], "created");
    let id = show(env, "beta")["id"].as_str().unwrap().to_owned();
    assert_eq!(show(env, &id[..6])["name"], "beta");
    let by_prefix = fails(env, &["vm", "delete", &id[..6]]);
    assert!(by_prefix.contains("exact name or full id"), "{by_prefix}");
    let missing = fails(env, &["vm", "show", "gamma"]);
    assert!(missing.contains("no vm"), "{missing}");

    let vms: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["vm", "list", "-o", "json"])).unwrap();
    assert_eq!(vms.len(), 2);
    assert!(vms.iter().all(|v| v["state"] == "created"), "{vms:?}");
    assert_ne!(vms[0]["ip"], vms[1]["ip"]);
    env.ok(&["vm", "delete", &id]);
    env.ok(&["vm", "delete", "beta-sandbox"]);
    assert_eq!(leftovers(env), Leftovers::none());
}
