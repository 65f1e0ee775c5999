//! One VM from creation to teardown, and the boot/reboot loop around it.
//!
//! KVM's order, which this follows step by step:
//! 1. `KVM_CREATE_VM`, then at once the PV VM-wide settings: disable-exits is accepted only
//!    while the VM has no vCPU, halt polling any time (glue hook `vm_created`);
//! 2. the in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`, PIT) and guest RAM;
//! 3. each vCPU: `KVM_SET_CPUID2` with the topology and the KVM leaves, and PV CPUID
//!    enforcement, before any MSR is written (with enforcement on, KVM refuses MSRs of
//!    features the CPUID does not advertise); then FPU, MSRs, LAPIC, and for the boot vCPU
//!    the 64-bit entry state;
//! 4. one thread per vCPU.
//!
//! Interrupt controller: KVM's in-kernel one (IOAPIC, PIC, PIT and each vCPU's local APIC).
//! Consequences: HLT is handled inside KVM (a halted vCPU sleeps in the kernel, with halt
//! polling, and never exits to this VMM; `halt_exits` counts those halts unless HLT exits are
//! disabled, in which case the vCPU halts in guest mode and the count stays 0); PV send-IPI,
//! PV sched yield and PV unhalt kicks are served by KVM without user-space exits.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use pv_features::config::EffectivePv;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::{self, IrqTrigger, PioBus, SharedSerial, VmRequest};
use crate::topology::{patch_vcpu_cpuid, Topology};
use crate::vcpu::{self, Event, VcpuShared};
use crate::{acpi, boot, layout};

/// Where the identity-map page and TSS go for Intel's real-mode emulation (below the
/// 4 GiB boundary, inside the hole, as QEMU and Firecracker place them).
const TSS_ADDRESS: usize = 0xfffb_d000;

/// Everything needed to build the VM again at each boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs at boot.
    pub vcpus: u32,
    /// The guest's CPU shape.
    pub topology: Topology,
    /// The guest's physical address width.
    pub phys_bits: u8,
}

