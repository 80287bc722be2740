//! The Firecracker driver against Firecracker's own API specification
//! (`../shared/contracts/firecracker.yaml`, never copied into the repo).
//!
//! No Firecracker can run here, so this test binary is also its own fake:
//! run as `…/firecracker` it serves the API on `--api-sock` and records every
//! request; run as `…/jailer` it checks the staged chroot, writes the
//! jailer's pidfile and execs the `firecracker` copied into the chroot. The
//! driver therefore really spawns, waits for, configures, stops, kills and
//! finds again a process called firecracker; each recorded body is then
//! validated against the specification's schema for its path and method.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "a test binary: a failed step should panic with its cause, print libtest's lines, and exec its own fakes"
)]

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_vmm::firecracker::jailer::{Jail, JailerConfig};
use banger_vmm::firecracker::{Firecracker, api};
use banger_vmm::{Accel, BootSpec, Disk, Nic, VmFiles, Vmm, VmmError};
use serde_json::{Value, json};

/// The file name of Firecracker's release binary, whose processes the
/// kernel calls `firecracker-v1.` (15 bytes).
const RELEASE_NAME: &str = "firecracker-v1.16.1-x86_64";

/// Where the fakes record requests (`<dir>/<vm id>.jsonl`) and read the
/// faults a test asks for (`<dir>/<vm id>.fail`).
const RECORD_DIR: &str = "BANGER_FAKE_FC_DIR";
/// Set by the fake jailer: the chroot the fake firecracker resolves its
/// paths in (it cannot really chroot: it needs the host's libc).
const CHROOT: &str = "BANGER_FAKE_FC_CHROOT";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match Path::new(&args[0]).file_name().and_then(|n| n.to_str()) {
        // A release's file keeps its version in the name.
        Some("firecracker" | RELEASE_NAME) => fake_firecracker(&args[1..]),
        Some("jailer") => fake_jailer(&args[1..]),
        Some("impostor") => std::thread::sleep(Duration::from_secs(30)),
        _ => run_tests(&args[1..]),
    }
}

// ---------------------------------------------------------------- fakes

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].as_str())
}

fn fake_firecracker(args: &[String]) {
    let id = flag(args, "--id").expect("--id").to_owned();
    let records = PathBuf::from(std::env::var(RECORD_DIR).expect(RECORD_DIR));
    let fail = std::fs::read_to_string(records.join(format!("{id}.fail"))).unwrap_or_default();
    if fail.trim() == "exit" {
        eprintln!("fake firecracker: cannot open /dev/kvm");
        std::process::exit(1);
    }
    let sock = flag(args, "--api-sock").expect("--api-sock");
    let sock = match std::env::var(CHROOT) {
        // As inside a real chroot: the socket's path is short, however
        // long the chroot's own path is.
        Ok(root) => {
            std::env::set_current_dir(root).unwrap();
            PathBuf::from(sock.trim_start_matches('/'))
        }
        Err(_) => PathBuf::from(sock),
    };
    let listener = UnixListener::bind(&sock).unwrap();
    let mut started = false;
    for stream in listener.incoming() {
        let mut stream = stream.unwrap();
        let Some((method, path, body)) = read_request(&mut stream) else {
            continue;
        };
        let line = json!({ "method": method, "path": path, "body": body });
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(records.join(format!("{id}.jsonl")))
            .unwrap();
        writeln!(log, "{line}").unwrap();
        let call = format!("{method} {path}");
        let refusal = fail
            .lines()
            .find_map(|l| l.strip_prefix(&call)?.strip_prefix('='))
            .map(str::to_owned)
            .or_else(|| {
                (started && path != "/actions").then(|| {
                    "The requested operation is not supported after starting the microVM."
                        .to_owned()
                })
            });
        let action = body.get("action_type").and_then(Value::as_str);
        match refusal {
            Some(fault) => {
                let answer = json!({ "fault_message": fault }).to_string();
                write!(
                    stream,
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                )
                .unwrap();
            }
            None => {
                write!(stream, "HTTP/1.1 204 No Content\r\n\r\n").unwrap();
                match action {
                    Some("InstanceStart") => started = true,
                    // The guest reboots, which (reboot=k) ends Firecracker.
                    Some("SendCtrlAltDel") => std::process::exit(0),
                    _ => {}
                }
            }
        }
    }
}

