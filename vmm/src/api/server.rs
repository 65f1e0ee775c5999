//! The HTTP side of the API: the Unix socket and a hyper 1.x HTTP/1.1 server on a
//! current-thread tokio runtime in its own thread.
//!
//! Why hyper: Firecracker's and Cloud Hypervisor's `micro_http` is not on crates.io (the
//! crate of that name there is another project), and hyper is the maintained, widely used
//! HTTP implementation; one current-thread runtime on one thread keeps it small and leaves
//! the VMM's own threads synchronous. The server parses nothing by hand: hyper parses
//! HTTP, serde parses JSON. Each request becomes an [`ApiMessage`] on the main loop's
//! channel; the answer comes back on a oneshot channel, so many connections can wait at
//! once without blocking each other or the runtime.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::io::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::ext::ReasonPhrase;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hypervisor_glue::option_parser::{OptionError, OptionParser};
use tokio::sync::Semaphore;

use super::{
    parse_request, route, ApiError, ApiMessage, ApiResponse, Method, BODY_TIMEOUT, MAX_BODY,
};
use crate::seccomp::{self, Filters, ThreadKind};
use crate::sink::Sink;

/// How long in-flight requests may take to finish when the VMM exits.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Most connections served at once: a quarter of the process's file descriptor limit, at
/// most 64, so that clients can never take the descriptors the VM needs (a reboot opens
/// the kernel, /dev/kvm, eventfds and statistics files). A client beyond the limit is
/// answered 503 at once and its connection closed, as Cloud Hypervisor's server does (never
/// a silent queue); a connection whose next request's headers do not arrive within
/// [`HEADER_TIMEOUT`] is closed, so idle and slow clients give their slot back.
fn max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass, which lives on this stack.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        256
    };
    (soft / 4).clamp(4, 64)
}

/// After a failed accept (e.g. EMFILE) the server waits this long before the next one,
/// instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a connection may take to send a request's headers, the first or the next one
/// on a kept-alive connection (hyper's header read timeout).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the 503 to a client beyond the connection limit may take to write.
const BUSY_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// How long a refused client may take to send its request before the connection closes
/// (what it sent must be read first: see [`refuse_busy`]).
const BUSY_DRAIN: Duration = Duration::from_millis(100);

