//! Seccomp filters, one per kind of thread, as Cloud Hypervisor has them (`--seccomp
//! true|false|log`, default `true`).
//!
//! Every thread of pv-vmm installs the filter of its kind before it touches anything a guest
//! or an API client controls: a vCPU thread before its first `KVM_RUN`, the API thread
//! before it accepts a connection, the main thread before its control loop. A thread
//! created by a filtered thread inherits the parent's filter and stacks its own on top, so
//! what it may do is the intersection of both (a vCPU thread of a rebooted VM runs under the
//! main thread's filter and the vCPU filter).
//!
//! The lists are this project's own, written from what each thread does (seen with `strace
//! -f` on this VMM and checked by booting, rebooting, pausing and querying real guests in
//! the KVM lab with the filters on). `ioctl` is allowed only with the request numbers a kind
//! uses: the KVM ioctls below are built from `kvm-bindings`' structures with the kernel's
//! `_IO*` encoding, so their numbers follow the headers.
//!
//! `true`: a forbidden system call raises SIGSYS; the handler prints one line naming the
//! thread kind and the system call number and ends the process with status 1 (as a KVM
//! internal error does). One exception: on every thread but the main one, opening a file
//! fails with `EACCES` instead (`OPEN_REFUSED`), because glibc's allocator opens
//! `/proc/sys/vm/overcommit_memory` the first time it shrinks a thread's heap and copes
//! with the refusal, and a VMM must not die of an allocator's housekeeping. `log`: the
//! kernel logs the call (audit, `dmesg`) and lets it through. `false`: no filter.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::str::FromStr;

use kvm_bindings::{
    kvm_cpuid2, kvm_enable_cap, kvm_fpu, kvm_irqfd, kvm_lapic_state, kvm_msrs, kvm_pit_config,
    kvm_regs, kvm_sregs, kvm_userspace_memory_region, KVMIO,
};
// The two that pv-features issues itself are named where it encodes them.
use pv_features::ioctls::{KVM_GET_STATS_FD, KVM_GET_SUPPORTED_HV_CPUID};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

/// What `--seccomp` asks for, spelled as Cloud Hypervisor spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// `true` (the default): a forbidden system call stops the process.
    Trap,
    /// `log`: a forbidden system call is logged by the kernel and allowed.
    Log,
    /// `false`: no filters.
    Off,
}

/// `--seccomp` with a value other than `true`, `false` or `log`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--seccomp {0}: expected true, false or log")]
pub struct ParseModeError(String);

impl FromStr for SeccompMode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "true" => Ok(Self::Trap),
            "false" => Ok(Self::Off),
            "log" => Ok(Self::Log),
            other => Err(ParseModeError(other.to_owned())),
        }
    }
}

/// The kinds of threads pv-vmm runs, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread: owns the VM, runs the control loop, builds and tears down VMs.
    Vmm,
    /// The API server (hyper on a current-thread tokio runtime).
    Api,
    /// A vCPU thread: `KVM_RUN`, port I/O to the devices, `KVM_GET_MSRS` when asked,
    /// `KVM_GET_REGS`/`KVM_GET_SREGS` on a triple fault.
    Vcpu,
    /// The thread that turns SIGINT/SIGTERM into events.
    Signals,
    /// The thread that feeds stdin to the serial port.
    Stdin,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Vmm,
        ThreadKind::Api,
        ThreadKind::Vcpu,
        ThreadKind::Signals,
        ThreadKind::Stdin,
    ];

    /// The kind's name, as the SIGSYS report prints it.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Signals => "signals",
            ThreadKind::Stdin => "stdin",
        }
    }

    fn index(self) -> u8 {
        match self {
            ThreadKind::Vmm => 1,
            ThreadKind::Api => 2,
            ThreadKind::Vcpu => 3,
            ThreadKind::Signals => 4,
            ThreadKind::Stdin => 5,
        }
    }
}