fn read_request(stream: &mut impl Read) -> Option<(String, String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) = req.parse(&buf).ok()? {
            let length: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            let (method, path) = (req.method?.to_owned(), req.path?.to_owned());
            let mut body = buf.split_off(head);
            while body.len() < length {
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            return Some((method, path, serde_json::from_slice(&body).ok()?));
        }
    }
}

fn fake_jailer(args: &[String]) {
    use std::os::unix::process::CommandExt;
    let split = args.iter().position(|a| a == "--").expect("--");
    let (own, fc_args) = (&args[..split], &args[split + 1..]);
    let id = flag(own, "--id").expect("--id");
    let exec = Path::new(flag(own, "--exec-file").expect("--exec-file"));
    let base = Path::new(flag(own, "--chroot-base-dir").expect("--chroot-base-dir"));
    for required in ["--uid", "--gid"] {
        flag(own, required).unwrap_or_else(|| panic!("{required}"));
    }
    let name = exec.file_name().unwrap();
    let root = base.join(name).join(id).join("root");
    // What the real jailer needs staged, and what it does next.
    for staged in ["firecracker", "vmlinux", "initrd.cpio"] {
        assert!(
            root.join(staged).is_file(),
            "{staged} not staged in {}",
            root.display()
        );
    }
    let mut pidfile = name.to_owned();
    pidfile.push(".pid");
    std::fs::write(root.join(pidfile), std::process::id().to_string()).unwrap();
    let err = std::process::Command::new(root.join(name))
        .args(fc_args)
        .args(["--id", id])
        .env(CHROOT, &root)
        .exec();
    panic!("exec the jailed firecracker: {err}");
}

// ---------------------------------------------------------------- contract

/// Firecracker's API specification: the file `BANGER_FIRECRACKER_SPEC`
/// names, else `shared/contracts/firecracker.yaml` beside the repository,
/// or beside the local checkout this one was cloned from (a fresh clone
/// for a CI run sits elsewhere).
fn contract_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BANGER_FIRECRACKER_SPEC") {
        return Some(p.into());
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let origin = std::process::Command::new("git")
        .arg("-C")
        .arg(manifest)
        .args(["config", "--get", "remote.origin.url"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute() && p.is_dir());
    let beside = |root: &Path| {
        root.ancestors()
            .map(|a| a.join("shared/contracts/firecracker.yaml"))
            .find(|p| p.is_file())
    };
    beside(manifest).or_else(|| origin.as_deref().and_then(beside))
}

/// Firecracker's specification, with every object schema closed: its
/// server refuses fields it does not know (serde's deny_unknown_fields),
/// so the contract does too.
struct Contract {
    spec: Value,
}

fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for v in map.values_mut() {
                close_objects(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

impl Contract {
    /// The specification, or `None` (recorded as a skip of `test`) where
    /// this machine has no copy of it.
    fn load(test: &str) -> Option<Self> {
        let Some(path) = contract_path() else {
            banger_testutil::skip(
                test,
                "needs Firecracker's API specification (shared/contracts/firecracker.yaml \
                 beside the repository, or the file BANGER_FIRECRACKER_SPEC names)",
            );
            return None;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let mut spec: Value = serde_norway::from_str(&text).unwrap();
        close_objects(&mut spec["definitions"]);
        assert_eq!(
            spec["info"]["version"], "1.16.1",
            "the contract tests target v1.16.1"
        );
        Some(Self { spec })
    }

    /// The path template (`/drives/{drive_id}`) `path` matches, with its
    /// parameters.
    fn route(&self, path: &str) -> Option<(String, Vec<(String, String)>)> {
        let segs: Vec<&str> = path.split('/').collect();
        self.spec["paths"].as_object()?.keys().find_map(|tpl| {
            let t: Vec<&str> = tpl.split('/').collect();
            if t.len() != segs.len() {
                return None;
            }
            let mut params = Vec::new();
            for (a, b) in t.iter().zip(&segs) {
                if let Some(name) = a.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
                    params.push((name.to_owned(), (*b).to_owned()));
                } else if a != b {
                    return None;
                }
            }
            Some((tpl.clone(), params))
        })
    }

    /// Checks one request: the path and method exist, the body validates
    /// against the body parameter's schema, and path parameters agree with
    /// the body's ids.
    fn check(&self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        let (tpl, params) = self
            .route(path)
            .ok_or_else(|| format!("{path} is no path of the API"))?;
        let op = &self.spec["paths"][&tpl][method.to_ascii_lowercase()];
        if op.is_null() {
            return Err(format!("{method} {tpl} is not in the API"));
        }
        let schema = op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["in"] == "body"))
            .map(|p| p["schema"].clone())
            .ok_or_else(|| format!("{method} {tpl} takes no body"))?;
        let root = json!({ "definitions": self.spec["definitions"], "allOf": [schema] });
        let validator = jsonschema::draft4::new(&root).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            return Err(format!("{method} {path} {body}: {}", errors.join("; ")));
        }
        for (name, value) in params {
            if body.get(&name).and_then(Value::as_str) != Some(value.as_str()) {
                return Err(format!("{method} {path}: body's {name} is not {value:?}"));
            }
        }
        Ok(())
    }
}