/// Reads what the client has sent so far (at most [`MAX_BODY`] bytes) without waiting;
/// returns how much that was.
fn drain_now(stream: &tokio::net::UnixStream) -> usize {
    let mut sink = [0u8; 4096];
    let mut read = 0;
    while read < MAX_BODY {
        match stream.try_read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    read
}

/// Answers a client beyond the connection limit with `response` (the 503) and closes its
/// connection. Whatever the client sent is read first: a Unix socket closed with unread
/// data makes the peer's next read fail (ECONNRESET), and the client would never see the
/// 503. A client whose request is already there is answered at once; one that has sent
/// nothing yet gets [`BUSY_DRAIN`] in a task, if one of the bounded `busy_slots` is free
/// (else it is answered and closed at once too).
fn refuse_busy(stream: tokio::net::UnixStream, busy_slots: &Arc<Semaphore>, response: &Arc<[u8]>) {
    let waiting = if drain_now(&stream) == 0 {
        busy_slots.clone().try_acquire_owned().ok()
    } else {
        None
    };
    let Some(busy_slot) = waiting else {
        // The response is far smaller than a socket buffer: one write takes it.
        let _ = stream.try_write(response);
        return;
    };
    let response = response.clone();
    tokio::spawn(async move {
        let _busy_slot = busy_slot;
        let _ = tokio::time::timeout(BUSY_WRITE_LIMIT, async {
            use tokio::io::AsyncWriteExt;
            let mut stream = stream;
            stream.write_all(&response).await?;
            let _ = tokio::time::timeout(BUSY_DRAIN, stream.readable()).await;
            drain_now(&stream);
            Ok::<(), io::Error>(())
        })
        .await;
    });
}

/// The whole answer to a client beyond the connection limit.
fn busy_response(limit: usize) -> Vec<u8> {
    let body = serde_json::Value::from(vec![format!(
        "the API serves at most {limit} connections at once; try again when one closes"
    )])
    .to_string();
    format!(
        "HTTP/1.1 503 \r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Errors of setting up the API socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// `--api-socket` did not parse.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// `--api-socket` without a path or descriptor, or with both.
    #[error("--api-socket {0}: expected path=PATH or fd=N")]
    NoPath(String),
    /// `fd=` that is not a descriptor number.
    #[error("--api-socket fd={0}: not a file descriptor number")]
    BadFd(String),
    /// `fd=N` names no listening Unix socket.
    #[error("--api-socket fd={fd}: {what}")]
    Fd {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        what: String,
    },
    /// Another process serves the socket.
    #[error("--api-socket path={0}: another process is listening on it")]
    InUse(String),
    /// The path exists and is not a socket.
    #[error("--api-socket path={0}: exists and is not a socket; not replacing it")]
    NotASocket(String),
    /// A filesystem or socket call failed.
    #[error("--api-socket path={path}: {what}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The server thread could not start.
    #[error("starting the API thread")]
    Thread(#[source] io::Error),
}

/// Where the API listens, as `--api-socket` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSocketSpec {
    /// `path=PATH`: pv-vmm binds it (and removes it at exit).
    Path(PathBuf),
    /// `fd=N`: a Unix socket the parent already bound and listens on, inherited as
    /// descriptor N (Cloud Hypervisor's `--api-socket fd=`); pv-vmm takes it over and
    /// removes no file.
    Fd(RawFd),
}

/// Parses `--api-socket path=PATH` or `fd=N` (a bare path is taken as `path=`, as Cloud
/// Hypervisor does).
pub fn parse_api_socket(value: &str) -> Result<ApiSocketSpec, SocketError> {
    if !value.contains('=') && !value.trim().is_empty() {
        return Ok(ApiSocketSpec::Path(PathBuf::from(value.trim())));
    }
    let mut parser = OptionParser::new("--api-socket", &["path", "fd"]);
    parser.parse(value)?;
    let path = parser.get("path").filter(|p| !p.is_empty());
    let fd = parser.get("fd");
    match (path, fd) {
        (Some(path), None) => Ok(ApiSocketSpec::Path(PathBuf::from(path))),
        (None, Some(fd)) => fd
            .parse::<RawFd>()
            .ok()
            .filter(|fd| *fd >= 0)
            .map(ApiSocketSpec::Fd)
            .ok_or_else(|| SocketError::BadFd(fd.to_owned())),
        _ => Err(SocketError::NoPath(value.to_owned())),
    }
}

/// The bound socket; a file pv-vmm bound is removed when it is dropped.
#[derive(Debug)]
pub struct ApiSocket {
    /// The file pv-vmm bound (none for an inherited descriptor).
    path: Option<PathBuf>,
    /// How the socket is named in messages.
    name: String,
    listener: Option<UnixListener>,
}

impl ApiSocket {
    /// The socket `spec` names: bound ([`ApiSocket::bind`]) or taken over
    /// ([`ApiSocket::from_fd`]).
    pub fn open(spec: &ApiSocketSpec) -> Result<Self, SocketError> {
        match spec {
            ApiSocketSpec::Path(path) => Self::bind(path),
            ApiSocketSpec::Fd(fd) => Self::from_fd(*fd),
        }
    }

    /// Takes over descriptor `fd`, which must be a Unix stream socket in the listening
    /// state (checked before pv-vmm owns it; anything else is refused and left alone).
    pub fn from_fd(fd: RawFd) -> Result<Self, SocketError> {
        let refuse = |what: String| SocketError::Fd { fd, what };
        let int_opt = |name: libc::c_int| -> Result<libc::c_int, SocketError> {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `value`, an int on this
            // stack, and `len` says exactly that; a bad or non-socket fd only makes it fail.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    name,
                    std::ptr::addr_of_mut!(value).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return Err(refuse(match e.raw_os_error() {
                    Some(libc::EBADF) => "not an open file descriptor".to_owned(),
                    Some(libc::ENOTSOCK) => "not a socket".to_owned(),
                    _ => format!("reading its socket options: {e}"),
                }));
            }
            Ok(value)
        };
        if int_opt(libc::SO_DOMAIN)? != libc::AF_UNIX
            || int_opt(libc::SO_TYPE)? != libc::SOCK_STREAM
        {
            return Err(refuse("not a Unix stream socket".to_owned()));
        }
        if int_opt(libc::SO_ACCEPTCONN)? != 1 {
            return Err(refuse(
                "not listening (bind and listen on it before passing it)".to_owned(),
            ));
        }
        // SAFETY: `fd` is an open, listening Unix stream socket (checked above) that the
        // parent handed to this process for the API; from here on the listener owns it and
        // nothing else in pv-vmm uses that number.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        Ok(Self {
            path: None,
            name: format!("fd {fd}"),
            listener: Some(listener),
        })
    }

    /// Binds `path` with mode 0600. A socket file nobody listens on (left by a crashed run)
    /// is replaced; a live socket or a path that is not a socket is an error.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        let name = path.display().to_string();
        let io_err = |what| {
            let name = name.clone();
            move |source| SocketError::Io {
                path: name,
                what,
                source,
            }
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(SocketError::InUse(name));
                }
                log::warn!("--api-socket: replacing the stale socket {name}");
                std::fs::remove_file(path).map_err(io_err("removing the stale socket"))?;
            }
            Ok(_) => return Err(SocketError::NotASocket(name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading its metadata")(e)),
        }
        // SAFETY: umask only swaps the process's file-creation mask; it cannot fail and
        // touches no memory. The mask makes bind() create the socket file as 0600, so it is
        // never reachable by others, not even between bind() and chmod.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above; restores the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(io_err("binding"))?;
        let socket = Self {
            path: Some(path.to_owned()),
            name: name.clone(),
            listener: Some(listener),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("setting mode 0600"))?;
        Ok(socket)
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("removing the API socket {}: {e}", path.display());
            }
        }
    }
}