/// Errors of building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused a filter (a bug in the lists below).
    #[error("building the seccomp filter of the {kind} threads")]
    Build {
        /// The thread kind.
        kind: &'static str,
        /// seccompiler's error.
        #[source]
        source: seccompiler::Error,
    },
    /// The kernel refused the filter.
    #[error("installing the seccomp filter of a {kind} thread")]
    Apply {
        /// The thread kind.
        kind: &'static str,
        /// seccompiler's error.
        #[source]
        source: seccompiler::Error,
    },
    /// The SIGSYS handler could not be installed.
    #[error("installing the SIGSYS handler")]
    Handler(#[source] vmm_sys_util::errno::Error),
}

// The ioctls, encoded as the kernel's include/uapi/linux/kvm.h and asm-generic/ioctls.h
// declare them.
const fn io(nr: u32) -> u64 {
    ioctl_expr(_IOC_NONE, KVMIO, nr, 0) as u64
}
const fn ior<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_READ, KVMIO, nr, std::mem::size_of::<T>() as u32) as u64
}
const fn iow<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_WRITE, KVMIO, nr, std::mem::size_of::<T>() as u32) as u64
}
const fn iowr<T>(nr: u32) -> u64 {
    ioctl_expr(
        _IOC_READ | _IOC_WRITE,
        KVMIO,
        nr,
        std::mem::size_of::<T>() as u32,
    ) as u64
}

const KVM_GET_API_VERSION: u64 = io(0x00);
const KVM_CREATE_VM: u64 = io(0x01);
const KVM_CHECK_EXTENSION: u64 = io(0x03);
const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
const KVM_GET_SUPPORTED_CPUID: u64 = iowr::<kvm_cpuid2>(0x05);
const KVM_CREATE_VCPU: u64 = io(0x41);
const KVM_SET_USER_MEMORY_REGION: u64 = iow::<kvm_userspace_memory_region>(0x46);
const KVM_SET_TSS_ADDR: u64 = io(0x47);
const KVM_CREATE_IRQCHIP: u64 = io(0x60);
const KVM_IRQFD: u64 = iow::<kvm_irqfd>(0x76);
const KVM_CREATE_PIT2: u64 = iow::<kvm_pit_config>(0x77);
const KVM_RUN: u64 = io(0x80);
const KVM_GET_REGS: u64 = ior::<kvm_regs>(0x81);
const KVM_SET_REGS: u64 = iow::<kvm_regs>(0x82);
const KVM_GET_SREGS: u64 = ior::<kvm_sregs>(0x83);
const KVM_SET_SREGS: u64 = iow::<kvm_sregs>(0x84);
const KVM_GET_MSRS: u64 = iowr::<kvm_msrs>(0x88);
const KVM_SET_MSRS: u64 = iow::<kvm_msrs>(0x89);
const KVM_SET_FPU: u64 = iow::<kvm_fpu>(0x8d);
const KVM_GET_LAPIC: u64 = ior::<kvm_lapic_state>(0x8e);
const KVM_SET_LAPIC: u64 = iow::<kvm_lapic_state>(0x8f);
const KVM_SET_CPUID2: u64 = iow::<kvm_cpuid2>(0x90);
const KVM_GET_CPUID2: u64 = iowr::<kvm_cpuid2>(0x91);
const KVM_ENABLE_CAP: u64 = iow::<kvm_enable_cap>(0xa3);
// Terminal and socket ioctls (include/uapi/asm-generic/ioctls.h).
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const FIONBIO: u64 = 0x5421;
const FIOCLEX: u64 = 0x5451;