/// The requests one fake Firecracker recorded.
fn recorded(records: &Path, id: &str) -> Vec<(String, String, Value)> {
    std::fs::read_to_string(records.join(format!("{id}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["method"].as_str().unwrap().to_owned(),
                v["path"].as_str().unwrap().to_owned(),
                v["body"].clone(),
            )
        })
        .collect()
}

/// Firecracker's ordering rules over the requests of one or more boots:
/// each boot configures the machine, the boot source and its devices
/// before `InstanceStart`, and after it sends only actions.
fn check_order(requests: &[(String, String, Value)]) -> Result<(), String> {
    let mut boots = 0;
    let mut configured: Vec<&str> = Vec::new();
    let mut started = false;
    for (method, path, body) in requests {
        let action = body.get("action_type").and_then(Value::as_str);
        match (path.as_str(), action) {
            ("/actions", Some("InstanceStart")) => {
                for needed in ["/machine-config", "/boot-source"] {
                    if !configured.contains(&needed) {
                        return Err(format!("InstanceStart before {needed}"));
                    }
                }
                boots += 1;
                started = true;
            }
            ("/actions", Some("SendCtrlAltDel" | "FlushMetrics")) if started => {}
            ("/actions", a) => return Err(format!("action {a:?} before InstanceStart")),
            _ if started && method == "PUT" => {
                // A new process for the next boot starts over.
                started = false;
                configured.clear();
                configured.push(path);
            }
            _ => configured.push(path),
        }
    }
    if boots == 0 {
        return Err("no InstanceStart".to_owned());
    }
    Ok(())
}

// ---------------------------------------------------------------- fixtures

struct Fixture {
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    records: PathBuf,
    files: VmFiles,
    spec: BootSpec,
}

impl Fixture {
    fn new(id: &str) -> Self {
        Self::with_vm_dir(id, "")
    }

    fn with_vm_dir(id: &str, pad: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let exe = std::env::current_exe().unwrap();
        for name in ["firecracker", "jailer", "impostor", RELEASE_NAME] {
            symlink(&exe, bin.join(name)).unwrap();
        }
        let records = PathBuf::from(std::env::var(RECORD_DIR).unwrap());
        let art = tmp.path().join("art");
        std::fs::create_dir(&art).unwrap();
        let dir = tmp.path().join(pad).join("vms").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let file = |p: PathBuf, content: &[u8]| {
            std::fs::write(&p, content).unwrap();
            p
        };
        let disk = |name: &'static str, path: PathBuf, read_only| Disk {
            id: name,
            path: file(path, b"ext4"),
            read_only,
        };
        let files = VmFiles::new(&dir);
        let spec = BootSpec {
            files: files.clone(),
            kernel: file(art.join("vmlinux"), b"\x7fELF"),
            initramfs: file(art.join("banger.cpio"), b"070701"),
            cmdline: "banger.base=LABEL=rootfs ip=10.77.0.2::10.77.0.1:255.255.255.0:web:eth0:off"
                .to_owned(),
            disks: vec![
                disk("base", art.join("rootfs.ext4"), true),
                disk("overlay", dir.join("overlay.ext4"), false),
                disk("work", dir.join("work.ext4"), false),
            ],
            nic: Some(Nic {
                tap: "bgt0123456789".to_owned(),
                mac: "02:bf:12:34:56:78".to_owned(),
            }),
            vcpus: 2,
            memory_mib: 1024,
            accel: Accel::Kvm,
        };
        let _ = std::fs::remove_file(records.join(format!("{id}.jsonl")));
        Self {
            _tmp: tmp,
            bin,
            records,
            files,
            spec,
        }
    }

    fn id(&self) -> String {
        self.files
            .dir()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn plain(&self) -> Firecracker {
        Firecracker::new(self.bin.join("firecracker"))
    }

    fn fail_with(&self, rules: &str) {
        std::fs::write(self.records.join(format!("{}.fail", self.id())), rules).unwrap();
    }

    fn requests(&self) -> Vec<(String, String, Value)> {
        recorded(&self.records, &self.id())
    }
}