/// The running server: stop it with [`ApiServer::stop`].
#[derive(Debug)]
pub struct ApiServer {
    thread: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ApiServer {
    /// Serves `socket` on a new thread; requests go to `events`.
    pub fn start(
        socket: &mut ApiSocket,
        events: Sink<ApiMessage>,
        filters: &Filters,
    ) -> Result<Self, SocketError> {
        let name = socket.name.clone();
        let listener = socket.listener.take().ok_or_else(|| SocketError::Io {
            path: name.clone(),
            what: "serving",
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| SocketError::Io {
                path: name.clone(),
                what: "setting O_NONBLOCK",
                source,
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(SocketError::Thread)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        // Read here: the API thread's seccomp filter does not allow getrlimit.
        let max_connections = max_connections();
        let thread = seccomp::spawn("api".into(), ThreadKind::Api, filters, move || {
            runtime.block_on(serve(listener, max_connections, events, stop_rx))
        })
        .map_err(SocketError::Thread)?;
        log::info!("API listening on {name}");
        Ok(Self {
            thread: Some(thread),
            stop: Some(stop_tx),
        })
    }

    /// Stops accepting, lets in-flight requests finish (at most [`DRAIN_LIMIT`]) and joins
    /// the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the API thread panicked");
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    listener: UnixListener,
    max_connections: usize,
    events: Sink<ApiMessage>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("API: registering the socket with tokio: {e}");
            return;
        }
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let busy: Arc<[u8]> = busy_response(max_connections).into();
    // The 503s that wait for their client's request are bounded too (each holds its
    // descriptor up to BUSY_WRITE_LIMIT); beyond them a client is answered and closed at
    // once (see refuse_busy).
    let busy_slots = Arc::new(Semaphore::new((max_connections / 4).max(1)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("API: accept: {e}; retrying in {ACCEPT_BACKOFF:?}");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    _ = &mut stop => break,
                }
            }
        };
        // A free connection slot, or a 503 at once: beyond the limit nobody waits.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_busy(stream, &busy_slots, &busy);
            log::debug!("API: connection limit of {max_connections} reached; answered 503");
            continue;
        };
        let events = events.clone();
        let service = service_fn(move |req| handle(req, events.clone()));
        // Header names as Cloud Hypervisor's server writes them (its client looks for
        // `Content-Length: ` exactly).
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .title_case_headers(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // The slot is free again when the connection ends.
            let _slot = slot;
            if let Err(e) = conn.await {
                log::debug!("API connection: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("API: connections still open after {DRAIN_LIMIT:?}; closing them");
    }
}

async fn handle(
    req: Request<Incoming>,
    events: Sink<ApiMessage>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let answer = answer(req, events).await;
    match &answer {
        Ok(_) => log::debug!("API {method} {path}: ok"),
        Err(e) => log::info!("API {method} {path}: {} {e}", e.status()),
    }
    Ok(respond(answer))
}

async fn answer(req: Request<Incoming>, events: Sink<ApiMessage>) -> ApiResponse {
    let path = req.uri().path().to_owned();
    let endpoint = route(&path)?;
    let method = match *req.method() {
        hyper::Method::GET => Some(Method::Get),
        hyper::Method::PUT => Some(Method::Put),
        _ => None,
    };
    if method != Some(endpoint.method) {
        return Err(ApiError::MethodNotAllowed {
            path,
            method: req.method().to_string(),
            allowed: endpoint.method.as_str(),
        });
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout)?
    .map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("reading the request body: {e}"))
        }
    })?
    .to_bytes();
    let request = parse_request(endpoint, &body)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !events.send(ApiMessage { request, reply }) {
        return Err(ApiError::Unavailable);
    }
    answer.await.map_err(|_| ApiError::Unavailable)?
}