/// The ioctls the main thread makes: opening KVM and probing the host, building a VM and
/// its vCPUs (at boot and at every reboot), halt polling, statistics, and the terminal.
const VMM_IOCTLS: &[u64] = &[
    KVM_GET_API_VERSION,
    KVM_CREATE_VM,
    KVM_CHECK_EXTENSION,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_GET_SUPPORTED_CPUID,
    KVM_CREATE_VCPU,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_TSS_ADDR,
    KVM_CREATE_IRQCHIP,
    KVM_IRQFD,
    KVM_CREATE_PIT2,
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    KVM_SET_SREGS,
    KVM_GET_MSRS,
    KVM_SET_MSRS,
    KVM_SET_FPU,
    KVM_GET_LAPIC,
    KVM_SET_LAPIC,
    KVM_SET_CPUID2,
    KVM_GET_CPUID2,
    KVM_ENABLE_CAP,
    KVM_GET_STATS_FD,
    // kvm_hyperv=on: the Hyper-V leaves, from the system fd (host probe) or a vCPU.
    KVM_GET_SUPPORTED_HV_CPUID,
    // vCPU threads of a rebooted VM are created by the filtered main thread: the vCPU
    // filter stacks on this one, so their ioctls must be allowed here too.
    KVM_RUN,
    TCGETS,
    TCSETS,
    FIONBIO,
    FIOCLEX,
];

/// A vCPU thread runs the vCPU and reads its steal-time MSR; on a triple fault it reads its
/// registers for the message. Nothing else.
const VCPU_IOCTLS: &[u64] = &[KVM_RUN, KVM_GET_MSRS, KVM_GET_REGS, KVM_GET_SREGS];

/// The API thread only sets sockets non-blocking.
const API_IOCTLS: &[u64] = &[FIONBIO, FIOCLEX];

/// What any Rust thread needs to allocate, lock, log, sleep, take the kick signal and end.
const RUNTIME: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    // Logging to stderr, serial output, eventfd writes.
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The main thread, on top of [`RUNTIME`].
const VMM: &[i64] = &[
    // Kernel, initramfs and serial files; /dev/kvm; statistics; cgroup files that
    // `available_parallelism` reads.
    libc::SYS_openat,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_eventfd2,
    // vCPU and stdin threads (they run set_robust_list, rseq, prctl(PR_SET_NAME) and
    // install their own filter under this one).
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    // Kicking vCPU threads out of KVM_RUN.
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    // The API socket file is removed at exit.
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_prlimit64,
];

/// The API thread, on top of [`RUNTIME`]: tokio's epoll loop and hyper on accepted
/// connections.
const API: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_accept4,
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
    libc::SYS_close,
    libc::SYS_fcntl,
];

/// A vCPU thread, on top of [`RUNTIME`]: `KVM_RUN` itself is an ioctl; port I/O ends in
/// device code that writes the serial output and the interrupt eventfd. It closes its vCPU
/// file descriptor when it ends (std checks the descriptor with `fcntl(F_GETFD)` first).
const VCPU: &[i64] = &[libc::SYS_close];

/// The signal thread, on top of [`RUNTIME`]: signal-hook's self-pipe.
const SIGNALS: &[i64] = &[
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_poll,
    // signal-hook's handler runs on this thread (the only one with SIGINT and SIGTERM
    // unblocked) and writes to its socket.
    libc::SYS_sendto,
];

/// The stdin thread, on top of [`RUNTIME`]: reads stdin, writes the serial FIFO.
const STDIN: &[i64] = &[libc::SYS_read];

/// Opening a file, which no thread but the main one does, fails there with `EACCES`
/// (with `--seccomp true`; `log` logs it like any other call). Seen: an API thread under
/// hostile load (a 60 KB nested JSON body, megabytes of headers, 200 connections opened
/// and closed) freed enough that glibc shrank its heap, and `shrink_heap` first reads
/// `/proc/sys/vm/overcommit_memory` (once per process); denied, glibc takes the
/// conservative path (it assumes no overcommit and uses `MADV_DONTNEED`, allowed here).
const OPEN_REFUSED: &[i64] = &[libc::SYS_open, libc::SYS_openat];

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn arg_equals(index: u8, values: &[u64]) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    values
        .iter()
        .map(|v| {
            SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *v)
                .map_err(seccompiler::Error::from)
                .and_then(|c| SeccompRule::new(vec![c]).map_err(seccompiler::Error::from))
        })
        .collect()
}

