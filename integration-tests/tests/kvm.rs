//! Tests that need /dev/kvm (any KVM, this development host's kvm_pvm too; scripts/test
//! runs every `tests/kvm.rs` when /dev/kvm works and says loudly when it does not).
//!
//! Cloud Hypervisor's own client against pv-vmm: the real `ch-remote` (built from
//! `../shared/upstream` with the series by `scripts/build-cloud-hypervisor`, cached) drives a
//! pv-vmm through a whole VM lifecycle, each command with exit status 0, and a refused
//! command exits non-zero with pv-vmm's own message. The guest is the raw PVH idle guest
//! (`scripts/build-hostile-guests`), which boots on any KVM, this development host's too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::hostile::HostileGuests;
use integration_tests::{ok, run_script, script, vmm_binaries};

/// The directory with the patched Cloud Hypervisor's `cloud-hypervisor` and `ch-remote`
/// (the dev build the lab tests use), built once per test binary.
fn cloud_hypervisor_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let out = ok(run_script(
            &script("build-cloud-hypervisor"),
            &["--profile", "dev"],
        ));
        let dir = PathBuf::from(out.lines().last().expect("the binaries' directory"));
        for binary in ["cloud-hypervisor", "ch-remote"] {
            assert!(
                dir.join(binary).is_file(),
                "{binary} missing in {}",
                dir.display()
            );
        }
        dir
    })
    .clone()
}

/// `ch-remote` of the patched Cloud Hypervisor.
fn ch_remote() -> PathBuf {
    cloud_hypervisor_dir().join("ch-remote")
}

/// One pv-vmm with an API socket, killed when dropped.
struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    /// Starts pv-vmm in a scratch directory of its own (`name`: the tests run in parallel).
    fn start(pv_vmm: &Path, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("api.sock");
        let child = Command::new(pv_vmm)
            .arg("-v")
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("pv-vmm.err")).expect("stderr file"))
            .spawn()
            .expect("pv-vmm");
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "no API socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir, socket }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("pv-vmm.err")).unwrap_or_default()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ch_remote_drives_pv_vmm_through_a_whole_lifecycle() {
    let remote = ch_remote();
    let (pv_vmm, _) = vmm_binaries();
    let guests = ok(HostileGuests::build());
    let vmm = Vmm::start(&pv_vmm, "ch-remote-lifecycle");
    let run = |args: &[&str]| {
        Command::new(&remote)
            .arg("--api-socket")
            .arg(&vmm.socket)
            .args(args)
            .output()
            .expect("ch-remote")
    };
    let must = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "ch-remote {args:?}: {}\npv-vmm: {}",
            text(&out),
            vmm.stderr()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let out = must(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ch-remote {args:?}: {e}: {out}"))
    };

    let ping = json(&["ping"]);
    assert_eq!(ping["pid"], vmm.child.id(), "{ping}");

    // Refused: non-zero, with pv-vmm's message (not "Can't get remote's error messages").
    let out = run(&["boot"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no VM is created"), "{stderr}");
    assert!(!stderr.contains("Can't get remote's error"), "{stderr}");

    let serial = vmm.dir.join("serial.log");
    let config = vmm.dir.join("vm.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
            "memory": {"size": 134_217_728u64},
            "payload": {"kernel": guests.idle, "cmdline": "idle under ch-remote"},
            "serial": {"mode": "File", "file": serial},
        })
        .to_string(),
    )
    .expect("vm.json");
    must(&["create", config.to_str().expect("utf-8 path")]);
    must(&["boot"]);
    let start = Instant::now();
    while !std::fs::read_to_string(&serial)
        .unwrap_or_default()
        .contains("@@IDLE-UP@@")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the idle guest did not come up: {}",
            vmm.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = json(&["info"]);
    assert_eq!(info["state"], "Running", "{info}");
    let counters = json(&["counters"]);
    assert!(counters.is_object(), "{counters}");
    for (command, state) in [("pause", "Paused"), ("resume", "Running")] {
        must(&[command]);
        assert_eq!(json(&["info"])["state"], state, "after {command}");
    }
    // The series' `ch-remote pv`: halt polling changes at once on a running VM.
    must(&["pv", "--halt-poll-ns", "1000"]);
    assert_eq!(
        json(&["info"])["pv"]["effective"]["halt_poll_ns"],
        1000,
        "{}",
        vmm.stderr()
    );
    let out = run(&["pv", "--halt-poll-ns", "fast"]);
    assert!(!out.status.success(), "{}", text(&out));
    must(&["reboot"]);
    assert_eq!(json(&["info"])["state"], "Running", "after reboot");
    must(&["shutdown"]);
    must(&["delete"]);
    let out = run(&["info"]);
    assert!(!out.status.success(), "{}", text(&out));
    must(&["shutdown-vmm"]);
    let mut vmm = vmm;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = vmm.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pv-vmm still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "pv-vmm: {status:?}: {}", vmm.stderr());
}

/// The config Cloud Hypervisor's own `vm.info` returns (the patched Cloud Hypervisor, on
/// this host: creating a VM needs no guest to run) creates and boots a VM in pv-vmm, which
/// names in one log line the default devices it does not provide.
#[test]
fn cloud_hypervisors_own_vm_info_config_creates_a_pv_vmm_vm() {
    let dir = cloud_hypervisor_dir();
    let remote = dir.join("ch-remote");
    let (pv_vmm, _) = vmm_binaries();
    let guests = ok(HostileGuests::build());
    let work = std::env::temp_dir().join(format!("ch-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("temp dir");
    let remote_on = |socket: &Path, args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(&remote)
            .arg("--api-socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ch-remote");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        let out = child.wait_with_output().expect("ch-remote");
        assert!(out.status.success(), "ch-remote {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Cloud Hypervisor's own config for a minimal VM.
    let ch_socket = work.join("ch.sock");
    let mut ch = Command::new(dir.join("cloud-hypervisor"))
        .arg("--api-socket")
        .arg(format!("path={}", ch_socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cloud-hypervisor");
    let start = Instant::now();
    while !ch_socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no Cloud Hypervisor socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let minimal = serde_json::json!({"payload": {"kernel": guests.idle, "cmdline": "idle"}});
    remote_on(&ch_socket, &["create"], Some(&minimal.to_string()));
    let info: serde_json::Value =
        serde_json::from_str(&remote_on(&ch_socket, &["info"], None)).expect("vm.info JSON");
    let _ = ch.kill();
    let _ = ch.wait();
    let config = info["config"].to_string();
    assert!(
        config.contains("\"rng\"") && config.contains("\"hotplug_method\""),
        "{config}"
    );

    let vmm = Vmm::start(&pv_vmm, "ch-config-pv-vmm");
    remote_on(&vmm.socket, &["create"], Some(&config));
    remote_on(&vmm.socket, &["boot"], None);
    let info: serde_json::Value =
        serde_json::from_str(&remote_on(&vmm.socket, &["info"], None)).expect("vm.info JSON");
    assert_eq!(info["state"], "Running", "{info}");
    let log = vmm.stderr();
    assert!(
        log.contains(
            "Cloud Hypervisor's default devices that pv-vmm does not provide: virtio-rng, virtio-console"
        ),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