/// Errors of building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("{what}")]
    Kvm {
        /// Which operation.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Applying the PV state failed.
    #[error("applying the KVM PV features")]
    Pv(#[from] hypervisor_glue::hooks::HookError),
    /// Guest RAM could not be allocated.
    #[error("allocating {bytes} bytes of guest RAM")]
    Memory {
        /// How much was asked.
        bytes: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// Loading the kernel or setting the boot state failed.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// Writing the ACPI tables failed.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// An eventfd, signal handler or thread could not be set up.
    #[error("{what}")]
    Os {
        /// Which operation.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered off.
    PowerOff,
    /// The guest (or the API) asked for a reboot: build the VM again.
    Reboot,
    /// A vCPU failed; the message names the cause.
    Fatal(String),
    /// SIGINT or SIGTERM.
    Signal(i32),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Builds the VM described by `spec` with the PV state `effective`, boots it, and runs it
/// until it powers off, reboots, fails or a signal arrives.
pub fn run_once(
    kvm: &Kvm,
    spec: &VmSpec,
    effective: EffectivePv,
    serial: &SharedSerial,
    serial_irq: &EventFd,
    events: &Receiver<Event>,
    events_tx: &std::sync::mpsc::Sender<Event>,
) -> Result<Outcome, VmError> {
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    // Before any vCPU exists: KVM refuses disable-exits afterwards.
    let pv = hypervisor_glue::hooks::vm_created(&vm, effective)?;
    vm.set_tss_address(TSS_ADDRESS)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    let mem = guest_memory(&vm, spec.memory)?;
    vm.register_irqfd(serial_irq, devices::COM1_IRQ)
        .map_err(kvm_err("KVM_IRQFD for the serial port"))?;

    let rsdp = acpi::write_tables(&mem, spec.vcpus)?;
    boot::write_boot_tables(&mem)?;
    let entry = boot::load_linux(
        &mem,
        &spec.kernel,
        spec.initramfs.as_deref(),
        &spec.cmdline,
        &layout::e820_map(spec.memory),
        rsdp,
    )?;

    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::with_capacity(spec.vcpus as usize);
    for id in 0..u64::from(spec.vcpus) {
        let vcpu = hypervisor_glue::hooks::create_vcpu(&pv, &vm, id)?;
        let mut cpuid = supported.clone();
        patch_vcpu_cpuid(&mut cpuid, id as u32, spec.topology);
        // CPUID (with the KVM leaves and enforcement) before any MSR.
        let base = hypervisor_glue::hooks::configure_vcpu_cpuid(&pv, &vcpu, id, &mut cpuid)?;
        if id == 0 {
            log::info!(
                "KVM leaves at {}; features [{}], hints [{}], disabled exits [{}]",
                base.map_or("none".to_owned(), |b| format!("{b:#x}")),
                pv.effective().features,
                pv.effective().hints,
                pv.effective().disable_exits
            );
        }
        boot::setup_common_vcpu(&vcpu)?;
        if id == 0 {
            boot::setup_boot_vcpu(&vcpu, entry)?;
        }
        vcpus.push(vcpu);
    }

    let shared = Arc::new(VcpuShared {
        bus: Arc::new(PioBus::new(serial.clone())),
        dispatcher: pv.dispatcher(spec.vcpus.saturating_sub(1), spec.phys_bits),
        stop: AtomicBool::new(false),
        events: events_tx.clone(),
    });
    let mut threads = Vec::with_capacity(vcpus.len());
    for (id, vcpu) in vcpus.into_iter().enumerate() {
        let thread = vcpu::spawn(id as u64, vcpu, shared.clone()).map_err(|source| VmError::Os {
            what: "starting a vCPU thread",
            source,
        });
        match thread {
            Ok(t) => threads.push(t),
            Err(e) => {
                vcpu::stop_all(&shared, threads);
                return Err(e);
            }
        }
    }
    log::info!("booting {} vCPUs, {} MiB", spec.vcpus, spec.memory >> 20);

    let outcome = match events.recv() {
        Ok(Event::Request(VmRequest::PowerOff)) => Outcome::PowerOff,
        Ok(Event::Request(VmRequest::Reset)) => Outcome::Reboot,
        Ok(Event::Fatal(message)) => Outcome::Fatal(message),
        Ok(Event::Signal(sig)) => Outcome::Signal(sig),
        Err(_) => Outcome::Fatal("every event source is gone".to_owned()),
    };
    vcpu::stop_all(&shared, threads);
    if let Err(e) = vm.unregister_irqfd(serial_irq, devices::COM1_IRQ) {
        log::debug!("unregistering the serial irqfd: {e}");
    }
    // Drain what the stopped vCPUs may still have sent for this VM.
    while events.try_recv().is_ok() {}
    drop(mem);
    Ok(outcome)
}

/// Allocates guest RAM and registers each region as a KVM memory slot.
fn guest_memory(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, VmError> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&layout::ram_regions(size)).map_err(|source| {
        VmError::Memory {
            bytes: size,
            source,
        }
    })?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| VmError::Os {
                what: "finding the host address of guest RAM",
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            })?;
        let slot_region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region is `mem`'s own mapping of exactly `region.len()` bytes; the
        // caller keeps `mem` alive until every vCPU thread has stopped, after which the VM
        // no longer touches it.
        unsafe { vm.set_user_memory_region(slot_region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(mem)
}

/// A fresh serial device writing to `out`, with its interrupt eventfd.
pub fn new_serial(out: devices::SerialOut) -> Result<(SharedSerial, EventFd), VmError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::Os {
        what: "creating the serial interrupt eventfd",
        source,
    })?;
    let trigger = irq.try_clone().map_err(|source| VmError::Os {
        what: "cloning the serial interrupt eventfd",
        source,
    })?;
    let serial = vm_superio::Serial::new(IrqTrigger(trigger), out);
    Ok((Arc::new(std::sync::Mutex::new(serial)), irq))
}
