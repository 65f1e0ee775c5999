//! The KVM lab harness.
//!
//! Development and CI machines are VMs whose `/dev/kvm` cannot run a real Linux guest, so
//! tests that need real KVM run their workload through `scripts/lab/run`: it boots "L1"
//! (the Debian cloud kernel under QEMU/TCG, with `kvm-amd` loaded, which gives a real
//! `/dev/kvm`), runs the command there and returns its output and exit status. On a host
//! with hardware virtualization the same script runs the command directly (see
//! `scripts/lab/README.md`).
//!
//! This crate wraps that script ([`LabCommand`]), tells a lab failure (L1 died, panicked,
//! timed out, had no `/dev/kvm`) from a failure of the command ([`LabError`]), prepares
//! the guest's kernel and initramfs ([`GuestAssets`]) and parses what the lab cases print
//! ([`peer`]); [`hostile`] builds the raw PVH guests and parses what they report.

pub mod features;
pub mod hostile;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// Serialises lab runs within a test process.
static LAB_LOCK: Mutex<()> = Mutex::new(());

/// Exit status `scripts/lab/run` uses for its own failures (never the command's).
pub const LAB_FAILURE_STATUS: i32 = 125;

/// The lines (after `kvm-guest: `) a Linux guest prints when a PV feature is on.
pub const PV_GUEST_LINES: [&str; 4] = [
    "setup PV IPIs",
    "KVM setup pv remote TLB flush",
    "setup PV sched yield",
    "PV spinlocks enabled",
];

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// A script under the repository's `scripts/` directory.
pub fn script(relative: &str) -> PathBuf {
    repo_root().join("scripts").join(relative)
}

/// Where the command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabMode {
    /// Inside L1, the TCG-emulated machine with a real KVM.
    Lab,
    /// Directly on a host with hardware virtualization.
    Direct,
}

/// Timings `scripts/lab/run` reports on its `lab: image ...` line (host wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LabTiming {
    /// Building (or finding in the cache) the L1 initramfs.
    pub image_s: f64,
    /// From QEMU's start to L1 having loaded kvm-amd and being ready to run the command.
    pub l1_boot_s: Option<f64>,
    /// The command's run time inside L1.
    pub command_s: Option<f64>,
    /// The whole run.
    pub total_s: f64,
}

impl LabTiming {
    /// Parses the `lab: image 0.05s, L1 boot to kvm ready 3.08s, command 0.02s, total 3.25s`
    /// line from the runner's stderr; `None` when there is none.
    pub fn parse(stderr: &str) -> Option<Self> {
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("lab: image "))?;
        let mut timing = LabTiming::default();
        for part in line.trim_start_matches("lab: ").split(", ") {
            let (label, value) = part.rsplit_once(' ')?;
            let secs: f64 = value.trim_end_matches('s').parse().ok()?;
            match label {
                "image" => timing.image_s = secs,
                "L1 boot to kvm ready" => timing.l1_boot_s = Some(secs),
                "command" => timing.command_s = Some(secs),
                "total" => timing.total_s = secs,
                _ => {}
            }
        }
        Some(timing)
    }
}

/// What a lab run returned.
#[derive(Debug, Clone)]
pub struct LabOutput {
    /// The command's exit status.
    pub status: i32,
    /// The command's stdout.
    pub stdout: String,
    /// The command's stderr, with the runner's own `lab: ...` lines.
    pub stderr: String,
    /// Lab or direct.
    pub mode: LabMode,
    /// The runner's timing line, when it printed one.
    pub timing: Option<LabTiming>,
    /// Where the runner kept L1's console log and the command's output.
    pub log_dir: Option<PathBuf>,
}

impl LabOutput {
    /// Returns `self` when the command exited 0, else a [`LabError::CommandFailed`].
    pub fn success(self, what: &str) -> Result<Self, LabError> {
        if self.status == 0 {
            Ok(self)
        } else {
            Err(LabError::CommandFailed {
                what: what.to_string(),
                status: self.status,
                stdout_tail: tail(&self.stdout, 60),
                stderr_tail: tail(&self.stderr, 60),
                log_dir: self.log_dir,
            })
        }
    }
}

/// Why a lab run did not give a usable result.
#[derive(Debug)]
pub enum LabError {
    /// A lab script could not be started.
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A preparation script failed.
    Script {
        /// The program.
        program: PathBuf,
        /// Its exit status, if it exited.
        status: Option<i32>,
        /// Its stderr.
        stderr: String,
    },
    /// The lab itself failed: QEMU did not start, L1 had no `/dev/kvm`, L1 panicked,
    /// died or reset without the exit marker, or the run timed out.
    LabFailure {
        /// The runner's `LAB FAILURE:` reason.
        reason: String,
        /// The runner's stderr from the reason on: the console tail, QEMU's output.
        details: String,
        /// Where the logs are.
        log_dir: Option<PathBuf>,
    },
    /// The command ran to completion and failed.
    CommandFailed {
        /// What the command was for.
        what: String,
        /// Its exit status.
        status: i32,
        /// The end of its stdout.
        stdout_tail: String,
        /// The end of its stderr.
        stderr_tail: String,
        /// Where the logs are.
        log_dir: Option<PathBuf>,
    },
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Spawn { program, source } => {
                write!(f, "cannot run {}: {source}", program.display())
            }
            LabError::Script {
                program,
                status,
                stderr,
            } => write!(
                f,
                "{} failed (status {status:?}):\n{}",
                program.display(),
                tail(stderr, 40)
            ),
            LabError::LabFailure {
                reason,
                details,
                log_dir,
            } => write!(
                f,
                "LAB FAILURE (not a test result): {reason}\nlogs: {}\n{details}",
                display_opt(log_dir)
            ),
            LabError::CommandFailed {
                what,
                status,
                stdout_tail,
                stderr_tail,
                log_dir,
            } => write!(
                f,
                "{what}: command exited with status {status}\nlogs: {}\n--- stdout (tail) ---\n{stdout_tail}\n--- stderr (tail) ---\n{stderr_tail}",
                display_opt(log_dir)
            ),
        }
    }
}

