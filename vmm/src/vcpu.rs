//! One thread per vCPU: the run loop and its exit match, and how the VMM stops the threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};
use pv_features::hypercall::Dispatcher;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::{PioBus, VmRequest};

/// What the vCPU threads, the signal thread and the API tell the VMM's main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device asked the VMM to power off or reset.
    Request(VmRequest),
    /// A vCPU hit something the VMM cannot continue from.
    Fatal(String),
    /// SIGINT or SIGTERM arrived.
    Signal(i32),
}

/// State the vCPU threads of one VM share.
#[derive(Debug)]
pub struct VcpuShared {
    /// The port I/O devices.
    pub bus: Arc<PioBus>,
    /// Hypercalls that reach user space go through it.
    pub dispatcher: Dispatcher,
    /// Set when the VM is being torn down.
    pub stop: AtomicBool,
    /// The main loop's inbox.
    pub events: Sender<Event>,
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

/// Starts the thread of vCPU `id`.
pub fn spawn(
    id: u64,
    mut vcpu: VcpuFd,
    shared: Arc<VcpuShared>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || run_loop(id, &mut vcpu, &shared))
}

fn run_loop(id: u64, vcpu: &mut VcpuFd, shared: &VcpuShared) {
    let send = |event| {
        // The main loop may already be gone during teardown; nothing to do then.
        let _ = shared.events.send(event);
    };
    while !shared.stop.load(Ordering::Acquire) {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if let Some(request) = shared.bus.write(port, data) {
                    send(Event::Request(request));
                    return;
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => shared.bus.read(port, data),
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
            Ok(VcpuExit::Hlt) => {}
            Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => {
                send(Event::Fatal(format!(
                    "vCPU {id}: the guest triple-faulted (KVM_EXIT_SHUTDOWN)"
                )));
                return;
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                let event = match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Event::Request(VmRequest::PowerOff),
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => Event::Request(VmRequest::Reset),
                    other => Event::Fatal(format!("vCPU {id}: system event {other} (crash)")),
                };
                send(event);
                return;
            }
            Ok(VcpuExit::InternalError) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: for KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal`
                // member of the exit union; reading it is reading plain integers.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                send(Event::Fatal(format!(
                    "vCPU {id}: KVM internal error (suberror {suberror})"
                )));
                return;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                send(Event::Fatal(format!(
                    "vCPU {id}: VM entry failed (hardware reason {reason:#x} on host CPU {cpu})"
                )));
                return;
            }
            Ok(other) => {
                send(Event::Fatal(format!(
                    "vCPU {id}: unexpected exit {other:?}"
                )));
                return;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                send(Event::Fatal(format!("vCPU {id}: KVM_RUN failed: {e}")));
                return;
            }
        }
    }
}

/// Stops the vCPU threads: sets the stop flag and kicks each thread out of `KVM_RUN`
/// until it returns (a kick can land just before a thread re-enters KVM_RUN, so it is
/// repeated).
pub fn stop_all(shared: &VcpuShared, threads: Vec<JoinHandle<()>>) {
    shared.stop.store(true, Ordering::Release);
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
