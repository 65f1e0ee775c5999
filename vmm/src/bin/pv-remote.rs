//! `pv-remote`: the command-line client of pv-vmm's REST API, shaped like Cloud
//! Hypervisor's `ch-remote`. It prints the server's JSON answer on stdout; on an error
//! status it prints the server's error on stderr and exits non-zero.
//!
//! HTTP over a Unix socket: hyper's HTTP/1.1 client connection on a tokio `UnixStream`
//! (the common blocking clients, `ureq` and `reqwest`, cannot dial a Unix socket); the same
//! crates the server uses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use hypervisor_glue::change::{PvFlags, PvPatch};
use vmm::error::chain;

/// pv-remote: drives a running pv-vmm through its API socket.
#[derive(Debug, Parser)]
#[command(name = "pv-remote", version, about, long_about = None)]
struct Cli {
    /// pv-vmm's API socket (its --api-socket path).
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Toggle {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Is the VMM there? (GET vmm.ping)
    Ping,
    /// The VM's config, state and PV state (GET vm.info).
    Info,
    /// KVM statistics per VM and vCPU, and steal time (GET vm.counters).
    Counters,
    /// Create the VM from a JSON config file, `-` for stdin (PUT vm.create).
    Create {
        /// The VmConfig JSON.
        file: PathBuf,
    },
    /// Boot the created VM (PUT vm.boot).
    Boot,
    /// Pause the vCPUs (PUT vm.pause).
    Pause,
    /// Resume the vCPUs (PUT vm.resume).
    Resume,
    /// Reboot: recreate the VM, applying pending PV changes (PUT vm.reboot).
    Reboot,
    /// Shut the VM down; the VMM stays (PUT vm.shutdown).
    Shutdown,
    /// Delete the VM (PUT vm.delete).
    Delete,
    /// End the VMM (PUT vmm.shutdown).
    ShutdownVmm,
    /// Change PV settings (PUT vm.pv); prints which part applies now and which waits for
    /// the next reboot.
    Pv {
        /// New halt-poll limit in ns, or `default` for the kernel's default.
        #[arg(long, value_name = "NS|default")]
        halt_poll_ns: Option<String>,
        /// The dedicated preset.
        #[arg(long)]
        dedicated: Option<Toggle>,
        /// The feature selection: all, off or a list like steal_time,pv_tlb_flush.
        #[arg(long, value_name = "all|off|LIST")]
        kvm_pv: Option<String>,
        /// Exits to disable: a list of hlt,pause,mwait,cstate ("" for none), or `default`.
        #[arg(long, value_name = "LIST|default")]
        disable_exits: Option<String>,
        /// PV CPUID enforcement.
        #[arg(long)]
        enforce_pv_cpuid: Option<Toggle>,
    },
    /// Load test: CLIENTS connections send REQUESTS requests each, cycling vm.info,
    /// vm.counters and vm.pv halt-poll changes; prints latency percentiles as JSON.
    Load {
        /// Concurrent connections.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Requests per connection.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
    },
}

/// Errors of the client; each says what failed.
#[derive(Debug, thiserror::Error)]
enum RemoteError {
    #[error("connecting to {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP")]
    Http(#[from] hyper::Error),
    #[error("building the request")]
    Request(#[from] hyper::http::Error),
    #[error("reading {path}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("starting the tokio runtime")]
    Runtime(#[source] std::io::Error),
}

/// One HTTP/1.1 connection to the API.
struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(path: &Path) -> Result<Self, RemoteError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| RemoteError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log_debug(&format!("connection: {e}"));
            }
        });
        Ok(Self { sender })
    }

    /// Sends one request; returns the status and the body.
    async fn call(
        &mut self,
        method: Method,
        name: &str,
        body: Option<String>,
    ) -> Result<(u16, String), RemoteError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://localhost/api/v1/{name}"))
            .header(HOST, "localhost");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn log_debug(message: &str) {
    if std::env::var_os("PV_REMOTE_DEBUG").is_some() {
        eprintln!("pv-remote: {message}");
    }
}