fn wait_gone(vmm: &dyn Vmm, files: &VmFiles, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while vmm.is_running(files, pid) {
        assert!(Instant::now() < deadline, "pid {pid} still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_comm(pid: u32, comm: &str) {
    let got = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(got.trim(), comm);
}

/// Start, graceful stop, start, kill: the full cycle, twice through the
/// API, with every request checked against the contract.
fn cycle(fx: &Fixture, vmm: &dyn Vmm) -> Vec<(String, String, Value)> {
    let start = || {
        vmm.start(&fx.spec).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(fx.files.vmm_log()).unwrap_or_default();
            panic!("start: {e:?}\nvmm.log:\n{log}")
        })
    };
    let pid = start();
    assert_comm(pid, "firecracker");
    assert!(vmm.is_running(&fx.files, pid));
    assert_eq!(vmm.recover_pid(&fx.files), Some(pid));
    vmm.request_shutdown(&fx.files).unwrap();
    wait_gone(vmm, &fx.files, pid);
    vmm.release(&fx.files).unwrap();
    assert!(std::fs::symlink_metadata(fx.files.control_socket()).is_err());

    let pid = start();
    assert!(vmm.is_running(&fx.files, pid));
    vmm.kill(pid);
    wait_gone(vmm, &fx.files, pid);
    assert_eq!(vmm.recover_pid(&fx.files), None);
    vmm.release(&fx.files).unwrap();

    let requests = fx.requests();
    assert!(requests.len() > 10, "{requests:?}");
    if let Some(contract) = Contract::load("the Firecracker cycle's contract check") {
        for (method, path, body) in &requests {
            contract.check(method, path, body).unwrap();
        }
    }
    check_order(&requests).unwrap();
    requests
}

// ---------------------------------------------------------------- tests

fn plain_cycle_keeps_to_the_contract() {
    let fx = Fixture::new("0a1b2c3d4e5f6071");
    let requests = cycle(&fx, &fx.plain());
    let paths: Vec<&str> = requests.iter().map(|r| r.1.as_str()).collect();
    let first_boot = &paths[..paths.iter().position(|p| *p == "/actions").unwrap()];
    assert_eq!(
        first_boot,
        [
            "/logger",
            "/metrics",
            "/machine-config",
            "/boot-source",
            "/serial",
            "/drives/base",
            "/drives/overlay",
            "/drives/work",
            "/network-interfaces/eth0",
            "/vsock"
        ]
    );
    let boot = &requests[3].2;
    assert_eq!(boot["kernel_image_path"], fx.spec.kernel.to_str().unwrap());
    assert!(
        boot["boot_args"]
            .as_str()
            .unwrap()
            .ends_with(&fx.spec.cmdline)
    );
    assert_eq!(requests[5].2["is_read_only"], true);
    assert_eq!(requests[7].2["is_read_only"], false);
    assert_eq!(
        requests[0].2["log_path"],
        fx.files.logger().to_str().unwrap()
    );
}

fn jailer_cycle_keeps_to_the_contract_and_leaves_no_jail() {
    let fx = Fixture::new("1a1b2c3d4e5f6071");
    // A long chroot base: its API socket path is past what AF_UNIX takes,
    // so the driver must reach it through the short link.
    let base_tmp = tempfile::tempdir_in(shared_memory_or_tmp()).unwrap();
    let base = base_tmp.path().join("j".repeat(100));
    let cfg = JailerConfig {
        binary: fx.bin.join("jailer"),
        chroot_base: base.clone(),
        uid: own_ids().0,
        gid: own_ids().1,
    };
    let jail = Jail::for_vm(&base, &fx.files);
    assert!(jail.host_path("/api.sock").as_os_str().len() > 108);
    let vmm = fx.plain().with_jailer(cfg);
    let requests = cycle(&fx, &vmm);
    assert_eq!(requests[3].2["kernel_image_path"], "/vmlinux");
    assert_eq!(requests[3].2["initrd_path"], "/initrd.cpio");
    assert_eq!(requests[5].2["path_on_host"], "/base.img");
    assert_eq!(requests[0].2["log_path"], "/logger.log");
    assert!(!jail.dir().exists(), "the jail outlived release");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(base.to_str().unwrap()),
        "a mount outlived release"
    );
    // The per-VM files the jail linked stay in the VM's directory.
    assert!(fx.files.logger().is_file() && fx.files.console().is_file());
}

