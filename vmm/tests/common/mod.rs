//! Shared by the API tests: a pv-vmm process with an API socket, a small HTTP client over
//! that socket (hyper, as pv-remote), and the operations the OpenAPI document lists.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A pv-vmm started with `--api-socket` in a temporary directory; killed when dropped.
pub struct ApiVmm {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: vmm_sys_util::tempdir::TempDir,
}

impl ApiVmm {
    /// Starts pv-vmm with only an API socket and waits for the socket. Its stderr goes to
    /// a file ([`ApiVmm::stderr`]): a pipe nobody reads would stall it once full.
    pub fn start() -> Self {
        let dir = vmm_sys_util::tempdir::TempDir::new().expect("tempdir");
        let socket = dir.as_path().join("api.sock");
        let stderr = std::fs::File::create(dir.as_path().join("pv-vmm.err")).expect("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_pv-vmm"))
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting pv-vmm");
        let vmm = Self { child, socket, dir };
        vmm.wait_for_socket();
        vmm
    }

    /// Waits until the socket takes a connection: it exists from the server's bind(), but
    /// refuses connections until its listen() (the tests' first request failed in that
    /// window now and then).
    fn wait_for_socket(&self) {
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "pv-vmm did not listen on {}",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `method path` with `body`; returns the status and the body as JSON
    /// (`Null` when empty).
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let (status, text) = request(&self.socket, method, path, body);
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        };
        (status, json)
    }

    /// What pv-vmm wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.as_path().join("pv-vmm.err")).unwrap_or_default()
    }

    /// Waits for the process to exit (at most 10 s) and returns its status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "pv-vmm did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ApiVmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over the Unix socket at `socket`.
pub fn request(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .header("host", "localhost")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let res = sender.send_request(req).await.expect("send");
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// One operation of the OpenAPI document.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `/vm.info`.
    pub path: String,
    /// `GET` or `PUT`.
    pub method: String,
    /// The documented response codes.
    pub codes: Vec<u16>,
}

/// The operations `vmm/openapi/pv-vmm.yaml` lists (its `paths:` block read line by line:
/// two-space-indented path keys, four-space methods, quoted status codes below).
pub fn openapi_operations() -> Vec<Operation> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/pv-vmm.yaml"))
        .expect("reading the OpenAPI document");
    let mut ops: Vec<Operation> = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in doc.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if !in_paths {
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() {
            break;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = format!("/{p}");
        } else if let Some(m) = line
            .strip_prefix("    ")
            .and_then(|l| l.strip_suffix(':'))
            .filter(|m| ["get", "put", "post", "delete"].contains(m))
        {
            ops.push(Operation {
                path: path.clone(),
                method: m.to_uppercase(),
                codes: Vec::new(),
            });
        } else if let Some(code) = line
            .trim()
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix("\":"))
            .and_then(|c| c.parse::<u16>().ok())
        {
            if let Some(op) = ops.last_mut() {
                op.codes.push(code);
            }
        }
    }
    ops
}

/// The status of a ping, or None when the connection failed or was closed unanswered.
pub fn try_ping(socket: &std::path::Path) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream
        .write_all(b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.get(9..12)?.parse().ok()
}

/// Pings until pv-vmm answers 200 (after a flood of connections it answers 503, or closes,
/// until it has seen them go), at most `limit`; `context()` goes into the failure message.
pub fn wait_served(socket: &Path, limit: Duration, context: impl Fn() -> String) {
    let start = Instant::now();
    while try_ping(socket) != Some(200) {
        assert!(
            start.elapsed() < limit,
            "pv-vmm not served again within {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