fn toggle(t: Option<Toggle>) -> Option<bool> {
    t.map(|t| t == Toggle::On)
}

/// The `vm.pv` body of the `pv` subcommand's flags.
fn pv_patch(
    halt_poll_ns: Option<&str>,
    dedicated: Option<Toggle>,
    kvm_pv: Option<&str>,
    disable_exits: Option<&str>,
    enforce_pv_cpuid: Option<Toggle>,
) -> Result<PvPatch, RemoteError> {
    PvPatch::from_flags(PvFlags {
        halt_poll_ns,
        dedicated: toggle(dedicated),
        kvm_pv,
        disable_exits,
        enforce_pv_cpuid: toggle(enforce_pv_cpuid),
    })
    .map_err(|e| RemoteError::Usage(format!("pv: {e}")))
}

/// The method, path and body of a subcommand other than `load`.
fn request_of(command: &Command) -> Result<(Method, &'static str, Option<String>), RemoteError> {
    Ok(match command {
        Command::Ping => (Method::GET, "vmm.ping", None),
        Command::Info => (Method::GET, "vm.info", None),
        Command::Counters => (Method::GET, "vm.counters", None),
        Command::Create { file } => {
            let read = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            };
            let body = read.map_err(|source| RemoteError::ReadFile {
                path: file.display().to_string(),
                source,
            })?;
            (Method::PUT, "vm.create", Some(body))
        }
        Command::Boot => (Method::PUT, "vm.boot", None),
        Command::Pause => (Method::PUT, "vm.pause", None),
        Command::Resume => (Method::PUT, "vm.resume", None),
        Command::Reboot => (Method::PUT, "vm.reboot", None),
        Command::Shutdown => (Method::PUT, "vm.shutdown", None),
        Command::Delete => (Method::PUT, "vm.delete", None),
        Command::ShutdownVmm => (Method::PUT, "vmm.shutdown", None),
        Command::Pv {
            halt_poll_ns,
            dedicated,
            kvm_pv,
            disable_exits,
            enforce_pv_cpuid,
        } => {
            let patch = pv_patch(
                halt_poll_ns.as_deref(),
                *dedicated,
                kvm_pv.as_deref(),
                disable_exits.as_deref(),
                *enforce_pv_cpuid,
            )?;
            let body = serde_json::to_string(&patch)
                .map_err(|e| RemoteError::Usage(format!("pv: {e}")))?;
            (Method::PUT, "vm.pv", Some(body))
        }
        Command::Load { .. } => {
            return Err(RemoteError::Usage(
                "load is not a single request".to_owned(),
            ))
        }
    })
}

/// The error message of an error body (Cloud Hypervisor's shape: the chain as a JSON array
/// of strings, outermost first, joined here with ": "), or the body itself.
fn server_message(body: &str) -> String {
    serde_json::from_str::<Vec<String>>(body)
        .ok()
        .filter(|chain| !chain.is_empty())
        .map(|chain| chain.join(": "))
        .unwrap_or_else(|| body.to_owned())
}

async fn run(cli: Cli) -> Result<String, RemoteError> {
    if let Command::Load { clients, requests } = cli.command {
        return load(&cli.api_socket, clients, requests).await;
    }
    let (method, name, body) = request_of(&cli.command)?;
    let mut client = Client::connect(&cli.api_socket).await?;
    let (status, body) = client.call(method, name, body).await?;
    if status >= 400 {
        return Err(RemoteError::Server {
            status,
            message: server_message(&body),
        });
    }
    Ok(body)
}

/// The latency below which `p` (0..=1) of `sorted` lie.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