/// A tmpfs when there is one, so the jail sits on another file system
/// than the VM's files and is staged with bind mounts, not hard links.
fn shared_memory_or_tmp() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() && banger_testutil::is_root() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// This process's uid and gid, read off its /proc entry.
fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self").unwrap();
    (m.uid(), m.gid())
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    banger_sys::mount::host_mounts_under(dir).unwrap()
}

fn jail_staging_binds_across_file_systems_and_teardown_undoes_it() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    if !banger_testutil::have_root("jail staging") {
        return;
    }
    let mut fx = Fixture::new("6a1b2c3d4e5f6071");
    // A block device disk is given as a node of the same device.
    let node = fx.files.dir().join("scratch.blk");
    banger_sys::mount::mknod_block(&node, makedev(7, 0), 0o600).unwrap();
    fx.spec.disks.push(Disk {
        id: "scratch",
        path: node,
        read_only: false,
    });
    let base = tempfile::tempdir_in("/dev/shm").unwrap();
    let jail = Jail::for_vm(base.path(), &fx.files);
    let paths = jail
        .stage(&fx.spec, &fx.bin.join("firecracker"), 4242, 4343)
        .unwrap();
    assert_eq!(paths.disks[3], PathBuf::from("/scratch.img"));
    let mounted = mounts_under(&jail.dir());
    // kernel, initramfs, three file disks, three log files.
    assert_eq!(mounted.len(), 8, "{mounted:?}");
    assert_eq!(
        std::fs::read(jail.host_path("/vmlinux")).unwrap(),
        b"\x7fELF"
    );
    let ro = std::fs::OpenOptions::new()
        .write(true)
        .open(jail.host_path("/base.img"));
    assert_eq!(
        ro.unwrap_err().raw_os_error(),
        Some(30),
        "the shared rootfs is writable (want EROFS)"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(jail.host_path("/work.img"))
        .unwrap();
    let blk = std::fs::metadata(jail.host_path("/scratch.img")).unwrap();
    assert!(blk.file_type().is_block_device());
    assert_eq!(
        (blk.rdev(), blk.uid(), blk.gid()),
        (makedev(7, 0), 4242, 4343)
    );
    let own = std::fs::metadata(&fx.spec.disks[2].path).unwrap();
    assert_eq!(
        (own.uid(), own.gid()),
        (4242, 4343),
        "the VM's disk is not the jailed user's"
    );
    let exe = std::fs::metadata(jail.host_path("/firecracker")).unwrap();
    assert_eq!(exe.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        exe.len(),
        std::fs::metadata(std::env::current_exe().unwrap())
            .unwrap()
            .len()
    );
    jail.teardown().unwrap();
    assert!(mounts_under(base.path()).is_empty());
    assert!(!jail.dir().exists());
    // What was linked in is untouched.
    assert_eq!(std::fs::read(&fx.spec.disks[0].path).unwrap(), b"ext4");
    assert!(fx.spec.kernel.is_file() && fx.files.logger().is_file());
}

