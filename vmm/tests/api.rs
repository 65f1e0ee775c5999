//! The REST API without a VM: every path the OpenAPI document lists answers with a status
//! the document gives it, wrong methods get 405, unknown paths 404, oversized bodies 413,
//! bad JSON 400, and none of it disturbs the VMM. No VM is built, so no KVM is needed.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{openapi_operations, ApiVmm};

#[test]
fn openapi_names_every_drop_rule() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/pv-vmm.yaml"))
        .expect("the OpenAPI document");
    let listed: Vec<String> = doc
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("enum: [pv_tlb_flush_needs_steal_time"))
        .expect("the rule enum of EffectivePv.dropped.reason")
        .trim_start_matches("enum: [")
        .trim_end_matches(']')
        .split(", ")
        .map(str::to_owned)
        .collect();
    let rules: Vec<String> = pv_features::cpuid::Rule::ALL
        .iter()
        .map(|r| {
            serde_json::to_value(r)
                .expect("json")
                .as_str()
                .expect("a name")
                .to_owned()
        })
        .collect();
    let mut a = listed.clone();
    let mut b = rules.clone();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "the document lists {listed:?}, pv-features has {rules:?}"
    );
}

#[test]
fn openapi_lists_every_served_path() {
    let ops = openapi_operations();
    let mut paths: Vec<&str> = ops.iter().map(|o| o.path.as_str()).collect();
    paths.sort();
    let mut want = vec![
        "/vmm.ping",
        "/vmm.shutdown",
        "/vm.create",
        "/vm.boot",
        "/vm.info",
        "/vm.counters",
        "/vm.pause",
        "/vm.resume",
        "/vm.reboot",
        "/vm.shutdown",
        "/vm.delete",
        "/vm.pv",
    ];
    want.sort();
    assert_eq!(paths, want);
    for op in &ops {
        assert!(!op.codes.is_empty(), "{op:?} documents no response");
    }
}