impl std::error::Error for LabError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LabError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn display_opt(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A command to run with real KVM through `scripts/lab/run`.
#[derive(Debug, Clone)]
pub struct LabCommand {
    args: Vec<OsString>,
    files: Vec<(PathBuf, Option<PathBuf>)>,
    envs: Vec<(String, String)>,
    timeout: Duration,
    retries: u32,
}

impl LabCommand {
    /// A command line: the program, then its arguments.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        LabCommand {
            args: args.into_iter().map(Into::into).collect(),
            files: Vec::new(),
            envs: Vec::new(),
            timeout: Duration::from_secs(300),
            retries: 2,
        }
    }

    /// Copies a host file or directory into L1 at the same path (a dynamic ELF brings its
    /// shared libraries).
    pub fn file(mut self, host: impl Into<PathBuf>) -> Self {
        self.files.push((host.into(), None));
        self
    }

    /// Copies a host file or directory into L1 at `guest`.
    pub fn file_at(mut self, host: impl Into<PathBuf>, guest: impl Into<PathBuf>) -> Self {
        self.files.push((host.into(), Some(guest.into())));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((name.into(), value.into()));
        self
    }

    /// Limits the whole run (L1 boot included), each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times the command runs again after L1 itself crashed (default 2). With L1 on
    /// one CPU (since 2026-12-04) the lab no longer panics under load, but it still wedges
    /// now and then (twice in about 2.5 hours of L1 time, each ended by the heartbeat rule
    /// within a minute); four retries were for the two-CPU lab, which lost L1 about once a
    /// minute of load on a bad day.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Runs it. A lab failure is an `Err`; a command that ran and exited non-zero is an
    /// `Ok` with that status (see [`LabOutput::success`]).
    ///
    /// When L1 itself crashed (its kernel panicked, it reset, died without the exit marker
    /// or wedged) the command runs again, up to [`LabCommand::retries`] times:
    /// `scripts/lab/run --retries`, which alone
    /// decides what an L1 crash is, says so on stderr and appends the line to the file
    /// `PV_LAB_RETRY_LOG` names (scripts/test prints those lines loudly at the end). Those
    /// crashes are the emulated host's, not a result of the command: in the lab L1's KVM
    /// runs on QEMU's TCG emulation of SVM, and its kernel has panicked in vCPU threads of
    /// both pv-vmm and QEMU. The crash after the last retry is the error.
    ///
    /// With `PV_LAB_REPLAY=<log directory of an earlier run>` nothing runs: the saved
    /// `stdout.log` and `stderr.log` of that run are returned, so a test's checks can be
    /// re-run on a recorded lab run while the test is being written.
    pub fn run(&self) -> Result<LabOutput, LabError> {
        if let Some(dir) = std::env::var_os("PV_LAB_REPLAY") {
            return replay(Path::new(&dir));
        }
        // One lab run at a time per process: parallel tests would otherwise build images
        // while another L1 runs and slow it down (scripts/lab/run also holds a lock
        // across processes).
        let _one_at_a_time = LAB_LOCK.lock().unwrap_or_else(|poison| poison.into_inner());
        let runner = script("lab/run");
        let mut cmd = Command::new(&runner);
        cmd.arg("--quiet")
            .arg("--retries")
            .arg(self.retries.to_string())
            .arg("--timeout")
            .arg(self.timeout.as_secs().max(1).to_string());
        for (host, guest) in &self.files {
            let mut spec = OsString::from(host.as_os_str());
            if let Some(guest) = guest {
                spec.push(":");
                spec.push(guest.as_os_str());
            }
            cmd.arg("--file").arg(spec);
        }
        for (name, value) in &self.envs {
            cmd.arg("--env").arg(format!("{name}={value}"));
        }
        cmd.arg("--").args(&self.args);
        let out = cmd.output().map_err(|source| LabError::Spawn {
            program: runner.clone(),
            source,
        })?;
        runner_result(
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// What one `scripts/lab/run` call gave: its status, stdout and stderr. When the runner ran
/// the command again after an L1 crash, only what follows its last `LAB RETRY:` line counts
/// (the log directory, a lab failure): an earlier attempt's failure is not this run's.
fn runner_result(
    exit: std::process::ExitStatus,
    stdout: String,
    stderr: String,
) -> Result<LabOutput, LabError> {
    let last_attempt = stderr
        .rfind("LAB RETRY: ")
        .map_or(&stderr[..], |p| &stderr[p..]);
    let log_dir = last_attempt.lines().find_map(|l| {
        l.strip_prefix("lab: L1 boot (logs: ")
            .and_then(|rest| rest.strip_suffix(')'))
            .map(PathBuf::from)
    });
    let mode = if stderr.lines().any(|l| l.starts_with("lab: direct mode")) {
        LabMode::Direct
    } else {
        LabMode::Lab
    };
    let status = exit.code().unwrap_or(-1);
    if let Some(pos) = last_attempt.find("LAB FAILURE: ") {
        let rest = &last_attempt[pos + "LAB FAILURE: ".len()..];
        let (reason, details) = rest.split_once('\n').unwrap_or((rest, ""));
        return Err(LabError::LabFailure {
            reason: reason.to_string(),
            details: details.to_string(),
            log_dir,
        });
    }
    if status == LAB_FAILURE_STATUS || exit.code().is_none() {
        return Err(LabError::LabFailure {
            reason: format!("scripts/lab/run ended with {exit} without a reason"),
            details: tail(&stderr, 40),
            log_dir,
        });
    }
    Ok(LabOutput {
        status,
        timing: LabTiming::parse(last_attempt),
        stdout,
        stderr,
        mode,
        log_dir,
    })
}

/// Prints a retry on stderr and appends it to `PV_LAB_RETRY_LOG`, when set (scripts/test
/// prints those lines loudly at the end of the run).
pub fn report_retry(line: &str) {
    eprintln!("{line}");
    let Some(path) = std::env::var_os("PV_LAB_RETRY_LOG") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("PV_LAB_RETRY_LOG {}: {e}", Path::new(&path).display());
    }
}

/// Reports, loudly, the cases a lab case script ran again because the lab lost their guest
/// (it never came up, or it triple-faulted and the case failed; `@@RETRY <name> <error>@@`
/// lines, see `retry_lab_fault` in `integration-tests/lab-cases/common.sh`): printed, and
/// appended to `PV_LAB_RETRY_LOG` like an L1 retry.
pub fn report_case_retries(stdout: &str) {
    let retries = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("@@RETRY ")?.strip_suffix("@@"));
    for retry in retries {
        report_retry(&format!(
            "RETRIED (the lab lost the guest: it faulted, reset or stalled; the case ran again): {retry}"
        ));
    }
}