/// The calls of a thread kind. With `refuse_open`, the [`OPEN_REFUSED`] calls of the kinds
/// other than the main thread's are let through by this filter for the refusal filter
/// stacked on it to answer.
fn rules(kind: ThreadKind, refuse_open: bool) -> Result<Rules, seccompiler::Error> {
    let (plain, ioctls): (&[i64], &[u64]) = match kind {
        ThreadKind::Vmm => (VMM, VMM_IOCTLS),
        ThreadKind::Api => (API, API_IOCTLS),
        ThreadKind::Vcpu => (VCPU, VCPU_IOCTLS),
        ThreadKind::Signals => (SIGNALS, &[]),
        ThreadKind::Stdin => (STDIN, &[]),
    };
    let refused: &[i64] = if refuse_open && kind != ThreadKind::Vmm {
        OPEN_REFUSED
    } else {
        &[]
    };
    let mut rules: Rules = RUNTIME
        .iter()
        .chain(plain)
        .chain(refused)
        .map(|nr| (*nr, Vec::new()))
        .collect();
    if !ioctls.is_empty() {
        rules.insert(libc::SYS_ioctl, arg_equals(1, ioctls)?);
    }
    if kind == ThreadKind::Vcpu {
        // Only the descriptor check before closing its vCPU fd.
        rules.insert(libc::SYS_fcntl, arg_equals(1, &[libc::F_GETFD as u64])?);
    }
    Ok(rules)
}

/// The compiled filters of one `--seccomp` mode.
#[derive(Debug, Clone)]
pub struct Filters {
    mode: SeccompMode,
    programs: BTreeMap<ThreadKind, BpfProgram>,
    /// [`OPEN_REFUSED`] answered with `EACCES`, everything else allowed: stacked on the
    /// filter of every kind but the main thread's (`--seccomp true` only).
    refuse_open: Option<BpfProgram>,
}

impl Filters {
    /// Compiles the filter of every thread kind for `mode` (none for [`SeccompMode::Off`]).
    pub fn new(mode: SeccompMode) -> Result<Self, SeccompError> {
        let mismatch = match mode {
            SeccompMode::Off => {
                return Ok(Self {
                    mode,
                    programs: BTreeMap::new(),
                    refuse_open: None,
                })
            }
            SeccompMode::Trap => SeccompAction::Trap,
            SeccompMode::Log => SeccompAction::Log,
        };
        let arch = TargetArch::x86_64;
        let refuse = mode == SeccompMode::Trap;
        let mut programs = BTreeMap::new();
        for kind in ThreadKind::ALL {
            let build = |source| SeccompError::Build {
                kind: kind.name(),
                source,
            };
            let filter = SeccompFilter::new(
                rules(kind, refuse).map_err(build)?,
                mismatch.clone(),
                SeccompAction::Allow,
                arch,
            )
            .map_err(|e| build(e.into()))?;
            let program: BpfProgram = filter
                .try_into()
                .map_err(|e| build(seccompiler::Error::from(e)))?;
            programs.insert(kind, program);
        }
        let refuse_open = if refuse {
            let build = |source| SeccompError::Build {
                kind: "non-main",
                source,
            };
            let filter = SeccompFilter::new(
                OPEN_REFUSED.iter().map(|nr| (*nr, Vec::new())).collect(),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::EACCES as u32),
                arch,
            )
            .map_err(|e| build(e.into()))?;
            Some(
                filter
                    .try_into()
                    .map_err(|e| build(seccompiler::Error::from(e)))?,
            )
        } else {
            None
        };
        Ok(Self {
            mode,
            programs,
            refuse_open,
        })
    }

    /// The mode the filters were built for.
    pub fn mode(&self) -> SeccompMode {
        self.mode
    }

    /// Installs the filter of `kind` on the calling thread (nothing for `--seccomp false`).
    pub fn apply(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        let Some(program) = self.programs.get(&kind) else {
            return Ok(());
        };
        THREAD_KIND.with(|k| k.set(kind.index()));
        let apply = |program| {
            seccompiler::apply_filter(program).map_err(|source| SeccompError::Apply {
                kind: kind.name(),
                source,
            })
        };
        // The refusal first: it allows prctl and seccomp, which installing the kind's own
        // filter needs and that filter forbids.
        if let Some(refuse) = self
            .refuse_open
            .as_ref()
            .filter(|_| kind != ThreadKind::Vmm)
        {
            apply(refuse)?;
        }
        apply(program)?;
        log::debug!("seccomp filter of a {} thread installed", kind.name());
        Ok(())
    }
}