#[test]
fn every_documented_path_answers_as_documented_without_a_vm() {
    let mut vmm = ApiVmm::start();
    let mode = std::fs::metadata(&vmm.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");
    let ops = openapi_operations();
    // vmm.shutdown ends the process: last.
    let (last, rest): (Vec<_>, Vec<_>) = ops.into_iter().partition(|o| o.path == "/vmm.shutdown");
    for op in rest.iter().chain(last.iter()) {
        let path = format!("/api/v1{}", op.path);
        let body: &[u8] = match op.path.as_str() {
            "/vm.create" => br#"{"payload":{"kernel":"/nonexistent/bzImage"}}"#,
            "/vm.pv" => br#"{"halt_poll_ns":0}"#,
            _ => b"",
        };
        let (status, json) = vmm.call(&op.method, &path, body);
        assert!(
            op.codes.contains(&status),
            "{} {path}: {status} not among the documented {:?}: {json}",
            op.method,
            op.codes
        );
        let want = match op.path.as_str() {
            "/vmm.ping" => 200,
            "/vm.create" => 400,
            "/vm.delete" | "/vmm.shutdown" => 204,
            _ => 404,
        };
        assert_eq!(status, want, "{} {path}: {json}", op.method);
        if status >= 400 {
            assert!(json[0].is_string(), "{path}: {json}");
        }
        if op.path == "/vmm.ping" {
            assert_eq!(json["pid"], vmm.child.id());
            assert!(json["version"].is_string());
        }
        if op.path != "/vmm.shutdown" {
            // A wrong method on every path: 405.
            let wrong = if op.method == "GET" { "PUT" } else { "GET" };
            let (status, json) = vmm.call(wrong, &path, b"");
            assert_eq!(status, 405, "{wrong} {path}: {json}");
            assert!(json[0].as_str().is_some_and(|e| e.contains(&op.method)));
        }
    }
    assert_eq!(vmm.wait_exit(), Some(0), "vmm.shutdown ends pv-vmm with 0");
    assert!(!vmm.socket.exists(), "the socket is removed on exit");
}

#[test]
fn client_mistakes_get_4xx_and_the_vmm_keeps_serving() {
    let vmm = ApiVmm::start();
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        (
            "GET",
            "/api/v1/vm.nope",
            b"",
            404,
            "unknown path /api/v1/vm.nope",
        ),
        ("GET", "/api/v2/vm.info", b"", 404, "unknown path"),
        ("GET", "/", b"", 404, "unknown path"),
        ("POST", "/api/v1/vm.info", b"", 405, "takes GET, not POST"),
        ("DELETE", "/api/v1/vm.pv", b"", 405, "takes PUT, not DELETE"),
        (
            "PUT",
            "/api/v1/vm.create",
            b"{",
            400,
            "vm.create: invalid JSON body",
        ),
        ("PUT", "/api/v1/vm.create", b"", 400, "EOF"),
        (
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d"}]}"#,
            400,
            "pv-vmm does not implement disks",
        ),
        (
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":"two","max_vcpus":2}}"#,
            400,
            "invalid type",
        ),
        (
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{"kernel":"/k"},"memory":{"size":1024}}"#,
            400,
            "memory.size=1024",
        ),
        (
            "PUT",
            "/api/v1/vm.pv",
            br#"{"halt_poll":1}"#,
            400,
            "unknown field `halt_poll`",
        ),
        (
            "PUT",
            "/api/v1/vm.pv",
            br#"{"dedicated":1}"#,
            400,
            "invalid type",
        ),
        ("PUT", "/api/v1/vm.pv", b"{}", 404, "no VM is created"),
        ("PUT", "/api/v1/vm.boot", b"", 404, "no VM is created"),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, json) = vmm.call(method, path, body);
        assert_eq!(got, *status, "{method} {path}: {json}");
        let error = json[0].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{method} {path}: `{needle}` not in {json}"
        );
    }
    // Over the limit, declared or not: 413.
    let big = vec![b' '; 64 * 1024 + 1];
    let (status, json) = vmm.call("PUT", "/api/v1/vm.create", &big);
    assert_eq!(status, 413, "{json}");
    assert!(json[0].as_str().is_some_and(|e| e.contains("65536")));
    // Still serving.
    let (status, json) = vmm.call("GET", "/api/v1/vmm.ping", b"");
    assert_eq!(status, 200, "{json}");
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let vmm = ApiVmm::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pv-vmm"))
        .arg("--api-socket")
        .arg(format!("path={}", vmm.socket.display()))
        .output()
        .expect("second pv-vmm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another process is listening"), "{stderr}");
    assert!(vmm.socket.exists(), "the live socket stays");
    drop(vmm);

    // A socket file left by a killed pv-vmm is replaced.
    let mut stale = ApiVmm::start();
    let path = stale.socket.clone();
    let _ = stale.child.kill();
    let _ = stale.child.wait();
    assert!(path.exists(), "SIGKILL leaves the socket file");
    let mut next = std::process::Command::new(env!("CARGO_BIN_EXE_pv-vmm"))
        .arg("--api-socket")
        .arg(format!("path={}", path.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pv-vmm on the stale socket");
    let start = std::time::Instant::now();
    let mut pinged = false;
    while start.elapsed() < std::time::Duration::from_secs(10) {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            let (status, _) = common::request(&path, "GET", "/api/v1/vmm.ping", b"");
            pinged = status == 200;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = next.kill();
    let _ = next.wait();
    assert!(pinged, "pv-vmm did not serve on the replaced socket");
}

#[test]
fn pv_remote_prints_json_and_fails_on_4xx() {
    let vmm = ApiVmm::start();
    let remote = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pv-remote"))
            .arg("--api-socket")
            .arg(&vmm.socket)
            .args(args)
            .output()
            .expect("pv-remote")
    };
    let out = remote(&["ping"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["pid"], vmm.child.id());
    let out = remote(&["info"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("pv-remote: error: the server answered 404: vm.info: no VM"),
        "{stderr}"
    );
    let out = remote(&["pv", "--halt-poll-ns", "fast"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--halt-poll-ns fast"));
    let out = remote(&["delete"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One request written and read as raw bytes, the way Cloud Hypervisor's `api_client` does:
/// the whole response, up to its body.
fn raw_exchange(socket: &std::path::Path, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the headers and as many body bytes as Content-Length says.
    loop {
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Cloud Hypervisor's client reads everything between `HTTP/1.1 ` and CR as the status
/// number, finds the body by the exact header `Content-Length: ` and takes an error body
/// as a JSON array of strings (DESIGN.md, "Wire compatibility"): hyper's `200 OK` and
/// `content-length` made every `ch-remote` command exit 1.
#[test]
fn responses_are_on_cloud_hypervisors_wire_format() {
    let vmm = ApiVmm::start();
    let ping = raw_exchange(
        &vmm.socket,
        "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    );
    assert!(ping.starts_with("HTTP/1.1 200 \r\n"), "{ping:?}");
    assert!(ping.contains("\r\nContent-Length: "), "{ping:?}");
    assert!(
        ping.contains("\r\nContent-Type: application/json"),
        "{ping:?}"
    );
    let body = &ping[ping.find("\r\n\r\n").expect("headers end") + 4..];
    let json: serde_json::Value = serde_json::from_str(body).expect("ping body");
    assert_eq!(json["pid"], vmm.child.id());

    for (request, status) in [
        (
            "GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "404",
        ),
        (
            "GET /api/v1/vm.nope HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "404",
        ),
        (
            "PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\n{",
            "400",
        ),
    ] {
        let answer = raw_exchange(&vmm.socket, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} \r\n")),
            "{request:?}: {answer:?}"
        );
        let body = &answer[answer.find("\r\n\r\n").expect("headers end") + 4..];
        let chain: Vec<String> = serde_json::from_str(body).expect("an array of strings");
        assert!(!chain.is_empty() && !chain[0].is_empty(), "{answer:?}");
    }
    let gone = raw_exchange(
        &vmm.socket,
        "PUT /api/v1/vm.delete HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(gone.starts_with("HTTP/1.1 204 \r\n"), "{gone:?}");
}

/// Found by schemathesis: `enum: [Off, Tty, File, Null]` made YAML read `Null` as null (and,
/// by YAML 1.1 rules, `Off`/`off` as false), so the document refused the `serial.mode` that
/// vm.info returns. Every enum value that a YAML reader could take for something other
/// than a string must be quoted.
#[test]
fn openapi_enum_values_are_strings_to_any_yaml_reader() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/pv-vmm.yaml"))
        .expect("reading the OpenAPI document");
    let special = [
        "null", "~", "off", "on", "yes", "no", "y", "n", "true", "false",
    ];
    let mut enums = 0;
    for (n, line) in doc.lines().enumerate() {
        let Some(list) = line
            .trim()
            .strip_prefix("enum: [")
            .and_then(|l| l.strip_suffix(']'))
        else {
            continue;
        };
        enums += 1;
        for value in list.split(',').map(str::trim) {
            assert!(
                !special.contains(&value.to_lowercase().as_str()),
                "line {}: enum value {value} must be quoted: {line}",
                n + 1
            );
        }
    }
    assert!(enums >= 8, "only {enums} enum lists found");
}

/// A client that sends headers and then trickles (or never sends) the body gets 408 after
/// 10 s and its connection closed; other clients are served meanwhile.
#[test]
fn a_body_that_never_arrives_gets_408() {
    use std::io::{Read, Write};
    let vmm = ApiVmm::start();
    let mut slow = std::os::unix::net::UnixStream::connect(&vmm.socket).expect("connect");
    slow.write_all(
        b"PUT /api/v1/vm.pv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"halt_",
    )
    .expect("write");
    let start = std::time::Instant::now();
    let (status, _) = vmm.call("GET", "/api/v1/vmm.ping", b"");
    assert_eq!(status, 200, "served while another body is pending");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    let waited = start.elapsed().as_secs_f64();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 10 s"), "{answer}");
    assert!(
        (9.0..15.0).contains(&waited),
        "answered after {waited:.1} s"
    );
}

/// pv-vmm with RLIMIT_NOFILE at 64 (so a connection limit of 16) and its API socket in
/// `dir`, once the socket exists.
fn pv_vmm_with_64_fds(
    dir: &std::path::Path,
    stderr: std::process::Stdio,
) -> (std::process::Child, std::path::PathBuf) {
    let socket = dir.join("api.sock");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec '{}' --api-socket 'path={}'",
            env!("CARGO_BIN_EXE_pv-vmm"),
            socket.display()
        ))
        .stderr(stderr)
        .spawn()
        .expect("starting pv-vmm");
    let start = std::time::Instant::now();
    while !socket.exists() {
        assert!(start.elapsed().as_secs() < 10, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (child, socket)
}

/// Found by hand while hardening: with its file descriptors exhausted by idle clients,
/// pv-vmm's accept loop spun on EMFILE, logging thousands of warnings a second, and a
/// reboot could no longer open the kernel. Connections are now capped below the limit and
/// a failed accept backs off: with RLIMIT_NOFILE at 64 and 100 clients holding
/// connections, pv-vmm keeps descriptors to spare, logs no accept errors, and serves
/// again as soon as they go.
#[test]
fn clients_cannot_exhaust_the_vmms_file_descriptors() {
    let dir = vmm_sys_util::tempdir::TempDir::new().expect("tempdir");
    let (mut child, socket) = pv_vmm_with_64_fds(dir.as_path(), std::process::Stdio::piped());
    let held: Vec<_> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .expect("fd dir")
        .count();
    assert!(fds <= 32, "pv-vmm holds {fds} descriptors of its 64");
    drop(held);
    common::wait_served(&socket, std::time::Duration::from_secs(5), String::new);
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("accept:").count(), 0, "{stderr}");
}

/// Beyond its connection limit pv-vmm answers 503 at once, as Cloud Hypervisor does, rather
/// than leaving clients in the listen backlog (with 200 idle connections held, 8 of 8
/// pings used to time out after 5 s); when the idle clients go, it serves again. With
/// RLIMIT_NOFILE at 64 the limit is 16 connections.
#[test]
fn beyond_the_connection_limit_clients_get_503_at_once() {
    use std::io::{Read, Write};
    let dir = vmm_sys_util::tempdir::TempDir::new().expect("tempdir");
    let (mut child, socket) = pv_vmm_with_64_fds(dir.as_path(), std::process::Stdio::null());
    let held: Vec<_> = (0..16)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    // The server has taken them all (a ping on one of them answers).
    let mut first = &held[0];
    first
        .write_all(b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 512];
    first
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let n = first.read(&mut buf).expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
    for attempt in 0..8 {
        let start = std::time::Instant::now();
        let mut extra = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        extra
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        extra
            .write_all(b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        extra.read_to_string(&mut answer).expect("the 503 and EOF");
        let took = start.elapsed();
        eprintln!("client {attempt} beyond the limit: answered in {took:?}");
        assert!(answer.starts_with("HTTP/1.1 503 \r\n"), "{answer:?}");
        assert!(answer.contains("at most 16 connections"), "{answer:?}");
        // At once, not after a queue: far under the 5 s the clients used to wait in vain.
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }
    drop(held);
    common::wait_served(&socket, std::time::Duration::from_secs(5), String::new);
    let _ = child.kill();
    let _ = child.wait();
}

/// An idle connection, one that never sends a request, is closed after
/// [`vmm::api::server::HEADER_TIMEOUT`] and gives its slot back.
#[test]
fn idle_connections_are_closed_after_the_header_timeout() {
    use std::io::Read;
    let vmm = ApiVmm::start();
    let mut idle = std::os::unix::net::UnixStream::connect(&vmm.socket).expect("connect");
    idle.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    let waited = start.elapsed().as_secs_f64();
    let limit = vmm::api::server::HEADER_TIMEOUT.as_secs_f64();
    assert!(
        (limit - 1.0..limit + 5.0).contains(&waited),
        "closed after {waited:.1} s, not about {limit} s"
    );
}

/// `--api-socket fd=N`, as Cloud Hypervisor takes it: the parent binds and listens, pv-vmm
/// inherits the descriptor, serves on it, and leaves the parent's file alone at exit.
#[test]
fn an_inherited_listening_socket_is_served() {
    let dir = vmm_sys_util::tempdir::TempDir::new().expect("tempdir");
    let socket = dir.as_path().join("parent.sock");
    // The parent: python binds, listens and execs pv-vmm with the descriptor inherited.
    let script = format!(
        "import os, socket\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
         s.bind({socket:?})\n\
         s.listen(16)\n\
         os.set_inheritable(s.fileno(), True)\n\
         os.execv({vmm:?}, [{vmm:?}, '--api-socket', 'fd=%d' % s.fileno()])\n",
        socket = socket.display().to_string(),
        vmm = env!("CARGO_BIN_EXE_pv-vmm"),
    );
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let start = std::time::Instant::now();
    while common::try_ping(&socket) != Some(200) {
        assert!(
            start.elapsed().as_secs() < 10,
            "not served on the inherited socket"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, _) = common::request(&socket, "PUT", "/api/v1/vmm.shutdown", b"");
    assert_eq!(status, 204);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(
        socket.exists(),
        "the parent's socket file is the parent's to remove"
    );
}