fn makedev(major: u64, minor: u64) -> u64 {
    // The glibc encoding, as /proc and stat report it.
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

fn teardown_refuses_a_path_through_a_symlink() {
    let fx = Fixture::new("7a1b2c3d4e5f6071");
    let base = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let precious = elsewhere.path().join(fx.id()).join("root");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("precious"), "keep").unwrap();
    symlink(elsewhere.path(), base.path().join("firecracker")).unwrap();
    let jail = Jail::for_vm(base.path(), &fx.files);
    let err = jail.teardown().unwrap_err();
    assert!(
        matches!(
            err,
            VmmError::BadPath {
                why: "it is a symlink",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(precious.join("precious").is_file());
    // And a start under that jail refuses before spawning anything.
    let (uid, gid) = own_ids();
    let vmm = fx.plain().with_jailer(JailerConfig {
        binary: fx.bin.join("jailer"),
        chroot_base: base.path().to_owned(),
        uid,
        gid,
    });
    assert!(vmm.start(&fx.spec).is_err());
    assert!(precious.join("precious").is_file());
    assert!(fx.requests().is_empty());
}

fn api_refusals_surface_with_the_step_and_leave_nothing() {
    let fx = Fixture::new("2a1b2c3d4e5f6071");
    fx.fail_with(
        "PUT /drives/work=Unable to open the block device: Permission denied (os error 13)\n",
    );
    let vmm = fx.plain();
    let err = vmm.start(&fx.spec).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, VmmError::Refused { status: 400, .. }),
        "{err:?}"
    );
    assert!(
        text.contains("firecracker refused to attach drive work: Unable to open the block device: Permission denied (os error 13) (HTTP 400 on PUT /drives/work)"),
        "{text}"
    );
    assert_eq!(
        vmm.recover_pid(&fx.files),
        None,
        "the refused VMM was left running"
    );
    assert!(std::fs::symlink_metadata(fx.files.control_socket()).is_err());
    // Nothing after the refusal was sent.
    let last = fx.requests().pop().unwrap();
    assert_eq!(last.1, "/drives/work");
}

fn a_vmm_dying_before_its_api_is_reported_with_its_log() {
    let fx = Fixture::new("3a1b2c3d4e5f6071");
    fx.fail_with("exit\n");
    let err = fx.plain().start(&fx.spec).unwrap_err();
    assert!(
        err.to_string()
            .contains("exited before its API socket answered"),
        "{err}"
    );
    let log = std::fs::read_to_string(fx.files.vmm_log()).unwrap();
    assert!(log.contains("cannot open /dev/kvm"), "{log}");
}

fn pids_that_are_not_firecracker_are_never_adopted_or_killed() {
    let fx = Fixture::new("4a1b2c3d4e5f6071");
    let sock = fx.files.control_socket();
    let mut impostor = std::process::Command::new(fx.bin.join("impostor"))
        .arg("--api-sock")
        .arg(&sock)
        .spawn()
        .unwrap();
    let pid = impostor.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim()
        != "impostor"
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let plain = fx.plain();
    assert_eq!(plain.recover_pid(&fx.files), None);
    assert!(!plain.is_running(&fx.files, pid));
    // A jailer pidfile naming it is not believed either.
    let base = tempfile::tempdir().unwrap();
    let jail = Jail::for_vm(base.path(), &fx.files);
    std::fs::create_dir_all(jail.root()).unwrap();
    std::fs::write(jail.pidfile(), format!("{pid}\n")).unwrap();
    let jailed = fx.plain().with_jailer(JailerConfig {
        binary: fx.bin.join("jailer"),
        chroot_base: base.path().to_owned(),
        uid: 0,
        gid: 0,
    });
    assert_eq!(jail.recorded_pid(), Some(pid));
    assert_eq!(jailed.recover_pid(&fx.files), None);
    assert!(!jailed.is_running(&fx.files, pid));
    plain.kill(pid);
    jailed.kill(pid);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        impostor.try_wait().unwrap().is_none(),
        "the impostor was killed"
    );
    impostor.kill().unwrap();
    impostor.wait().unwrap();

    // Another VM's Firecracker whose pid the jail's stale pidfile names:
    // a Firecracker, but not carrying this VM's id, so not this VM's.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = std::process::Command::new(fx.bin.join("firecracker"))
        .arg("--api-sock")
        .arg(other_dir.path().join("other.sock"))
        .args(["--id", "ffffffffffffffff"])
        .env(RECORD_DIR, other_dir.path())
        .spawn()
        .unwrap();
    let pid = other.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() != "firecracker")
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(jail.pidfile(), format!("{pid}\n")).unwrap();
    let (recovered, running) = (
        jailed.recover_pid(&fx.files),
        jailed.is_running(&fx.files, pid),
    );
    // Stopped before judging, so a failure fails rather than hangs.
    other.kill().unwrap();
    other.wait().unwrap();
    assert_eq!(
        recovered, None,
        "another VM's Firecracker was taken for this one"
    );
    assert!(!running);
}

