//! Bad PV combinations are refused before the guest starts, with one line naming the key,
//! the value and the rule or the host's limit. They need /dev/kvm (the host is probed);
//! `scripts/test` skips this file loudly where /dev/kvm is unusable.

use std::process::Command;

use kvm_ioctls::Kvm;
use pv_features::exits::DisableExits;
use pv_features::host::HostPv;

/// A file that passes the bzImage check (boot flag and "HdrS") but cannot boot.
fn header_only_kernel() -> vmm_sys_util::tempfile::TempFile {
    let kernel = vmm_sys_util::tempfile::TempFile::new().expect("temp file");
    let mut image = vec![0u8; 0x1000];
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(kernel.as_path(), image).expect("write");
    kernel
}

fn refused(cpus: &str) -> String {
    let kernel = header_only_kernel();
    let out = Command::new(env!("CARGO_BIN_EXE_pv-vmm"))
        .args([
            "--kernel",
            kernel.as_path().to_str().expect("utf-8"),
            "--cpus",
            cpus,
        ])
        .output()
        .expect("running pv-vmm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "--cpus {cpus}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "--cpus {cpus}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn pv_rules_are_refused_naming_key_value_and_rule() {
    let err = refused("boot=2,kvm_pv=[pv_tlb_flush]");
    assert!(
        err.contains("kvm_pv=[pv_tlb_flush]") && err.contains("needs steal_time"),
        "{err}"
    );
    let err = refused("boot=2,kvm_pv=[steal_time,pv_unhalt],disable_exits=[hlt]");
    assert!(
        err.contains("pv_unhalt") && err.contains("HLT exits"),
        "{err}"
    );
    let err = refused("boot=0");
    assert!(err.contains("boot"), "{err}");
    let err = refused("boot=4,max=2");
    assert!(err.contains("max"), "{err}");
}

#[test]
fn exits_the_host_refuses_are_named() {
    let host = HostPv::probe(&Kvm::new().expect("/dev/kvm")).expect("probe");
    let refused_exits = DisableExits::all() - host.allowed_exits;
    eprintln!("host allows disabling [{}]", host.allowed_exits);
    let Some((exit, name)) = DisableExits::NAMES
        .iter()
        .find(|(e, _)| refused_exits.contains(*e))
    else {
        eprintln!("this host allows every exit: nothing to refuse here (covered by unit tests)");
        return;
    };
    let err = refused(&format!("boot=1,disable_exits=[{name}]"));
    assert!(err.contains(&format!("disable_exits=[{name}]")), "{err}");
    assert!(
        err.contains(&format!("cannot disable [{}]", exit.names().join(","))),
        "{err}"
    );
}

mod common;

/// The API with a created (not booted) VM: the host is probed for vm.create, so this needs
/// /dev/kvm; booting a header-only kernel fails on the host side (500) and the VMM stays.
#[test]
fn api_create_info_and_pv_before_boot() {
    let kernel = vmm_sys_util::tempfile::TempFile::new().expect("temp file");
    let mut image = vec![0u8; 0x1000];
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(kernel.as_path(), image).expect("write");
    let vmm = common::ApiVmm::start();
    let config = serde_json::json!({
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_pv": {"halt_poll_ns": 1000}},
        "memory": {"size": 268_435_456u64},
        "payload": {"kernel": kernel.as_path(), "cmdline": "console=ttyS0"},
    })
    .to_string();

    // Invalid PV combinations are refused at create, naming the key.
    let bad = config.replace(r#""halt_poll_ns":1000"#, r#""features":["pv_tlb_flush"]"#);
    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", bad.as_bytes());
    assert_eq!(status, 400, "{json}");
    assert!(
        json[0]
            .as_str()
            .is_some_and(|e| e.contains("needs steal_time")),
        "{json}"
    );
    let bad = config.replace(r#""boot_vcpus":2"#, r#""boot_vcpus":0"#);
    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", bad.as_bytes());
    assert_eq!(status, 400, "{json}");

    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", config.as_bytes());
    assert_eq!(status, 204, "{json}");
    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", config.as_bytes());
    assert_eq!(status, 409, "{json}");

    let (status, info) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["state"], "Created");
    assert_eq!(info["config"]["cpus"]["boot_vcpus"], 2);
    assert_eq!(info["pv"]["requested"]["halt_poll_ns"], 1000);
    assert_eq!(info["pv"]["effective_is_live"], false);
    assert!(info["pv"]["pending"].is_null());
    assert!(info["pv"]["effective"]["dropped"].is_array(), "{info}");

    // Before boot everything applies at once.
    let (status, plan) = vmm.call(
        "PUT",
        "/api/v1/vm.pv",
        br#"{"dedicated":true,"halt_poll_ns":0}"#,
    );
    assert_eq!(status, 200, "{plan}");
    assert!(plan["pending"].is_null(), "{plan}");
    assert_eq!(plan["new_requested"]["dedicated"], true);
    assert!(plan["changes"]
        .as_array()
        .is_some_and(|c| c.iter().all(|c| c["timing"] == "now")));
    let (_, info) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(info["pv"]["requested"]["dedicated"], true);
    assert_eq!(
        info["pv"]["effective"]["hints"],
        serde_json::json!(["realtime"])
    );

    // Refused changes change nothing.
    for body in [
        &br#"{}"#[..],
        br#"{"features":["pv_tlb_flush"]}"#,
        br#"{"disable_exits":["warp"]}"#,
    ] {
        let (status, json) = vmm.call("PUT", "/api/v1/vm.pv", body);
        assert_eq!(status, 400, "{}: {json}", String::from_utf8_lossy(body));
    }
    let (_, after) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(after["pv"], info["pv"]);

    // Not running: these conflict.
    for path in [
        "vm.counters",
        "vm.pause",
        "vm.resume",
        "vm.reboot",
        "vm.shutdown",
    ] {
        let method = if path == "vm.counters" { "GET" } else { "PUT" };
        let (status, json) = vmm.call(method, &format!("/api/v1/{path}"), b"");
        assert_eq!(status, 409, "{path}: {json}");
    }

    // A kernel that is only a header fails to load: a host-side error, and the VMM stays.
    let (status, json) = vmm.call("PUT", "/api/v1/vm.boot", b"");
    assert_eq!(status, 500, "{json}");
    let (_, info) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(info["state"], "Created");
    let (status, _) = vmm.call("PUT", "/api/v1/vm.delete", b"");
    assert_eq!(status, 204);
    let (status, _) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(status, 404, "no VM: Cloud Hypervisor's 404");
}

#[test]
fn kvm_hyperv_is_refused_exactly_where_the_host_lacks_hyper_v() {
    let host = HostPv::probe(&Kvm::new().expect("/dev/kvm")).expect("probe");
    eprintln!("host: kvm_hyperv needs {:?}", host.hyperv_lacks());

    // The command line.
    match host.hyperv_lacks() {
        Some(missing) => {
            let err = refused("boot=2,kvm_hyperv=on");
            assert_eq!(
                err.trim_end(),
                format!("pv-vmm: error: --cpus kvm_hyperv=on: the host's KVM lacks {missing}")
            );
        }
        None => {
            // Accepted: what fails is loading a kernel that is only a header.
            let err = refused("boot=2,kvm_hyperv=on");
            assert!(!err.contains("kvm_hyperv"), "{err}");
        }
    }

    // The API: vm.create is refused with 400 and the VM is not created; vm.info of an
    // accepted one shows where the blocks will sit.
    let kernel = header_only_kernel();
    let vmm = common::ApiVmm::start();
    let config = |hyperv: bool| {
        serde_json::json!({
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_hyperv": hyperv},
            "payload": {"kernel": kernel.as_path()},
        })
        .to_string()
    };
    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", config(true).as_bytes());
    match host.hyperv_lacks() {
        Some(missing) => {
            assert_eq!(status, 400, "{json}");
            assert_eq!(
                json[0],
                format!("--cpus kvm_hyperv=on: the host's KVM lacks {missing}")
            );
            let (status, _) = vmm.call("GET", "/api/v1/vm.info", b"");
            assert_eq!(status, 404, "no VM was created");
        }
        None => {
            assert_eq!(status, 204, "{json}");
            let (_, info) = vmm.call("GET", "/api/v1/vm.info", b"");
            assert_eq!(
                info["cpuid_blocks"],
                serde_json::json!({"hyperv": "0x40000000", "kvm": "0x40000100"})
            );
            let (status, _) = vmm.call("PUT", "/api/v1/vm.delete", b"");
            assert_eq!(status, 204);
        }
    }
    // Without Hyper-V the KVM block keeps 0x40000000, on every host.
    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", config(false).as_bytes());
    assert_eq!(status, 204, "{json}");
    let (_, info) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(
        info["cpuid_blocks"],
        serde_json::json!({"hyperv": null, "kvm": "0x40000000"})
    );
    assert!(info["hyperv"].is_null(), "{info}");
}

/// The idle PVH guest's image, built (or found in the cache) by
/// `scripts/build-hostile-guests`.
fn idle_guest() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let build = Command::new(root.join("scripts/build-hostile-guests"))
        .output()
        .expect("running scripts/build-hostile-guests");
    let stdout = String::from_utf8_lossy(&build.stdout);
    assert!(
        build.status.success(),
        "scripts/build-hostile-guests failed (it needs gcc and binutils):\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("idle="))
        .expect("an idle= line")
        .to_owned()
}

/// Creates and boots the idle guest (2 vCPUs, `cmdline`) on `vmm` and waits for it to be
/// up; returns its serial log so far.
fn boot_idle(vmm: &common::ApiVmm, cmdline: &str) -> String {
    let serial = vmm.dir.as_path().join("serial.log");
    let config = serde_json::json!({
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
        "memory": {"size": 134_217_728u64},
        "payload": {"kernel": idle_guest(), "cmdline": cmdline},
        "serial": {"mode": "File", "file": serial},
    })
    .to_string();
    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", config.as_bytes());
    assert_eq!(status, 204, "{json}");
    let (status, json) = vmm.call("PUT", "/api/v1/vm.boot", b"");
    assert_eq!(status, 204, "{json}");

    let start = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(&serial).unwrap_or_default();
        if log.contains("@@IDLE-UP@@\n") {
            break log;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the idle guest did not come up; serial so far:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The idle PVH guest (`integration-tests/guest/hostile/idle.S`, built by
/// `scripts/build-hostile-guests`), created and booted through the API: it runs even on a
/// KVM that cannot run Linux (kvm_pvm), prints what pv-vmm passed in hvm_start_info, then
/// halts. vm.info, vm.counters, pause and resume answer; every byte it printed was one port
/// exit and nothing else reached pv-vmm; vmm.shutdown ends pv-vmm with 0.
#[test]
fn idle_pvh_guest_boots_through_the_api_and_shuts_down() {
    let mut vmm = common::ApiVmm::start();
    let log = boot_idle(&vmm, "idle on the dev host");
    eprintln!("idle guest:\n{log}");
    assert!(
        log.contains("@@PVH-CMDLINE idle on the dev host@@"),
        "{log}"
    );
    assert!(
        log.contains("@@PVH magic=336ec578 version=00000001"),
        "{log}"
    );

    let (status, info) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["state"], "Running");
    let (status, counters) = vmm.call("GET", "/api/v1/vm.counters", b"");
    assert_eq!(status, 200, "{counters}");
    // Cloud Hypervisor's VmCounters shape: an object of objects of integers.
    for (name, entries) in counters.as_object().expect("an object") {
        let entries = entries.as_object().expect("objects");
        assert!(
            entries.values().all(serde_json::Value::is_u64),
            "{name}: {entries:?}"
        );
    }
    let exits = |key: &str| {
        let e = &counters[key];
        [
            &e["io"],
            &e["mmio"],
            &e["hypercall"],
            &e["msr"],
            &e["other"],
        ]
        .map(|v| v.as_u64())
    };
    let io = log.len() as u64;
    assert_eq!(
        exits("vmm_exits_vcpu0"),
        [Some(io), Some(0), Some(0), Some(0), Some(0)],
        "one port exit per byte printed, nothing else: {counters}"
    );
    assert_eq!(exits("vmm_exits_vcpu1")[0], Some(0));
    assert_eq!(exits("vmm_exits")[0], Some(io));
    assert_eq!(counters["kvm_vcpu0"]["steal_time_enabled"], 0, "{counters}");
    assert!(counters["kvm_vcpu1"].is_object(), "{counters}");
    let steal = &info["steal_time"];
    assert_eq!(steal.as_array().map(Vec::len), Some(2), "{info}");
    assert_eq!(steal[0]["state"], "disabled", "{info}");

    for (path, state) in [("vm.pause", "Paused"), ("vm.resume", "Running")] {
        let (status, json) = vmm.call("PUT", &format!("/api/v1/{path}"), b"");
        assert_eq!(status, 204, "{path}: {json}");
        let (_, info) = vmm.call("GET", "/api/v1/vm.info", b"");
        assert_eq!(info["state"], state);
    }
    let (status, json) = vmm.call("PUT", "/api/v1/vmm.shutdown", b"");
    assert_eq!(status, 204, "{json}");
    assert_eq!(vmm.wait_exit(), Some(0));
    assert!(!vmm.socket.exists(), "socket left behind");
}

/// Writes `request` on a new connection and reads the answer until the server closes or
/// 5 s pass; what came back (empty when the server closed at once). A write the server cut
/// short (it closed first) is not an error here.
fn hostile_exchange(socket: &std::path::Path, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Pings until pv-vmm serves again, at most 10 s (its log in the failure).
fn wait_served(vmm: &common::ApiVmm) {
    common::wait_served(&vmm.socket, std::time::Duration::from_secs(10), || {
        vmm.stderr()
    });
}

/// Hostile HTTP with seccomp on (the default) and a VM running: a 60 KB nested JSON body,
/// megabytes of headers, large bodies in a row (the second chunked), hundreds of
/// connections opened and closed, a client that trickles its headers. Each request is
/// answered or refused; pv-vmm and its VM stay up. Before the seccomp fix an API thread
/// died of glibc's allocator opening /proc/sys/vm/overcommit_memory
/// ("a api thread made system call 257"), which ended the VMM and its VM.
#[test]
fn hostile_http_leaves_the_vmm_and_its_vm_running() {
    let vmm = common::ApiVmm::start();
    boot_idle(&vmm, "idle under hostile http");
    let socket = vmm.socket.clone();

    // A slow client: its headers one byte every 50 ms, while the others go on.
    let slow_socket = socket.clone();
    let slow = std::thread::spawn(move || {
        use std::io::Write;
        let mut stream = std::os::unix::net::UnixStream::connect(&slow_socket).expect("connect");
        for b in b"GET /api/v1/vmm.ping HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(&[b'x'; 40])
        {
            if stream.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });

    let mut sent = 0;
    for round in 0..3 {
        wait_served(&vmm);
        let nested = "[".repeat(60_000);
        let answer = hostile_exchange(
            &socket,
            format!(
                "PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{nested}",
                nested.len()
            )
            .as_bytes(),
        );
        assert!(
            answer.starts_with("HTTP/1.1 4"),
            "nested JSON: {answer:.200}"
        );
        let mut huge = b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n".to_vec();
        for i in 0..2048 {
            huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
        }
        huge.extend_from_slice(b"\r\n");
        wait_served(&vmm);
        let answer = hostile_exchange(&socket, &huge);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "2 MB of headers: {answer:.200}"
        );
        // A large body, then a large chunked one on the same connection.
        let body = "a".repeat(60_000);
        let mut two = format!(
            "PUT /api/v1/vm.pv HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        two.extend_from_slice(
            b"PUT /api/v1/vm.pv HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for _ in 0..32 {
            two.extend_from_slice(format!("1000\r\n{}\r\n", "b".repeat(4096)).as_bytes());
        }
        two.extend_from_slice(b"0\r\n\r\n");
        wait_served(&vmm);
        let answer = hostile_exchange(&socket, &two);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "large bodies: {answer:.200}"
        );
        // Hundreds of connections, opened at once and closed, half with half a request.
        let many: Vec<_> = (0..300)
            .filter_map(|i| {
                use std::io::Write;
                let mut s = std::os::unix::net::UnixStream::connect(&socket).ok()?;
                if i % 2 == 0 {
                    let _ = s.write_all(b"GET /api/v1/vm.info HTTP/1.1\r\nHost: loc");
                }
                Some(s)
            })
            .collect();
        drop(many);
        sent += 3 + 300;
        eprintln!("round {round}: {sent} hostile requests and connections so far");
    }
    let _ = slow.join();
    wait_served(&vmm);
    let (status, info) = vmm.call("GET", "/api/v1/vm.info", b"");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["state"], "Running", "{info}");
    let stderr = vmm.stderr();
    assert!(!stderr.contains("seccomp"), "{stderr}");
}