async fn load(socket: &Path, clients: usize, requests: usize) -> Result<String, RemoteError> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let socket = socket.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&socket).await?;
            let mut latencies = Vec::with_capacity(requests);
            let mut failures = Vec::new();
            for i in 0..requests {
                let (method, name, body) = match (c + i) % 3 {
                    0 => (Method::GET, "vm.info", None),
                    1 => (Method::GET, "vm.counters", None),
                    _ => (
                        Method::PUT,
                        "vm.pv",
                        Some(format!(
                            r#"{{"halt_poll_ns":{}}}"#,
                            (c * requests + i) % 200_000
                        )),
                    ),
                };
                let t = Instant::now();
                let (status, body) = client.call(method, name, body).await?;
                latencies.push(t.elapsed());
                if status >= 400 {
                    failures.push(format!("{name}: {status} {}", server_message(&body)));
                }
            }
            Ok::<_, RemoteError>((latencies, failures))
        }));
    }
    let mut all = Vec::with_capacity(clients * requests);
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok((latencies, failed))) => {
                all.extend(latencies);
                failures.extend(failed);
            }
            Ok(Err(e)) => failures.push(chain(&e)),
            Err(e) => failures.push(format!("client task: {e}")),
        }
    }
    all.sort();
    let report = serde_json::json!({
        "clients": clients,
        "requests_per_client": requests,
        "completed": all.len(),
        "failed": failures.len(),
        "failures": failures.iter().take(10).collect::<Vec<_>>(),
        "wall_s": start.elapsed().as_secs_f64(),
        "p50_ms": percentile(&all, 0.50),
        "p99_ms": percentile(&all, 0.99),
        "max_ms": all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    });
    if !failures.is_empty() {
        return Err(RemoteError::Server {
            status: 0,
            message: format!("load: {} failures: {report}", failures.len()),
        });
    }
    Ok(report.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(RemoteError::Runtime)
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pv-remote: error: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(body) => {
            use std::io::Write;
            // A closed stdout (`| head`) is not worth a panic.
            if !body.is_empty() && writeln!(std::io::stdout(), "{body}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pv-remote: error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_flags_make_a_patch() {
        let patch = pv_patch(Some("0"), Some(Toggle::On), None, None, None).expect("patch");
        assert_eq!(
            serde_json::to_string(&patch).expect("json"),
            r#"{"dedicated":true,"halt_poll_ns":0}"#
        );
        let patch = pv_patch(
            Some("default"),
            None,
            Some("steal_time,pv_tlb_flush"),
            Some("default"),
            Some(Toggle::Off),
        )
        .expect("patch");
        let json = serde_json::to_string(&patch).expect("json");
        assert!(json.contains(r#""disable_exits":null"#), "{json}");
        assert!(json.contains(r#""halt_poll_ns":null"#), "{json}");
        assert!(json.contains("steal_time"), "{json}");
        let patch = pv_patch(None, None, None, Some("[hlt,pause]"), None).expect("patch");
        assert!(patch.disable_exits.is_some_and(|e| e.is_some()));
    }

    #[test]
    fn bad_pv_flags_are_refused_before_sending() {
        for (args, needle) in [
            ((Some("-1"), None, None), "--halt-poll-ns -1"),
            ((Some("fast"), None, None), "--halt-poll-ns fast"),
            ((None, Some("warp"), None), "--kvm-pv warp"),
            ((None, None, Some("hlt,sleep")), "--disable-exits hlt,sleep"),
            ((None, None, None), "give at least one"),
        ] {
            let (h, k, d) = args;
            let err = pv_patch(h, None, k, d, None).expect_err(needle).to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn server_errors_are_unwrapped() {
        assert_eq!(server_message(r#"["no VM"]"#), "no VM");
        assert_eq!(
            server_message(r#"["Error from API","The VM could not be booted"]"#),
            "Error from API: The VM could not be booted"
        );
        assert_eq!(server_message("plain"), "plain");
        assert_eq!(server_message("[]"), "[]");
        assert_eq!(server_message(r#"{"error":"x"}"#), r#"{"error":"x"}"#);
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