fn respond(answer: ApiResponse) -> Response<Full<Bytes>> {
    let (status, body, allow) = match answer {
        Ok(Some(json)) => (200, Some(json.to_string()), None),
        Ok(None) => (204, None, None),
        Err(e) => {
            let allow = match &e {
                ApiError::MethodNotAllowed { allowed, .. } => Some(*allowed),
                _ => None,
            };
            (e.status(), Some(e.body()), allow)
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    // No reason phrase: `HTTP/1.1 200 ` as Cloud Hypervisor's server sends it, since its
    // client reads everything between `HTTP/1.1 ` and CR as the status number.
    response
        .extensions_mut()
        .insert(const { ReasonPhrase::from_static(b"") });
    let headers = response.headers_mut();
    if body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(allow) = allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_socket_option() {
        assert_eq!(
            parse_api_socket("path=/tmp/a.sock").ok(),
            Some(ApiSocketSpec::Path("/tmp/a.sock".into()))
        );
        assert_eq!(
            parse_api_socket("/tmp/b.sock").ok(),
            Some(ApiSocketSpec::Path("/tmp/b.sock".into()))
        );
        assert_eq!(parse_api_socket("fd=3").ok(), Some(ApiSocketSpec::Fd(3)));
        for (bad, needle) in [
            ("fd=three", "fd=three: not a file descriptor number"),
            ("fd=-1", "fd=-1: not a file descriptor number"),
            ("path=/a,fd=3", "expected path=PATH or fd=N"),
            ("path=", "expected path=PATH or fd=N"),
        ] {
            let err = parse_api_socket(bad).expect_err(bad).to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(parse_api_socket("").is_err());
    }

    #[test]
    fn an_inherited_descriptor_must_be_a_listening_unix_socket() {
        use std::os::unix::io::{AsRawFd, IntoRawFd};
        let dir = vmm_sys_util::tempdir::TempDir::new().expect("tempdir");
        let path = dir.as_path().join("parent.sock");
        let fd = UnixListener::bind(&path).expect("bind").into_raw_fd();
        let socket = ApiSocket::from_fd(fd).expect("a listening socket");
        assert_eq!(socket.name, format!("fd {fd}"));
        drop(socket);
        assert!(path.exists(), "an inherited socket's file is the parent's");

        let file = std::fs::File::open(dir.as_path()).expect("a directory");
        let (a, _b) = UnixStream::pair().expect("pair");
        for (fd, needle) in [
            (file.as_raw_fd(), "not a socket"),
            (a.as_raw_fd(), "not listening"),
            (9999, "not an open file descriptor"),
        ] {
            let err = ApiSocket::from_fd(fd).expect_err(needle).to_string();
            assert!(err.starts_with(&format!("--api-socket fd={fd}: ")), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn bind_replaces_stale_and_refuses_live_sockets() {
        let dir = vmm_sys_util::tempdir::TempDir::new().expect("tempdir");
        let path = dir.as_path().join("api.sock");
        {
            let mut socket = ApiSocket::bind(&path).expect("binds");
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let err = ApiSocket::bind(&path).expect_err("live").to_string();
            assert!(err.contains("another process is listening"), "{err}");
            // Close the listener but leave the file behind, as a crash would.
            drop(socket.listener.take());
            std::mem::forget(socket);
        }
        assert!(path.exists());
        let socket = ApiSocket::bind(&path).expect("replaces the stale socket");
        drop(socket);
        assert!(!path.exists(), "removed on drop");

        let file = dir.as_path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        let err = ApiSocket::bind(&file).expect_err("file").to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert!(file.exists(), "a plain file is never removed");
    }

    #[test]
    fn responses_carry_status_and_json() {
        let r = respond(Ok(None));
        assert_eq!(r.status(), 204);
        let r = respond(Ok(Some(serde_json::json!({"a": 1}))));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = respond(Err(ApiError::MethodNotAllowed {
            path: "/api/v1/vm.info".into(),
            method: "POST".into(),
            allowed: "GET",
        }));
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET");
    }
}