/// A recorded lab run (see [`LabCommand::run`]).
fn replay(dir: &Path) -> Result<LabOutput, LabError> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| LabError::LabFailure {
            reason: format!("PV_LAB_REPLAY: reading {}: {e}", dir.join(name).display()),
            details: String::new(),
            log_dir: Some(dir.to_path_buf()),
        })
    };
    eprintln!(
        "PV_LAB_REPLAY: checking the recorded run {} (no L1 runs)",
        dir.display()
    );
    // Older runs kept no stderr.log.
    let stderr = read("stderr.log").unwrap_or_default();
    Ok(LabOutput {
        status: 0,
        timing: LabTiming::parse(&stderr),
        stdout: read("stdout.log")?,
        stderr,
        mode: LabMode::Lab,
        log_dir: Some(dir.to_path_buf()),
    })
}

/// Builds `pv-vmm` and `pv-remote` (debug) with the cargo running the test and returns
/// their paths, in that order.
pub fn vmm_binaries() -> (PathBuf, PathBuf) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "vmm", "--bins"])
        .current_dir(repo_root())
        .status()
        .expect("running cargo build -p vmm");
    assert!(status.success(), "cargo build -p vmm failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let vmm = target.join("debug/pv-vmm");
    let remote = target.join("debug/pv-remote");
    assert!(
        vmm.is_file() && remote.is_file(),
        "{} or {} missing after the build",
        vmm.display(),
        remote.display()
    );
    (vmm, remote)
}