/// Spawns a thread named `name` that installs the filter of `kind` before running `body`.
/// Returns once the filter is in place, or the error that kept it from being installed
/// (the thread then ends without running `body`).
pub fn spawn<F>(
    name: String,
    kind: ThreadKind,
    filters: &Filters,
    body: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let filters = filters.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let applied = filters.apply(kind);
        let ok = applied.is_ok();
        let _ = tx.send(applied);
        if ok {
            body();
        }
    })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(std::io::Error::other(crate::error::chain(&e)))
        }
        Err(_) => {
            let _ = handle.join();
            Err(std::io::Error::other(
                "the thread ended before installing its seccomp filter",
            ))
        }
    }
}

thread_local! {
    /// The kind of the calling thread once its filter is installed (0: none), for the
    /// SIGSYS report; a plain TLS word, safe to read in a signal handler.
    static THREAD_KIND: Cell<u8> = const { Cell::new(0) };
}

/// The SIGSYS part of `siginfo_t` on x86_64 (`_sigsys` in the kernel's
/// include/uapi/asm-generic/siginfo.h): after three ints and padding, the faulting address,
/// the system call number and the audit architecture.
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// Appends `text` to `buf` at `*len`, as far as it fits.
fn put(buf: &mut [u8], len: &mut usize, text: &[u8]) {
    for b in text {
        if let Some(slot) = buf.get_mut(*len) {
            *slot = *b;
            *len += 1;
        }
    }
}

/// Appends `n` in decimal.
fn put_number(buf: &mut [u8], len: &mut usize, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let negative = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    if negative {
        put(buf, len, b"-");
    }
    put(buf, len, digits.get(i..).unwrap_or_default());
}

/// The report line for a forbidden system call `nr` on a thread of kind `kind` (0: a
/// thread without a filter of its own, which inherited one).
fn report(kind: u8, nr: i64, buf: &mut [u8]) -> usize {
    let name = ThreadKind::ALL
        .iter()
        .find(|k| k.index() == kind)
        .map_or("unfiltered", |k| k.name());
    let mut len = 0;
    put(buf, &mut len, b"pv-vmm: error: seccomp: a ");
    put(buf, &mut len, name.as_bytes());
    put(buf, &mut len, b" thread made system call ");
    put_number(buf, &mut len, nr);
    put(
        buf,
        &mut len,
        b", which its filter forbids (--seccomp log lets it through and logs it)\n",
    );
    len
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS with SA_SIGINFO; its SIGSYS
    // members sit where `SigsysInfo` puts them on x86_64.
    let nr = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    let kind = THREAD_KIND.with(|k| k.get());
    let mut buf = [0u8; 192];
    let len = report(kind, i64::from(nr), &mut buf);
    // SAFETY: write and _exit are async-signal-safe and allowed by every filter; `buf`
    // lives on this stack for `len` bytes.
    unsafe {
        libc::write(libc::STDERR_FILENO, buf.as_ptr().cast(), len);
        libc::_exit(1);
    }
}

