//! One thread per vCPU: the run loop and its exit match, and how the VMM stops, pauses and
//! queries the threads.
//!
//! Pausing: the VMM sets [`VcpuShared::paused`] and kicks every thread out of `KVM_RUN`
//! (repeatedly: a kick can land just before a thread re-enters `KVM_RUN`); each thread then
//! parks on a condition variable before running guest code again, and counts itself in
//! [`VcpuShared::parked`]. The pause is complete when every thread is parked.
//!
//! Steal-time MSR: KVM handles the guest's write of `MSR_KVM_STEAL_TIME` in the kernel, so
//! the VMM never sees it. The value is read with `KVM_GET_MSRS` by the vCPU's own thread
//! (vCPU ioctls belong to the thread that runs the vCPU) through the vCPU's
//! [`MsrSlot`]: the VMM asks and kicks; the thread
//! answers at its next loop turn (or while parked).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hypervisor_glue::counters::{MsrRead, MsrSlot};
use kvm_ioctls::{VcpuExit, VcpuFd};
use pv_features::hypercall::Dispatcher;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::{lock, PioBus, VmRequest};
use crate::exit_counters::{ExitCounters, ExitKind};
use crate::seccomp::{self, Filters, ThreadKind};
use crate::sink::Sink;

/// What a vCPU thread tells the VMM's main loop. Each carries the generation of the VM that
/// sent it, so that an event a vCPU of a VM already torn down sent is not taken for one of
/// its successor.
#[derive(Debug)]
pub enum VcpuEvent {
    /// A device of VM `generation` asked the VMM to power off or reset.
    Request(u64, VmRequest),
    /// A vCPU of VM `generation` hit something the VMM cannot continue from.
    Fatal(u64, String),
}

/// State the vCPU threads of one VM share.
#[derive(Debug)]
pub struct VcpuShared {
    /// The VM's generation (one per boot of the process's VM).
    pub generation: u64,
    /// The port I/O devices.
    pub bus: Arc<PioBus>,
    /// Hypercalls that reach user space go through it.
    pub dispatcher: Dispatcher,
    /// Set when the VM is being torn down.
    pub stop: AtomicBool,
    /// Set while the VM is paused (mirrors the value under `pause_lock`).
    pub paused: AtomicBool,
    /// Guards the pause flag for the condition variable.
    pub pause_lock: Mutex<bool>,
    /// Wakes parked threads on resume and stop.
    pub resume: Condvar,
    /// How many threads are parked.
    pub parked: AtomicUsize,
    /// Per vCPU, indexed by id.
    pub msrs: Vec<MsrSlot>,
    /// Per vCPU, indexed by id: the exits that reached this process's run loop.
    pub exits: Vec<ExitCounters>,
    /// Where the vCPUs' events go (the main loop).
    pub events: Sink<VcpuEvent>,
}

impl VcpuShared {
    /// Shared state for `vcpus` threads of VM `generation`.
    pub fn new(
        generation: u64,
        bus: Arc<PioBus>,
        dispatcher: Dispatcher,
        vcpus: usize,
        events: Sink<VcpuEvent>,
    ) -> Self {
        Self {
            generation,
            bus,
            dispatcher,
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            pause_lock: Mutex::new(false),
            resume: Condvar::new(),
            parked: AtomicUsize::new(0),
            msrs: (0..vcpus).map(|_| MsrSlot::default()).collect(),
            exits: (0..vcpus).map(|_| ExitCounters::default()).collect(),
            events,
        }
    }
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the kick signal's handler; call once before starting vCPU threads. Without a
/// handler the signal would kill the process; with an empty one it only interrupts
/// `KVM_RUN` with EINTR.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), noop_handler)
}

/// Starts the thread of vCPU `id`; it installs the vCPU seccomp filter before it runs the
/// vCPU.
pub fn spawn(
    id: u64,
    mut vcpu: VcpuFd,
    shared: Arc<VcpuShared>,
    filters: &Filters,
) -> std::io::Result<JoinHandle<()>> {
    seccomp::spawn(format!("vcpu{id}"), ThreadKind::Vcpu, filters, move || {
        run_loop(id, &mut vcpu, &shared)
    })
}