fn a_control_socket_path_too_long_is_refused_before_spawning() {
    let fx = Fixture::with_vm_dir("5a1b2c3d4e5f6071", &"d".repeat(110));
    let err = fx.plain().start(&fx.spec).unwrap_err();
    assert!(
        matches!(
            err,
            VmmError::BadPath {
                what: "control socket",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(fx.requests().is_empty());
    assert!(!fx.files.vmm_log().exists(), "a VMM was spawned");
}

fn a_rehearsal_sends_every_call_but_instance_start_and_leaves_nothing() {
    let fx = Fixture::new("8a1b2c3d4e5f6071");
    // Configured with a jailer, a rehearsal still runs Firecracker directly:
    // it needs no root and stages no jail.
    let base = tempfile::tempdir().unwrap();
    let vmm = fx.plain().with_jailer(JailerConfig {
        binary: fx.bin.join("jailer"),
        chroot_base: base.path().to_owned(),
        uid: own_ids().0,
        gid: own_ids().1,
    });
    let steps = vmm.rehearse(&fx.spec).unwrap();
    assert_eq!(steps.len(), 10, "{steps:?}");
    assert_eq!(steps[2], "size the machine");
    assert!(
        steps.contains(&"attach network interface on tap bgt0123456789".to_owned()),
        "{steps:?}"
    );
    let requests = fx.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.1.as_str()).collect();
    assert!(!paths.contains(&"/actions"), "{paths:?}");
    assert_eq!(paths.len(), steps.len());
    assert_eq!(
        requests[3].2["kernel_image_path"],
        fx.spec.kernel.to_str().unwrap()
    );
    if let Some(contract) = Contract::load("the rehearsal's contract check") {
        for (method, path, body) in &requests {
            contract.check(method, path, body).unwrap();
        }
    }
    assert_eq!(vmm.recover_pid(&fx.files), None);
    assert_eq!(fx.plain().recover_pid(&fx.files), None, "left running");
    assert!(std::fs::symlink_metadata(fx.files.control_socket()).is_err());
    assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
}

fn a_release_named_binary_is_found_stopped_and_never_left_running() {
    let fx = Fixture::new("ba1b2c3d4e5f6071");
    let vmm = Firecracker::new(fx.bin.join(RELEASE_NAME));
    let pid = vmm.start(&fx.spec).unwrap();
    assert_comm(pid, "firecracker-v1.");
    assert!(vmm.is_running(&fx.files, pid));
    assert_eq!(vmm.recover_pid(&fx.files), Some(pid));
    vmm.kill(pid);
    wait_gone(&vmm, &fx.files, pid);
    vmm.release(&fx.files).unwrap();
    // A rehearsal, and a refused one, end the process they started.
    vmm.rehearse(&fx.spec).unwrap();
    assert_eq!(
        banger_testutil::pids_mentioning(fx.files.dir()),
        Vec::<u32>::new()
    );
    fx.fail_with("PUT /vsock=no vsock here\n");
    assert!(vmm.rehearse(&fx.spec).is_err());
    assert_eq!(
        banger_testutil::pids_mentioning(fx.files.dir()),
        Vec::<u32>::new()
    );
}

fn a_refused_rehearsal_names_the_call_and_leaves_nothing() {
    let fx = Fixture::new("9a1b2c3d4e5f6071");
    fx.fail_with("PUT /machine-config=Invalid: SMT is not supported\n");
    let err = fx.plain().rehearse(&fx.spec).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("firecracker refused to size the machine: Invalid: SMT is not supported (HTTP 400 on PUT /machine-config)"),
        "{text}"
    );
    assert_eq!(fx.plain().recover_pid(&fx.files), None, "left running");
    assert!(std::fs::symlink_metadata(fx.files.control_socket()).is_err());
    assert_eq!(fx.requests().last().unwrap().1, "/machine-config");
}

fn the_contract_check_can_fail() {
    let Some(c) = Contract::load("the_contract_check_can_fail") else {
        return;
    };
    let ok = json!({ "vcpu_count": 2, "mem_size_mib": 256 });
    c.check("PUT", "/machine-config", &ok).unwrap();
    for bad in [
        json!({ "vcpu_count": "2", "mem_size_mib": 256 }),
        json!({ "vcpu_count": 0, "mem_size_mib": 256 }),
        json!({ "mem_size_mib": 256 }),
        json!({ "vcpu_count": 2, "mem_size_mib": 256, "vcpus": 2 }),
    ] {
        assert!(
            c.check("PUT", "/machine-config", &bad).is_err(),
            "{bad} passed"
        );
    }
    let drive = json!({ "drive_id": "work", "is_root_device": false, "path_on_host": "/w", "is_read_only": false });
    c.check("PUT", "/drives/work", &drive).unwrap();
    assert!(
        c.check("PUT", "/drives/other", &drive).is_err(),
        "a path id unlike the body's passed"
    );
    assert!(c.check("PUT", "/drive/work", &drive).is_err());
    assert!(c.check("DELETE", "/drives/work", &drive).is_err());
    let action = json!({ "action_type": "Reboot" });
    assert!(c.check("PUT", "/actions", &action).is_err());
    let boot = |path: &str, action: &str| {
        vec![
            ("PUT".into(), path.into(), json!({})),
            (
                "PUT".into(),
                "/actions".into(),
                json!({ "action_type": action }),
            ),
        ]
    };
    assert!(check_order(&boot("/machine-config", "InstanceStart")).is_err());
    assert!(check_order(&boot("/machine-config", "SendCtrlAltDel")).is_err());
    let mut fine = boot("/machine-config", "InstanceStart");
    fine.insert(1, ("PUT".into(), "/boot-source".into(), json!({})));
    check_order(&fine).unwrap();
}

fn api_answers_are_read_whole() {
    // The client against a peer that writes its answer in pieces.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        read_request(&mut s).unwrap();
        for piece in [
            "HTTP/1.1 400 Bad",
            " Request\r\nContent-Length: 24\r\n\r\n{\"fault_message\"",
            ":\"slow\"}",
        ] {
            s.write_all(piece.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let err = api::Api::new(&sock)
        .send("PUT", "/vsock", &json!({}))
        .unwrap_err();
    peer.join().unwrap();
    match err {
        api::ApiFailure::Refused { status: 400, fault } => assert_eq!(fault, "slow"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- runner

use banger_testutil::harness::Test;

const TESTS: &[Test] = &[
    (
        "jail_staging_binds_across_file_systems_and_teardown_undoes_it",
        jail_staging_binds_across_file_systems_and_teardown_undoes_it,
    ),
    (
        "teardown_refuses_a_path_through_a_symlink",
        teardown_refuses_a_path_through_a_symlink,
    ),
    ("the_contract_check_can_fail", the_contract_check_can_fail),
    ("api_answers_are_read_whole", api_answers_are_read_whole),
    (
        "plain_cycle_keeps_to_the_contract",
        plain_cycle_keeps_to_the_contract,
    ),
    (
        "jailer_cycle_keeps_to_the_contract_and_leaves_no_jail",
        jailer_cycle_keeps_to_the_contract_and_leaves_no_jail,
    ),
    (
        "api_refusals_surface_with_the_step_and_leave_nothing",
        api_refusals_surface_with_the_step_and_leave_nothing,
    ),
    (
        "a_vmm_dying_before_its_api_is_reported_with_its_log",
        a_vmm_dying_before_its_api_is_reported_with_its_log,
    ),
    (
        "pids_that_are_not_firecracker_are_never_adopted_or_killed",
        pids_that_are_not_firecracker_are_never_adopted_or_killed,
    ),
    (
        "a_rehearsal_sends_every_call_but_instance_start_and_leaves_nothing",
        a_rehearsal_sends_every_call_but_instance_start_and_leaves_nothing,
    ),
    (
        "a_release_named_binary_is_found_stopped_and_never_left_running",
        a_release_named_binary_is_found_stopped_and_never_left_running,
    ),
    (
        "a_refused_rehearsal_names_the_call_and_leaves_nothing",
        a_refused_rehearsal_names_the_call_and_leaves_nothing,
    ),
    (
        "a_control_socket_path_too_long_is_refused_before_spawning",
        a_control_socket_path_too_long_is_refused_before_spawning,
    ),
];

fn run_tests(args: &[String]) {
    let records = tempfile::tempdir().unwrap();
    // SAFETY: set before any thread of this process starts; the fakes the
    // tests spawn inherit it.
    unsafe { std::env::set_var(RECORD_DIR, records.path()) };
    banger_testutil::harness::run(TESTS, args);
}