/// The value of a lab step, or a test failure with the error's full text (reason, console
/// tail, log directory).
pub fn ok<T>(r: Result<T, LabError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The guest (L2) kernel and initramfs, prepared by the repository's scripts.
#[derive(Debug, Clone)]
pub struct GuestAssets {
    /// The Debian cloud kernel's bzImage (the same kernel L1 runs).
    pub kernel: PathBuf,
    /// The small busybox initramfs of `scripts/build-guest-initramfs`.
    pub initramfs: PathBuf,
}

impl GuestAssets {
    /// Installs the lab's host tools when missing (`scripts/lab/install-qemu`), fetches
    /// the kernel (cached) and builds the default guest initramfs (cached).
    pub fn prepare() -> Result<Self, LabError> {
        run_script(&script("lab/install-qemu"), &[])?;
        let kernel_info = run_script(&script("lab/fetch-kernel"), &[])?;
        let kernel = kernel_info
            .lines()
            .find_map(|l| l.strip_prefix("BZIMAGE="))
            .map(PathBuf::from)
            .ok_or_else(|| LabError::Script {
                program: script("lab/fetch-kernel"),
                status: Some(0),
                stderr: format!("no BZIMAGE= line in its output:\n{kernel_info}"),
            })?;
        let initramfs = PathBuf::from(run_script(&script("build-guest-initramfs"), &[])?.trim());
        Ok(GuestAssets { kernel, initramfs })
    }
}

/// Runs a preparation script and returns its stdout; a failure carries its status and
/// stderr.
pub fn run_script(program: &Path, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Script {
            program: program.to_path_buf(),
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Parsing what `integration-tests/lab-cases/qemu-peer.sh` prints.
pub mod peer {
    use super::*;

    /// One guest boot under a peer VMM.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct CaseResult {
        /// The case's label.
        pub name: String,
        /// The `-cpu` argument it ran with.
        pub cpu: String,
        /// The guest's console, one entry per line.
        pub guest_log: Vec<String>,
        /// What the VMM itself logged (pv-vmm's stderr), one entry per line.
        pub vmm_log: Vec<String>,
        /// Seconds from the VMM's start to the guest's `@@GUEST-DONE@@`.
        pub boot_s: Option<f64>,
        /// The VM's KVM statistics (debugfs), by name.
        pub stats: BTreeMap<String, u64>,
        /// API answers by step: (pv-remote's exit status, its one-line answer), from
        /// `@@API <case> <step> <status> <answer>@@` lines.
        pub api: BTreeMap<String, (i32, String)>,
        /// `None` while unfinished; `Some(Ok(()))` or `Some(Err(reason))`.
        pub end: Option<Result<(), String>>,
        /// `@@REC <case> <kind> <label> <payload>@@` lines, in order.
        pub records: Vec<Record>,
    }

    /// A record a case script printed about a case: what, at which point, and the payload
    /// (often one line of JSON from the VMM's API).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Record {
        /// What it is (`info`, `counters`, ...).
        pub kind: String,
        /// When or for what it was taken (`ipi-before`, `-`, ...).
        pub label: String,
        /// The rest of the line.
        pub payload: String,
    }

    /// What in a Linux guest's own log fails a lab case whatever else it checks: the kernel
    /// caught a faulting MSR access (a PV MSR it was offered but KVM refused), warned, or hit
    /// a bug.
    pub const GUEST_LOG_FAULTS: [&str; 3] = ["unchecked MSR access error", "WARNING:", "BUG:"];

    /// The lines of a guest log that hold one of [`GUEST_LOG_FAULTS`].
    pub fn guest_log_faults(log: &[String]) -> Vec<&str> {
        log.iter()
            .map(String::as_str)
            .filter(|l| GUEST_LOG_FAULTS.iter().any(|f| l.contains(f)))
            .collect()
    }

    /// Panics naming every case whose Linux guest logged one of [`GUEST_LOG_FAULTS`], with
    /// the lines; prints how many guest logs it read.
    pub fn assert_guest_logs_clean(cases: &[CaseResult]) {
        let bad: Vec<String> = cases
            .iter()
            .filter_map(|c| {
                let lines = guest_log_faults(&c.guest_log);
                (!lines.is_empty()).then(|| format!("case {}:\n  {}", c.name, lines.join("\n  ")))
            })
            .collect();
        println!(
            "guest logs: {} case(s) read, {} with an MSR fault, WARNING or BUG",
            cases.len(),
            bad.len()
        );
        assert!(
            bad.is_empty(),
            "the guest's own log shows a fault:\n{}",
            bad.join("\n")
        );
    }

    impl CaseResult {
        /// The guest's lines about the PV features: the text after `kvm-guest: ` or
        /// `kvm-clock: `.
        pub fn pv_guest_lines(&self) -> BTreeSet<String> {
            self.guest_log
                .iter()
                .filter_map(|l| {
                    l.split_once("kvm-guest: ")
                        .or_else(|| l.split_once("kvm-clock: "))
                        .map(|(_, rest)| rest.trim().to_owned())
                })
                .collect()
        }

        /// Everything about the case, for a failure message: its records (shortened),
        /// the guest's console and the VMM's log.
        pub fn dump(&self) -> String {
            let records: String = self
                .records
                .iter()
                .map(|r| {
                    let short: String = r.payload.chars().take(400).collect();
                    format!("{} {}: {short}\n", r.kind, r.label)
                })
                .collect();
            format!(
                "case {} (--cpus {}), end {:?}\nrecords:\n{records}guest:\n{}\nVMM:\n{}",
                self.name,
                self.cpu,
                self.end,
                self.guest_log.join("\n"),
                self.vmm_log.join("\n")
            )
        }

        /// The text after `kvm-guest: ` of every such guest line.
        pub fn kvm_guest_lines(&self) -> Vec<&str> {
            self.guest_log
                .iter()
                .filter_map(|l| l.split_once("kvm-guest: ").map(|(_, rest)| rest.trim()))
                .collect()
        }

        /// Which of [`PV_GUEST_LINES`] the guest printed.
        pub fn pv_lines_present(&self) -> Vec<&'static str> {
            let lines = self.kvm_guest_lines();
            PV_GUEST_LINES
                .iter()
                .copied()
                .filter(|want| lines.iter().any(|l| l == want))
                .collect()
        }

        /// A statistic, 0 when absent.
        pub fn stat(&self, name: &str) -> u64 {
            self.stats.get(name).copied().unwrap_or(0)
        }

        /// The JSON answer of API step `step`, if it succeeded (status 0) and parses.
        pub fn api_json(&self, step: &str) -> Option<serde_json::Value> {
            self.api
                .get(step)
                .filter(|(rc, _)| *rc == 0)
                .and_then(|(_, text)| serde_json::from_str(text).ok())
        }

        /// The inside of the first guest line `@@<prefix>...@@` (e.g. `CPUID-KVM `).
        pub fn guest_marker(&self, prefix: &str) -> Option<&str> {
            self.guest_markers(prefix).into_iter().next()
        }

        /// The insides of every guest line `@@<prefix>...@@`, in order.
        pub fn guest_markers(&self, prefix: &str) -> Vec<&str> {
            let prefix = format!("@@{prefix}");
            self.guest_log
                .iter()
                .filter_map(|l| marker(l, &prefix))
                .collect()
        }

        /// The KVM leaves the guest's CPUID dump (`/bin/cpuid-kvm`) found: base, features,
        /// hints; `Ok(None)` when the guest found no KVM signature, `Err` when the log holds
        /// no dump or a malformed one.
        pub fn guest_kvm_cpuid(
            &self,
        ) -> Result<
            Option<(
                u32,
                pv_features::cpuid::KvmFeatures,
                pv_features::cpuid::KvmHints,
            )>,
            String,
        > {
            let text = self
                .guest_marker("CPUID-KVM ")
                .ok_or_else(|| format!("case {}: no CPUID dump in the guest log", self.name))?;
            if text == "none" {
                return Ok(None);
            }
            let field = |key: &str| {
                text.split(' ')
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                    .ok_or_else(|| {
                        format!("case {}: no {key} in the CPUID dump `{text}`", self.name)
                    })
            };
            Ok(Some((
                field("base=")?,
                pv_features::cpuid::KvmFeatures::from_bits_retain(field("features=")?),
                pv_features::cpuid::KvmHints::from_bits_retain(field("hints=")?),
            )))
        }

        /// The payload of the first record of this kind and label.
        pub fn record(&self, kind: &str, label: &str) -> Option<&str> {
            self.records
                .iter()
                .find(|r| r.kind == kind && r.label == label)
                .map(|r| r.payload.as_str())
        }
    }

    /// The lines a Linux 6.1 guest prints about these features (arch/x86/kernel/kvm.c,
    /// kvmclock.c), with `vcpus` CPUs: the text after `kvm-guest: ` or `kvm-clock: `, as
    /// [`CaseResult::pv_guest_lines`] collects them.
    pub fn expected_pv_lines(
        leaves: bool,
        f: pv_features::cpuid::KvmFeatures,
        h: pv_features::cpuid::KvmHints,
        vcpus: u32,
    ) -> BTreeSet<String> {
        use pv_features::cpuid::{KvmFeatures, KvmHints};
        let mut lines = BTreeSet::new();
        if !leaves {
            return lines;
        }
        let smp = vcpus > 1;
        let rt = h.contains(KvmHints::REALTIME);
        let steal = f.contains(KvmFeatures::STEAL_TIME);
        let mut add = |cond: bool, line: &str| {
            if cond {
                lines.insert(line.to_owned());
            }
        };
        add(f.contains(KvmFeatures::PV_SEND_IPI) && smp, "setup PV IPIs");
        add(
            f.contains(KvmFeatures::PV_TLB_FLUSH) && steal && !rt && smp,
            "KVM setup pv remote TLB flush",
        );
        add(
            f.contains(KvmFeatures::PV_SCHED_YIELD) && steal && !rt && smp,
            "setup PV sched yield",
        );
        // kvm_spinlock_init: the realtime hint is tested first, then host support, then SMP.
        let spin = if rt {
            "PV spinlocks disabled with KVM_HINTS_REALTIME hints"
        } else if !f.contains(KvmFeatures::PV_UNHALT) {
            "PV spinlocks disabled, no host support"
        } else if !smp {
            "PV spinlocks disabled, single CPU"
        } else {
            "PV spinlocks enabled"
        };
        add(true, spin);
        if f.contains(KvmFeatures::CLOCKSOURCE2) {
            add(true, "Using msrs 4b564d01 and 4b564d00");
        } else if f.contains(KvmFeatures::CLOCKSOURCE) {
            add(true, "Using msrs 12 and 11");
        }
        lines
    }

    /// The strings of a JSON array that `parse` takes (an absent field or another value:
    /// none).
    pub fn json_names<T>(v: &serde_json::Value, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().and_then(&parse))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An `EffectivePv` as vm.info reports it (pv-vmm's `pv.effective`, the patched Cloud
    /// Hypervisor's `kvm_pv.effective`): KVM leaves present, features, hints.
    pub fn effective_state(
        eff: &serde_json::Value,
    ) -> (
        bool,
        pv_features::cpuid::KvmFeatures,
        pv_features::cpuid::KvmHints,
    ) {
        use pv_features::cpuid::{KvmFeatures, KvmHints};
        let features = json_names(&eff["features"], |n| KvmFeatures::by_name(n).ok())
            .into_iter()
            .fold(KvmFeatures::empty(), |a, f| a | f);
        let hints = json_names(&eff["hints"], |n| KvmHints::by_name(n).ok())
            .into_iter()
            .fold(KvmHints::empty(), |a, h| a | h);
        (eff["leaves"].as_bool().unwrap_or(false), features, hints)
    }

    /// Parses the case script's output into its cases, in order.
    pub fn parse_cases(stdout: &str) -> Vec<CaseResult> {
        let mut cases: Vec<CaseResult> = Vec::new();
        for line in stdout.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(rest) = marker(line, "@@CASE ") {
                let mut words = rest.splitn(3, ' ');
                let name = words.next().unwrap_or_default().to_string();
                let kind = words.next().unwrap_or_default();
                let arg = words.next().unwrap_or_default();
                if kind == "BEGIN" {
                    cases.push(CaseResult {
                        name,
                        cpu: arg.to_string(),
                        ..CaseResult::default()
                    });
                    continue;
                }
                let Some(case) = cases.iter_mut().rev().find(|c| c.name == name) else {
                    continue;
                };
                match kind {
                    "BOOT" => case.boot_s = arg.parse().ok(),
                    "END" if arg == "ok" => case.end = Some(Ok(())),
                    "END" => {
                        case.end = Some(Err(arg.trim_start_matches("fail ").to_string()));
                    }
                    _ => {}
                }
            } else if let Some(rest) = marker(line, "@@STAT ") {
                let mut words = rest.split(' ');
                if let (Some(name), Some(stat), Some(value)) =
                    (words.next(), words.next(), words.next())
                {
                    if let (Some(case), Ok(v)) = (
                        cases.iter_mut().rev().find(|c| c.name == name),
                        value.parse::<u64>(),
                    ) {
                        case.stats.insert(stat.to_string(), v);
                    }
                }
            } else if let Some(rest) = marker(line, "@@REC ") {
                let mut words = rest.splitn(4, ' ');
                let (name, kind, label) = (words.next(), words.next(), words.next());
                if let (Some(name), Some(kind), Some(label)) = (name, kind, label) {
                    if let Some(case) = cases.iter_mut().rev().find(|c| c.name == name) {
                        case.records.push(Record {
                            kind: kind.to_string(),
                            label: label.to_string(),
                            payload: words.next().unwrap_or_default().to_string(),
                        });
                    }
                }
            } else if let Some(rest) = marker(line, "@@API ") {
                let mut words = rest.splitn(4, ' ');
                let (name, step) = (words.next().unwrap_or_default(), words.next());
                let rc = words.next().and_then(|w| w.parse().ok()).unwrap_or(-1);
                let text = words.next().unwrap_or_default().to_string();
                if let (Some(case), Some(step)) =
                    (cases.iter_mut().rev().find(|c| c.name == name), step)
                {
                    case.api.insert(step.to_string(), (rc, text));
                }
            } else if let Some(rest) = line.strip_prefix("L2| ") {
                if let Some(case) = cases.last_mut() {
                    case.guest_log.push(rest.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("VMM| ") {
                if let Some(case) = cases.last_mut() {
                    case.vmm_log.push(rest.to_string());
                }
            }
        }
        cases
    }

    /// The inside of `@@<prefix>...@@`.
    fn marker<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
        line.trim()
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("@@"))
    }
}

#[cfg(test)]
mod tests {
    use super::peer::parse_cases;
    use super::*;

    #[test]
    fn guest_log_faults_are_found() {
        let log: Vec<String> = [
            "[    0.1] kvm-guest: setup PV IPIs",
            "[    0.2] unchecked MSR access error: WRMSR to 0x4b564d02 (tried to write 0x000000000f6330c9)",
            "[    0.3] WARNING: CPU: 0 PID: 1 at arch/x86/kernel/kvm.c:100",
            "[    0.4] BUG: kernel NULL pointer dereference",
            "[    0.5] a warning: in lower case is not the kernel's",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(peer::guest_log_faults(&log).len(), 3);
        assert!(peer::guest_log_faults(&log[..1]).is_empty());
        let clean = peer::CaseResult {
            name: "ok".into(),
            guest_log: log[..1].to_vec(),
            ..Default::default()
        };
        peer::assert_guest_logs_clean(std::slice::from_ref(&clean));
        let dirty = peer::CaseResult {
            name: "msr".into(),
            guest_log: log[1..2].to_vec(),
            ..Default::default()
        };
        let err = std::panic::catch_unwind(|| peer::assert_guest_logs_clean(&[clean, dirty]))
            .expect_err("a fault fails");
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            text.contains("case msr") && text.contains("0x4b564d02"),
            "{text}"
        );
    }

    #[test]
    fn after_a_retry_only_the_last_attempt_counts() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::ExitStatus;
        let retried = "lab: L1 boot (logs: /logs/a)\n\
            LAB FAILURE: L1 crashed: kernel panic: x\n\
            --- last 40 lines of L1 console (/logs/a/console.log) ---\n\
            !!! LAB RETRY: sh case.sh (L1 crashed: kernel panic: x; logs: /logs/a): attempt 2 of 2\n\
            lab: L1 boot (logs: /logs/b)\n\
            lab: image 0.05s, L1 boot to kvm ready 3.08s, command 0.02s, total 3.25s\n";
        let out = runner_result(ExitStatus::from_raw(0), "ok\n".into(), retried.into())
            .expect("the retry succeeded");
        assert_eq!(out.log_dir, Some(PathBuf::from("/logs/b")));
        assert_eq!(out.stdout, "ok\n");
        let twice = format!("{retried}LAB FAILURE: L1 crashed: wedged: RCU stall\n");
        match runner_result(ExitStatus::from_raw(125 << 8), String::new(), twice) {
            Err(LabError::LabFailure {
                reason, log_dir, ..
            }) => {
                assert_eq!(reason, "L1 crashed: wedged: RCU stall");
                assert_eq!(log_dir, Some(PathBuf::from("/logs/b")));
            }
            other => panic!("{other:?}"),
        }
        let silent = runner_result(ExitStatus::from_raw(125 << 8), String::new(), String::new());
        assert!(
            matches!(&silent, Err(LabError::LabFailure { reason, .. }) if reason.contains("without a reason")),
            "{silent:?}"
        );
    }

    #[test]
    fn timing_line_parses() {
        let stderr = "lab: L1 boot (logs: /x)\nerr\nlab: image 0.05s, L1 boot to kvm ready 3.08s, command 0.02s, total 3.25s\n";
        let t = LabTiming::parse(stderr).expect("timing line");
        assert_eq!(t.image_s, 0.05);
        assert_eq!(t.l1_boot_s, Some(3.08));
        assert_eq!(t.command_s, Some(0.02));
        assert_eq!(t.total_s, 3.25);
        assert!(LabTiming::parse("nothing here").is_none());
    }

    #[test]
    fn timing_line_without_command_parses() {
        let t = LabTiming::parse("lab: image 1.14s, L1 boot to kvm ready 3.53s, total 9.20s")
            .expect("timing line");
        assert_eq!(t.command_s, None);
        assert_eq!(t.total_s, 9.2);
    }

    #[test]
    fn cases_parse() {
        let out = "\
@@CASE on BEGIN host@@
L2| [    0.101011] kvm-guest: KVM setup pv remote TLB flush
L2| [    0.101244] kvm-guest: setup PV sched yield
L2| [    0.133895] kvm-guest: PV spinlocks enabled\r
L2| [    0.403577] kvm-guest: setup PV IPIs
@@CASE on BOOT 5.56@@
@@CASE on END ok@@
@@CASE off BEGIN host,kvm-pv-ipi=off@@
L2| [    0.144668] kvm-guest: PV spinlocks disabled, no host support
@@CASE off BOOT 10.90@@
@@CASE off END fail guest not done after 120s@@
@@STAT on hypercalls 47@@
@@STAT on exits 18219@@
@@STAT off hypercalls 0@@
@@STAT off bogus x@@
@@API on counters 0 {\"vmm_exits\":{\"io\":3}}@@
@@API on shutdown 1 the server answered 409: no VM@@
@@API nobody ping 0 {}@@
";
        let cases = parse_cases(out);
        assert_eq!(cases.len(), 2);
        let on = &cases[0];
        assert_eq!(on.cpu, "host");
        assert_eq!(on.pv_lines_present().len(), 4);
        assert_eq!(on.boot_s, Some(5.56));
        assert_eq!(on.end, Some(Ok(())));
        assert_eq!(on.stat("hypercalls"), 47);
        assert_eq!(on.stat("exits"), 18219);
        let off = &cases[1];
        assert_eq!(off.cpu, "host,kvm-pv-ipi=off");
        assert!(off.pv_lines_present().is_empty());
        assert_eq!(
            off.kvm_guest_lines(),
            vec!["PV spinlocks disabled, no host support"]
        );
        assert_eq!(off.end, Some(Err("guest not done after 120s".to_string())));
        assert_eq!(off.stat("hypercalls"), 0);
        assert!(!off.stats.contains_key("bogus"));
        assert_eq!(on.api_json("counters").expect("json")["vmm_exits"]["io"], 3);
        assert_eq!(
            on.api.get("shutdown"),
            Some(&(1, "the server answered 409: no VM".to_string()))
        );
        assert!(
            on.api_json("shutdown").is_none(),
            "failed steps give no JSON"
        );
        assert!(off.api.is_empty());
    }

    #[test]
    fn records_and_guest_markers_parse() {
        let out = "\
@@CASE a BEGIN boot=2@@
@@REC a info - {\"state\": \"Running\"}@@
@@REC a counters ipi-before {}@@
@@REC nobody counters x {}@@
@@REC a short@@
L2| @@GSTAT ipi before cpu 1 2@@
L2| ~ # echo @@''GSTAT ipi after $(grep '^cpu ' /proc/stat)@@
L2| @@GSTAT ipi after cpu 3 4@@
@@CASE a END ok@@
";
        let cases = parse_cases(out);
        assert_eq!(cases.len(), 1);
        let a = &cases[0];
        assert_eq!(a.records.len(), 2, "{:?}", a.records);
        assert_eq!(a.record("info", "-"), Some("{\"state\": \"Running\"}"));
        assert_eq!(a.record("counters", "ipi-before"), Some("{}"));
        assert_eq!(a.record("counters", "ipi-after"), None);
        assert!(a.guest_kvm_cpuid().is_err(), "no dump in this log");
        assert_eq!(
            a.guest_markers("GSTAT ipi "),
            vec!["before cpu 1 2", "after cpu 3 4"]
        );
    }

    #[test]
    fn guest_cpuid_dump_parses() {
        use pv_features::cpuid::{KvmFeatures, KvmHints};
        let case = |line: &str| peer::CaseResult {
            name: "x".into(),
            guest_log: vec![line.to_string()],
            ..Default::default()
        };
        let c = case(
            "@@CPUID-KVM base=0x40000100 max=0x40000001 features=0x01007efb hints=0x00000001@@",
        );
        assert_eq!(
            c.guest_kvm_cpuid(),
            Ok(Some((
                0x4000_0100,
                KvmFeatures::from_bits_retain(0x0100_7efb),
                KvmHints::REALTIME
            )))
        );
        assert_eq!(case("@@CPUID-KVM none@@").guest_kvm_cpuid(), Ok(None));
        assert!(case("@@CPUID-KVM base=0x40000000 features=zz@@")
            .guest_kvm_cpuid()
            .is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    /// `retry_lab_fault` (lab-cases/common.sh) on a case whose first run prints `first`
    /// and whose second prints `@@CASE c END ok@@`: what it printed, and how many runs.
    fn retry_lab_fault_on(first: &str) -> (String, usize) {
        let dir = std::env::temp_dir().join(format!("retry-lab-fault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("first"), first).expect("write");
        let common = repo_root().join("integration-tests/lab-cases/common.sh");
        let script = format!(
            ". '{}'\n\
             case_c() {{ echo run >>'{d}/runs'; \
             if [ \"$(wc -l <'{d}/runs')\" -eq 1 ]; then cat '{d}/first'; \
             else echo \"@@CASE $1 END ok@@\"; fi; }}\n\
             retry_lab_fault case_c c\n",
            common.display(),
            d = dir.display()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}");
        let runs = std::fs::read_to_string(dir.join("runs"))
            .expect("runs")
            .lines()
            .count();
        let _ = std::fs::remove_dir_all(&dir);
        (String::from_utf8_lossy(&out.stdout).into_owned(), runs)
    }

    #[test]
    fn retry_lab_fault_reruns_only_what_the_lab_took() {
        let fault = "VMM| pv-vmm: error: vCPU 1: the guest triple-faulted (KVM_EXIT_SHUTDOWN)";
        let up = "L2| @@GUEST-UP 2.10@@";
        let reset = "@@CASE c END fail the guest reset before it was up (its VM stopped)@@";
        // (first run's output, run again?, the reason on the @@RETRY line)
        let cases = [
            (
                format!("{fault}\n@@CASE c END fail x@@"),
                true,
                "triple-faulted",
            ),
            (
                format!("{fault}\n@@CASE c END ok@@"),
                true,
                "triple-faulted",
            ),
            (
                "@@CASE c END fail no '@@GUEST-UP' after 150 s@@".to_owned(),
                true,
                "END fail",
            ),
            (reset.to_owned(), true, "reset before it was up"),
            (
                format!("{up}\n{fault}\n@@CASE c END fail y@@"),
                true,
                "triple-faulted",
            ),
            (
                format!("{up}\n@@CASE c END fail the guest reset after it was up (stopped)@@"),
                true,
                "reset after it was up",
            ),
            (
                format!(
                    "{up}\nL2| [   28.54] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
                     @@CASE c END fail pv-vmm still running after 150s@@"
                ),
                true,
                "detected stalls",
            ),
            // A guest that was up and then faulted as its case expects (the case passed),
            // a stall in a case that passed, a failure with no fault, a refused start:
            // results.
            (
                format!(
                    "{up}\nL2| rcu: INFO: rcu_sched detected stalls on CPUs\n@@CASE c END ok@@"
                ),
                false,
                "",
            ),
            (format!("{up}\n{fault}\n@@CASE c END ok@@"), false, ""),
            (format!("{up}\n@@CASE c END fail z@@"), false, ""),
            ("@@CASE c END ok@@".to_owned(), false, ""),
        ];
        for (first, again, why) in cases {
            let (out, runs) = retry_lab_fault_on(&first);
            assert_eq!(runs, if again { 2 } else { 1 }, "{first}\n{out}");
            let retry = out.lines().find(|l| l.starts_with("@@RETRY c "));
            assert_eq!(retry.is_some(), again, "{first}\n{out}");
            if let Some(line) = retry {
                assert!(line.contains(why) && line.ends_with("@@"), "{line}");
                assert_eq!(line.matches("@@").count(), 2, "{line}");
                // The second run's output replaces the first's.
                assert!(out.ends_with("@@CASE c END ok@@\n"), "{out}");
                assert!(!out.contains(&first), "{out}");
            } else {
                assert_eq!(out.trim_end(), first, "{out}");
            }
        }
    }

    /// Writes the shell script `body` as the executable `dir/name` (a stand-in for a VMM, a
    /// client or a console helper in the tests of the lab scripts).
    fn stand_in(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write");
        Command::new("chmod")
            .arg("+x")
            .arg(&path)
            .status()
            .expect("chmod");
        path
    }

    /// feature-cases.sh with `UNIX_CONSOLE` against a stand-in VMM that binds its serial
    /// socket as Cloud Hypervisor does (an existing path is "Address already in use") and
    /// whose first guest triple-faults: the retry must start from a bare case directory.
    /// On 2026-12-04 CI lost lab_ch's `ipi_off` this way (the retry met the first attempt's
    /// socket).
    #[test]
    fn a_retried_case_starts_without_the_last_attempts_serial_socket() {
        assert!(
            std::path::Path::new("/dev/kvm").exists(),
            "feature-cases.sh refuses to run without /dev/kvm (it checks for it first)"
        );
        let dir = std::env::temp_dir().join(format!("retry-socket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write_script = |name: &str, body: &str| stand_in(&dir, name, body);
        // The VMM: binds socket=PATH (a plain file here); the first run's guest faults, the
        // second's shell comes up and the VMM stays until the console helper saw 'exit'.
        let vmm = write_script(
            "vmm",
            &format!(
                "for a; do case $a in socket=*) s=${{a#socket=}};; esac; done\n\
                 [ -e \"$s\" ] && {{ echo 'Address already in use (os error 98)' >&2; exit 1; }}\n\
                 echo run >>'{d}/runs'\n\
                 if [ \"$(wc -l <'{d}/runs')\" -eq 1 ]; then : >\"$s\"; \
                 echo 'ERROR: Guest likely triple-faulted' >&2; exit 1; fi\n\
                 echo 'pv.shell: a shell' >\"$s\"\n\
                 while [ ! -e \"$s.done\" ]; do sleep 0.1; done\n",
                d = dir.display()
            ),
        );
        let console = write_script(
            "console",
            "while [ ! -s \"$1\" ]; do sleep 0.1; done; cat \"$1\"\n\
             while read -r l; do [ \"$l\" = exit ] && break; done; : >\"$1.done\"\n",
        );
        let remote = write_script("remote", "echo '{}'\n");
        let out = Command::new("sh")
            .arg(repo_root().join("integration-tests/lab-cases/feature-cases.sh"))
            .args([&vmm, &remote, &dir.join("kernel"), &dir.join("initrd")])
            .args(["20", "c", "boot=1", "0", "-"])
            .env("UNIX_CONSOLE", &console)
            .env("LAB_CASE_RETRIES", "1")
            .env("TRACEFS", "off")
            .output()
            .expect("sh feature-cases.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("tracefs=no"), "{stdout}");
        assert!(stdout.contains("@@RETRY c "), "{stdout}");
        assert!(stdout.contains("@@CASE c END ok@@"), "{stdout}");
        assert!(!stdout.contains("Address already in use"), "{stdout}");
    }

    /// The benchmark's boot loop against stand-ins: a Cloud Hypervisor whose guest resets
    /// (its event monitor says "rebooting", the VMM stays up: it reboots the guest and
    /// remakes the serial socket) fails its boot at once with that reason, and so does one
    /// whose console helper ended, instead of waiting out the boot limit. On 2026-12-04 CI
    /// lost `bench --quick` that way: `ch-on` "not-ready-for-tlb-after-240s", twice.
    #[test]
    fn a_bench_boot_whose_guest_reset_fails_at_once() {
        assert!(
            std::path::Path::new("/dev/kvm").exists(),
            "workloads-in-l1.sh refuses to run without /dev/kvm (it checks for it first)"
        );
        let dir = std::env::temp_dir().join(format!("bench-reset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write_script = |name: &str, body: &str| stand_in(&dir, name, body);
        for f in ["kernel", "initrd"] {
            std::fs::write(dir.join(f), "").expect("write");
        }
        // pv-vmm and QEMU: end at once (their boots fail as 'exited', as they do when
        // their guest resets). Cloud Hypervisor: named ch-reset it reports a
        // reboot and stays; otherwise it stays and its console helper ends.
        let gone = write_script("gone", "exit 1\n");
        let ch = write_script(
            "ch",
            "[ \"$1\" = --version ] && exit 0\n\
             for a; do case $a in path=*.events) e=${a#path=};; esac; done\n\
             case ${0##*/} in ch-reset) printf '{\\n  \"event\": \"rebooting\"\\n}\\n' >\"$e\";; esac\n\
             exec sleep 600\n",
        );
        let ch_reset = dir.join("ch-reset");
        std::fs::copy(&ch, &ch_reset).expect("copy");
        let console = write_script("console", "exit 1\n");
        let keep = write_script("keep", "exec sleep 600\n");
        let script = repo_root().join("scripts/bench-lib/workloads-in-l1.sh");
        for (vmm, console, reason) in [
            (&ch_reset, &keep, "reason=vm1-reset-before-tlb"),
            (&ch, &console, "reason=vm1-console-ended-before-tlb"),
        ] {
            // The reason is the proof it did not wait: a boot that waited out the limit
            // says "not-ready-for-tlb-after-120s".
            let out = Command::new("sh")
                .arg(&script)
                .args([&gone, &gone, &gone, &gone, &gone])
                .args([&dir.join("kernel"), &dir.join("initrd")])
                .args(["1", "1", "120", "overcommit1=tlb"])
                .env("BENCH_CH", vmm)
                .env("BENCH_CH_REMOTE", &gone)
                .env("BENCH_UNIX_CONSOLE", console)
                .env("BENCH_TRACE", "off")
                .output()
                .expect("sh workloads-in-l1.sh");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            for config in ["pv-vmm-on", "qemu-on", "pv-vmm-off", "qemu-off"] {
                assert!(
                    stdout.contains(&format!(
                        "config={config} result=fail reason=vm1-exited-before-tlb"
                    )),
                    "{config}: {stdout}"
                );
            }
            for config in ["ch-on", "ch-off"] {
                assert!(
                    stdout.contains(&format!(
                        "@@RETRY round=1 scenario=overcommit1 config={config} fail {reason}@@"
                    )),
                    "{config}: {stdout}"
                );
                assert!(
                    stdout.contains(&format!("config={config} result=fail {reason} ")),
                    "{config}: {stdout}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// wait_log in a command substitution (as run_case calls it) sees a VMM that exited
    /// at once as gone, though its parent shell has not reaped it yet.
    #[test]
    fn wait_log_in_a_subshell_sees_its_vmm_exit() {
        let common = repo_root().join("integration-tests/lab-cases/common.sh");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". '{}'; false & pid=$!; r=$(wait_log /dev/null never 1 60 \"$pid\"); \
                 echo \"$? $r\"; running \"$pid\" && echo running; sleep 30 & s=$!; \
                 running \"$s\" && echo sleeper running; kill \"$s\"",
                common.display()
            ))
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "1 pv-vmm exited while waiting for 'never'\nsleeper running\n",
            "{out:?}"
        );
    }

    /// Runs `snippet` in `sh` after sourcing lab-cases/common.sh; its stdout.
    fn with_common_sh(snippet: &str) -> String {
        let common = repo_root().join("integration-tests/lab-cases/common.sh");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(". '{}'; {snippet}", common.display()))
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn fail_on_triple_fault_sets_only_a_missing_result() {
        let dir = std::env::temp_dir().join(format!("triple-fault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = dir.join("err");
        for (stderr, before, after) in [
            (
                "pv-vmm: error: vCPU 0: the guest triple-faulted (KVM_EXIT_SHUTDOWN)",
                "",
                "fail the guest triple-faulted",
            ),
            (
                "pv-vmm: error: vCPU 0: the guest triple-faulted (KVM_EXIT_SHUTDOWN)",
                "fail earlier",
                "fail earlier",
            ),
            ("pv-vmm: guest powered off", "", ""),
        ] {
            std::fs::write(&err, stderr).expect("write");
            let out = with_common_sh(&format!(
                "result='{before}'; fail_on_triple_fault '{}'; printf '%s' \"$result\"",
                err.display()
            ));
            assert_eq!(out, after, "{stderr} / {before}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `lab_fault_in` (common.sh), which lab_api's `@@LAB-FAULT` line and `retry_lab_fault`
    /// both take their verdict from: the first lab-fault line of the files, carriage
    /// returns dropped, and nothing for a guest that merely failed.
    #[test]
    fn lab_fault_in_finds_the_first_fault_line_of_its_files() {
        let dir = std::env::temp_dir().join(format!("lab-fault-in-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (log, err) = (dir.join("log"), dir.join("err"));
        let run = |log_text: &str, err_text: &str| {
            std::fs::write(&log, log_text).expect("write");
            std::fs::write(&err, err_text).expect("write");
            with_common_sh(&format!(
                "lab_fault_in '{}' '{}'",
                log.display(),
                err.display()
            ))
        };
        let stall = "[  80.6] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\r\n";
        let fault = "pv-vmm: error: vCPU 1: the guest triple-faulted (KVM_EXIT_SHUTDOWN)\n";
        assert_eq!(run("booting\r\nok\r\n", "pv-vmm: guest powered off\n"), "");
        assert_eq!(run("booting\r\n", fault), fault);
        // The console's RCU stall, without its carriage return, comes first.
        assert_eq!(
            run(&format!("up\r\n{stall}"), fault),
            stall.replace('\r', "")
        );
        assert_eq!(
            run("", "cloud-hypervisor: VmExit::Reset\n"),
            "cloud-hypervisor: VmExit::Reset\n"
        );
        // A CPU that reports its own stall (a guest too slow, not one whose vCPU stopped)
        // is no lab fault.
        let own = "rcu: INFO: rcu_preempt self-detected stall on CPU\r\n";
        assert_eq!(run(own, "pv-vmm: error: vCPU 0: KVM_RUN failed\n"), "");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn repo_root_holds_the_lab_scripts() {
        assert!(
            script("lab/run").is_file(),
            "{}",
            script("lab/run").display()
        );
    }
}