/// Installs the SIGSYS handler that reports a forbidden system call (for `--seccomp true`).
pub fn install_sigsys_handler() -> Result<(), SeccompError> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(SeccompError::Handler)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn modes_are_cloud_hypervisors() {
        assert_eq!("true".parse(), Ok(SeccompMode::Trap));
        assert_eq!("false".parse(), Ok(SeccompMode::Off));
        assert_eq!("log".parse(), Ok(SeccompMode::Log));
        for bad in ["", "on", "TRUE", "1", "trap", "log "] {
            let err = bad.parse::<SeccompMode>().expect_err(bad).to_string();
            assert_eq!(err, format!("--seccomp {bad}: expected true, false or log"));
        }
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // Values from include/uapi/linux/kvm.h as strace decodes them on x86_64.
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_GET_MSRS, 0xc008_ae88);
        assert_eq!(KVM_SET_MSRS, 0x4008_ae89);
        assert_eq!(KVM_SET_CPUID2, 0x4008_ae90);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_IRQFD, 0x4020_ae76);
        assert_eq!(KVM_CREATE_PIT2, 0x4040_ae77);
        assert_eq!(KVM_ENABLE_CAP, 0x4068_aea3);
        assert_eq!(KVM_SET_REGS, 0x4090_ae82);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_SET_FPU, 0x41a0_ae8d);
        assert_eq!(KVM_GET_LAPIC, 0x8400_ae8e);
        assert_eq!(KVM_GET_STATS_FD, 0xaece);
        assert_eq!(KVM_GET_SUPPORTED_HV_CPUID, 0xc008_aec1);
    }

    #[test]
    fn every_kind_compiles_in_every_mode() {
        for mode in [SeccompMode::Trap, SeccompMode::Log] {
            let filters = Filters::new(mode).expect("compiles");
            for kind in ThreadKind::ALL {
                let program = filters.programs.get(&kind).expect("a program per kind");
                assert!(
                    program.len() > 10,
                    "{kind:?}: {} instructions",
                    program.len()
                );
            }
        }
        let off = Filters::new(SeccompMode::Off).expect("off");
        assert!(off.programs.is_empty());
        // With no filter, applying is a no-op that succeeds (and installs nothing).
        off.apply(ThreadKind::Vcpu).expect("no-op");
    }

    #[test]
    fn the_vcpu_filter_is_narrower_than_the_main_threads() {
        let vcpu = rules(ThreadKind::Vcpu, false).expect("vcpu");
        let vmm = rules(ThreadKind::Vmm, false).expect("vmm");
        for nr in [
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_execve,
            libc::SYS_clone3,
        ] {
            assert!(
                !vcpu.contains_key(&nr),
                "vCPU threads may not make syscall {nr}"
            );
        }
        // Stacked under the main thread's filter, a vCPU thread can only do what both
        // allow: everything it needs must be in the main thread's list too.
        for nr in vcpu.keys() {
            assert!(
                vmm.contains_key(nr),
                "syscall {nr} of the vCPU filter missing in main's"
            );
        }
        for ioctl in VCPU_IOCTLS {
            assert!(
                VMM_IOCTLS.contains(ioctl),
                "ioctl {ioctl:#x} missing in main's"
            );
        }
        assert!(!rules(ThreadKind::Api, false)
            .expect("api")
            .contains_key(&libc::SYS_openat));
        // With the refusal stacked on top, only opening is let through to be refused.
        let api = rules(ThreadKind::Api, true).expect("api");
        let plain = rules(ThreadKind::Api, false).expect("api");
        let added: Vec<_> = api.keys().filter(|nr| !plain.contains_key(nr)).collect();
        assert_eq!(added, [&libc::SYS_open, &libc::SYS_openat]);
        assert_eq!(
            rules(ThreadKind::Vmm, true).expect("vmm").len(),
            vmm.len(),
            "the main thread opens files itself"
        );
    }

    #[test]
    fn the_report_names_the_thread_and_the_call() {
        let mut buf = [0u8; 192];
        let len = report(ThreadKind::Vcpu.index(), 257, &mut buf);
        let text = std::str::from_utf8(&buf[..len]).expect("utf-8");
        assert_eq!(
            text,
            "pv-vmm: error: seccomp: a vcpu thread made system call 257, which its filter forbids (--seccomp log lets it through and logs it)\n"
        );
        let len = report(0, -1, &mut buf);
        let text = std::str::from_utf8(&buf[..len]).expect("utf-8");
        assert!(
            text.contains("a unfiltered thread made system call -1"),
            "{text}"
        );
        // A buffer too small truncates instead of overflowing.
        let mut tiny = [0u8; 8];
        assert_eq!(report(3, 257, &mut tiny), 8);
    }

    /// What the child process of the tests below does, chosen by `PV_SECCOMP_CHILD`.
    fn child(mode: SeccompMode) {
        let filters = Filters::new(mode).expect("filters");
        install_sigsys_handler().expect("handler");
        let thread = spawn("vcpu0".into(), ThreadKind::Vcpu, &filters, || {
            // Allowed on a vCPU thread: memory, locks, stderr.
            let v: Vec<u8> = vec![1; 1 << 20];
            eprintln!("@@allowed {}@@", v.len());
            // Refused (EACCES with `true`): a vCPU thread never opens files.
            match std::fs::File::open("/proc/self/status") {
                Ok(_) => eprintln!("@@open returned true@@"),
                Err(e) => eprintln!("@@open failed {:?}@@", e.raw_os_error()),
            }
            // Forbidden: a socket.
            // SAFETY: socket() takes no pointers; the descriptor, if any, is closed.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            eprintln!("@@socket returned {}@@", fd >= 0);
            if fd >= 0 {
                // SAFETY: fd is the descriptor socket() just returned, owned here.
                unsafe { libc::close(fd) };
            }
        })
        .expect("spawned");
        let _ = thread.join();
        std::process::exit(0);
    }

    fn run_child(mode: &str) -> (Option<i32>, String) {
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "seccomp::tests::child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PV_SECCOMP_CHILD", mode)
            .output()
            .expect("running the child");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Not a test of its own: the body of the child process of the tests below (it does
    /// nothing unless `PV_SECCOMP_CHILD` is set).
    #[test]
    fn child_entry() {
        match std::env::var("PV_SECCOMP_CHILD").as_deref() {
            Ok("true") => child(SeccompMode::Trap),
            Ok("log") => child(SeccompMode::Log),
            Ok("false") => child(SeccompMode::Off),
            _ => {}
        }
    }

    #[test]
    fn a_forbidden_syscall_on_a_vcpu_thread_is_stopped() {
        let (code, stderr) = run_child("true");
        assert!(stderr.contains("@@allowed 1048576@@"), "{stderr}");
        assert!(
            stderr.contains(&format!("@@open failed Some({})@@", libc::EACCES)),
            "opening is refused, not fatal: {stderr}"
        );
        assert!(
            !stderr.contains("@@socket returned"),
            "socket went through: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "pv-vmm: error: seccomp: a vcpu thread made system call {}",
                libc::SYS_socket
            )),
            "{stderr}"
        );
        assert_eq!(code, Some(1), "{stderr}");
    }

    #[test]
    fn log_and_false_let_the_syscall_through() {
        for mode in ["log", "false"] {
            let (code, stderr) = run_child(mode);
            assert!(
                stderr.contains("@@open returned true@@")
                    && stderr.contains("@@socket returned true@@"),
                "{mode}: {stderr}"
            );
            assert!(!stderr.contains("seccomp:"), "{mode}: {stderr}");
            assert_eq!(code, Some(0), "{mode}: {stderr}");
        }
    }
}