fn run_loop(id: u64, vcpu: &mut VcpuFd, shared: &VcpuShared) {
    let generation = shared.generation;
    let send = |event| {
        // The main loop may already be gone during teardown; nothing to do then.
        shared.events.send(event);
    };
    let fatal = |message: String| VcpuEvent::Fatal(generation, message);
    let Some(exits) = shared.exits.get(id as usize) else {
        send(fatal(format!("vCPU {id}: no exit counters for it")));
        return;
    };
    let mut eagain_streak = 0u32;
    while !shared.stop.load(Ordering::Acquire) {
        service(id, vcpu, shared);
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let exit = vcpu.run();
        if let Ok(exit) = &exit {
            exits.record(ExitKind::of(exit));
        }
        match &exit {
            Err(e) if e.errno() == libc::EAGAIN => {
                eagain_streak = eagain_streak.saturating_add(1);
                if eagain_streak == EAGAIN_WARN_AFTER {
                    log::warn!(
                        "vCPU {id}: KVM_RUN keeps returning EAGAIN (a vCPU not started yet was made runnable, e.g. by a guest's PV kick); backing off"
                    );
                }
                if let Some(pause) = eagain_backoff(eagain_streak) {
                    std::thread::sleep(pause);
                }
            }
            // The VMM's own kicks say nothing about the vCPU.
            Err(e) if e.errno() == libc::EINTR => {}
            _ => eagain_streak = 0,
        }
        match exit {
            // kvm-ioctls hands over the data of all elements of a string instruction (`rep
            // ins`/`outs`) as one slice; the devices take them one element at a time.
            Ok(VcpuExit::IoOut(port, _)) => {
                let (size, data) = io_elements(vcpu);
                if let Some(request) = shared.bus.write_elements(port, data, size) {
                    send(VcpuEvent::Request(generation, request));
                    return;
                }
            }
            Ok(VcpuExit::IoIn(port, _)) => {
                let (size, data) = io_elements(vcpu);
                shared.bus.read_elements(port, data, size);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                log::trace!("vCPU {id}: unhandled MMIO read {addr:#x}");
                data.fill(0xff);
            }
            Ok(VcpuExit::MmioWrite(addr, _)) => {
                log::trace!("vCPU {id}: unhandled MMIO write {addr:#x}")
            }
            Ok(VcpuExit::Hypercall(mut exit)) => {
                // With the local APIC in KVM, SEND_IPI, KICK_CPU and SCHED_YIELD never
                // reach here; whatever does gets KVM's answer for it.
                let action = shared.dispatcher.handle_exit(&mut exit, |_, _| false);
                log::debug!("vCPU {id}: hypercall {} -> {action:?}", exit.nr);
            }
            Ok(VcpuExit::Hyperv) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: for KVM_EXIT_HYPERV the kernel filled the `hyperv` member of the
                // exit union; `handle_exit` reads the part its type names.
                let exit = unsafe { &mut run.__bindgen_anon_1.hyperv };
                let what = pv_features::hyperv::handle_exit(exit);
                log::debug!("vCPU {id}: Hyper-V exit {what:?}");
            }
            // Only with KVM_CAP_X86_USER_SPACE_MSR, which pv-vmm does not enable: an MSR
            // KVM hands out is one nobody implements, so the guest gets #GP.
            Ok(VcpuExit::X86Rdmsr(exit)) => {
                log::debug!("vCPU {id}: RDMSR {:#x} exited: #GP", exit.index);
                *exit.error = 1;
            }
            Ok(VcpuExit::X86Wrmsr(exit)) => {
                log::debug!("vCPU {id}: WRMSR {:#x} exited: #GP", exit.index);
                *exit.error = 1;
            }
            Ok(VcpuExit::Hlt) => {}
            Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => {
                send(fatal(format!(
                    "vCPU {id}: the guest triple-faulted (KVM_EXIT_SHUTDOWN); {}",
                    shutdown_state(vcpu)
                )));
                return;
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                let event = match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => {
                        VcpuEvent::Request(generation, VmRequest::PowerOff)
                    }
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                        VcpuEvent::Request(generation, VmRequest::Reset)
                    }
                    other => fatal(format!("vCPU {id}: system event {other} (crash)")),
                };
                send(event);
                return;
            }
            Ok(VcpuExit::InternalError) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: for KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal`
                // member of the exit union; reading it is reading plain integers.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                send(fatal(format!(
                    "vCPU {id}: KVM internal error (suberror {suberror})"
                )));
                return;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                send(fatal(format!(
                    "vCPU {id}: VM entry failed (hardware reason {reason:#x} on host CPU {cpu})"
                )));
                return;
            }
            Ok(other) => {
                send(fatal(format!("vCPU {id}: unexpected exit {other:?}")));
                return;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                send(fatal(format!("vCPU {id}: KVM_RUN failed: {e}")));
                return;
            }
        }
    }
}

/// After this many `KVM_RUN`s in a row that returned EAGAIN, say so once.
const EAGAIN_WARN_AFTER: u32 = 100;
/// The longest pause between two `KVM_RUN`s that returned EAGAIN.
pub const EAGAIN_MAX_PAUSE: Duration = Duration::from_millis(10);

/// How long to wait before entering `KVM_RUN` again after `streak` EAGAIN returns in a row.
///
/// KVM answers EAGAIN for a vCPU that has not received INIT/SIPI yet (an AP in
/// wait-for-SIPI) each time something wakes it without starting it. Once is normal (the
/// INIT that starts it); in a row, it means a wake-up that never starts it: a guest can
/// cause that with a PV kick (KVM_HC_KICK_CPU, or a SEND_IPI in remote-read mode) to such a
/// vCPU, which leaves it runnable in KVM's eyes while it stays uninitialized, so every
/// `KVM_RUN` returns at once. Without a pause the thread would spin on a host CPU for as
/// long as the guest likes; with one, it wakes at most every [`EAGAIN_MAX_PAUSE`], and a
/// real INIT/SIPI still starts the vCPU within that.
pub fn eagain_backoff(streak: u32) -> Option<Duration> {
    match streak {
        0 | 1 => None,
        n => Some(Duration::from_micros(100u64 << (n - 2).min(7)).min(EAGAIN_MAX_PAUSE)),
    }
}

/// Between two `KVM_RUN`s: answers a steal-time MSR request and parks while paused.
fn service(id: u64, vcpu: &VcpuFd, shared: &VcpuShared) {
    let Some(msr) = shared.msrs.get(id as usize) else {
        return;
    };
    msr.serve(vcpu);
    if !shared.paused.load(Ordering::Acquire) {
        return;
    }
    let mut paused = lock(&shared.pause_lock);
    shared.parked.fetch_add(1, Ordering::AcqRel);
    log::debug!("vCPU {id}: parked");
    while *paused && !shared.stop.load(Ordering::Acquire) {
        // Wake up now and then to answer MSR requests while parked.
        paused = match shared
            .resume
            .wait_timeout(paused, Duration::from_millis(10))
        {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
        msr.serve(vcpu);
    }
    shared.parked.fetch_sub(1, Ordering::AcqRel);
    log::debug!("vCPU {id}: running again");
}

/// Kicks every live thread out of `KVM_RUN` once.
fn kick_all(threads: &[JoinHandle<()>]) {
    for thread in threads {
        if !thread.is_finished() {
            if let Err(e) = thread.kill(kick_signal()) {
                log::debug!("kicking a vCPU thread: {e}");
            }
        }
    }
}

/// Errors of pausing the vCPU threads.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// Not every thread parked in time.
    #[error("pausing the vCPUs: {parked} of {total} parked after {waited_ms} ms")]
    Timeout {
        /// Threads parked.
        parked: usize,
        /// Threads alive.
        total: usize,
        /// How long the VMM waited.
        waited_ms: u128,
    },
}

/// How long [`pause_all`] and [`read_steal_msrs`] wait for the threads.
pub const WAIT_LIMIT: Duration = Duration::from_secs(5);

/// Pauses the vCPU threads: each parks before running guest code again. Returns once every
/// live thread is parked; on timeout the VM is resumed and the error says how many parked.
pub fn pause_all(shared: &VcpuShared, threads: &[JoinHandle<()>]) -> Result<(), PauseError> {
    *lock(&shared.pause_lock) = true;
    shared.paused.store(true, Ordering::Release);
    let start = Instant::now();
    loop {
        let alive = threads.iter().filter(|t| !t.is_finished()).count();
        let parked = shared.parked.load(Ordering::Acquire);
        if parked >= alive {
            return Ok(());
        }
        if start.elapsed() > WAIT_LIMIT {
            resume_all(shared);
            return Err(PauseError::Timeout {
                parked,
                total: alive,
                waited_ms: start.elapsed().as_millis(),
            });
        }
        kick_all(threads);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Lets parked vCPU threads run guest code again.
pub fn resume_all(shared: &VcpuShared) {
    let mut paused = lock(&shared.pause_lock);
    *paused = false;
    shared.paused.store(false, Ordering::Release);
    shared.resume.notify_all();
}

/// Asks every vCPU thread for its `MSR_KVM_STEAL_TIME` and waits for the answers (at most
/// [`WAIT_LIMIT`]). Returns what each vCPU answered.
pub fn read_steal_msrs(shared: &VcpuShared, threads: &[JoinHandle<()>]) -> Vec<MsrRead> {
    let tickets: Vec<_> = shared.msrs.iter().map(MsrSlot::request).collect();
    let answer = |i: usize| {
        shared
            .msrs
            .get(i)
            .and_then(|m| tickets.get(i).and_then(|t| m.answer(*t)))
    };
    let start = Instant::now();
    loop {
        let pending: Vec<usize> = (0..shared.msrs.len())
            .filter(|i| answer(*i).is_none())
            // A thread that ended (its vCPU asked for power off or reset) never answers.
            .filter(|i| threads.get(*i).is_some_and(|t| !t.is_finished()))
            .collect();
        if pending.is_empty() || start.elapsed() > WAIT_LIMIT {
            break;
        }
        for i in pending {
            if let Some(thread) = threads.get(i) {
                if let Err(e) = thread.kill(kick_signal()) {
                    log::debug!("kicking vCPU {i}: {e}");
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    (0..shared.msrs.len())
        .map(|i| answer(i).unwrap_or(MsrRead::NoAnswer))
        .collect()
}

/// Stops the vCPU threads: sets the stop flag, wakes parked threads and kicks each thread
/// out of `KVM_RUN` until it returns (a kick can land just before a thread re-enters
/// KVM_RUN, so it is repeated).
pub fn stop_all(shared: &VcpuShared, threads: Vec<JoinHandle<()>>) {
    shared.stop.store(true, Ordering::Release);
    resume_all(shared);
    for thread in threads {
        while !thread.is_finished() {
            if let Err(e) = thread.kill(kick_signal()) {
                log::debug!("kicking a vCPU thread: {e}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
}

/// The element size and the data of the `KVM_EXIT_IO` the vCPU just returned with: `count`
/// elements of `size` bytes (`count` > 1 for a string instruction). Call it only right
/// after `KVM_RUN` returned `VcpuExit::IoIn`/`IoOut`.
fn io_elements(vcpu: &mut VcpuFd) -> (usize, &mut [u8]) {
    let run = vcpu.get_kvm_run();
    // SAFETY: the exit reason is KVM_EXIT_IO (the caller matched IoIn/IoOut), so the kernel
    // filled the `io` member of the exit union; it is plain integers.
    let io = unsafe { run.__bindgen_anon_1.io };
    let len = usize::from(io.size) * io.count as usize;
    let base = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
    // SAFETY: for KVM_EXIT_IO the kernel places the `count * size` data bytes at
    // `data_offset` inside this vCPU's kvm_run mapping (the page after the structure), which
    // lives as long as the VcpuFd borrowed here; kvm-ioctls builds the same slice for
    // VcpuExit::IoIn/IoOut, which no longer exists at this point.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
    (usize::from(io.size), data)
}

/// The vCPU's state where it stopped, for the triple-fault message: where it ran, its paging
/// and mode, and the descriptor tables the failed exception delivery used (on Intel; KVM on
/// AMD re-initializes the vCPU first, which the message then says). A state KVM will not
/// give is named instead.
fn shutdown_state(vcpu: &VcpuFd) -> String {
    let (regs, sregs) = (vcpu.get_regs(), vcpu.get_sregs());
    if let (Ok(r), Ok(s)) = (&regs, &sregs) {
        if r.rip == 0xfff0 && s.cs.base == 0xffff_0000 && s.cr0 & 1 == 0 {
            // KVM on AMD (shutdown_interception) re-initializes the vCPU before it reports
            // the shutdown, because the VMCB is undefined after one.
            return "the vCPU is already back in its INIT state (KVM on AMD resets it before \
                    reporting a shutdown), so where it faulted is not known"
                .to_owned();
        }
    }
    let regs = match regs {
        Ok(r) => format!("rip {:#x} rsp {:#x} rflags {:#x}", r.rip, r.rsp, r.rflags),
        Err(e) => format!("registers unavailable ({e})"),
    };
    let sregs = match sregs {
        Ok(s) => format!(
            "cs {:#x} (base {:#x}, l {}) cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} \
             idt {:#x}+{:#x} gdt {:#x}+{:#x} tr {:#x} interrupt_bitmap {:x?}",
            s.cs.selector,
            s.cs.base,
            s.cs.l,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.idt.base,
            s.idt.limit,
            s.gdt.base,
            s.gdt.limit,
            s.tr.selector,
            s.interrupt_bitmap
        ),
        Err(e) => format!("special registers unavailable ({e})"),
    };
    format!("{regs}; {sregs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eagain_backoff_leaves_the_first_retry_alone_and_is_bounded() {
        // The INIT that starts an AP gives one EAGAIN: retry at once.
        assert_eq!(eagain_backoff(0), None);
        assert_eq!(eagain_backoff(1), None);
        // Then growing pauses, never above the cap.
        let pauses: Vec<Duration> = (2..40).filter_map(eagain_backoff).collect();
        assert_eq!(pauses.len(), 38);
        assert_eq!(pauses[0], Duration::from_micros(100));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses.last(), Some(&EAGAIN_MAX_PAUSE));
        assert_eq!(eagain_backoff(u32::MAX), Some(EAGAIN_MAX_PAUSE));
        // A spinning vCPU thread is woken at most a few hundred times per second.
        let first_second: Duration = (2..200).filter_map(eagain_backoff).sum();
        assert!(first_second >= Duration::from_secs(1), "{first_second:?}");
    }
}
