//! One VM from creation to teardown, and the boot/reboot loop around it.
//!
//! KVM's order, which this follows step by step:
//! 1. `KVM_CREATE_VM`, then at once the PV VM-wide settings: disable-exits is accepted only
//!    while the VM has no vCPU, halt polling any time (glue hook `vm_created`);
//! 2. the in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`, PIT) and guest RAM;
//! 3. each vCPU: `KVM_SET_CPUID2` with the topology, the Hyper-V block at 0x40000000 with
//!    `kvm_hyperv=on` (read once from KVM, before the first vCPU's CPUID) and the KVM leaves
//!    (at 0x40000100 beside Hyper-V, else 0x40000000), PV CPUID enforcement and SynIC,
//!    before any MSR is written (with enforcement on, KVM refuses MSRs of features the
//!    CPUID does not advertise); then FPU, MSRs, LAPIC, and for the boot vCPU the 64-bit
//!    entry state;
//! 4. one thread per vCPU.
//!
//! Interrupt controller: KVM's in-kernel one (IOAPIC, PIC, PIT and each vCPU's local APIC).
//! Consequences: HLT is handled inside KVM (a halted vCPU sleeps in the kernel, with halt
//! polling, and never exits to this VMM; `halt_exits` counts those halts unless HLT exits are
//! disabled, in which case the vCPU halts in guest mode and the count stays 0); PV send-IPI,
//! PV sched yield and PV unhalt kicks are served by KVM without user-space exits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use hypervisor_glue::change::ImmediateAction;
use hypervisor_glue::counters::{vcpu_key, MsrRead, StealTime, VM_KEY};
use hypervisor_glue::hooks::HookError;
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use pv_features::config::EffectivePv;
use pv_features::cpuid::CpuidBlocks;
use pv_features::cpuid::KvmFeatures;
use pv_features::host::HostPv;
use pv_features::hyperv::HypervReport;
use pv_features::setup::PvVm;
use pv_features::stats::{Stats, StatsFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::{self, IrqTrigger, PioBus, SharedSerial};
use crate::exit_counters::VmmExits;
use crate::ram::GuestRam;
use crate::seccomp::Filters;
use crate::sink::Sink;
use crate::topology::{advertise_tsc_deadline, patch_vcpu_cpuid, Topology};
use crate::vcpu::{self, VcpuEvent, VcpuShared};
use crate::{acpi, boot, layout};

/// Where the identity-map page and TSS go for Intel's real-mode emulation (below the
/// 4 GiB boundary, inside the hole, as QEMU and Firecracker place them).
const TSS_ADDRESS: usize = 0xfffb_d000;

/// Everything needed to build the VM again at each boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The kernel: a bzImage, or an ELF image with a PVH entry note.
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Ask for transparent huge pages for guest RAM (`memory.thp`).
    pub thp: bool,
    /// vCPUs at boot.
    pub vcpus: u32,
    /// The guest's CPU shape.
    pub topology: Topology,
    /// The guest's physical address width.
    pub phys_bits: u8,
    /// KVM's Hyper-V emulation (`kvm_hyperv=on`): the Hyper-V block at 0x40000000.
    pub kvm_hyperv: bool,
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
        /// Why.
        #[source]
        source: crate::ram::RamError,
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

/// How the vCPU threads of a VM are run: where their events go, tagged with which
/// generation, under which seccomp filters.
#[derive(Debug, Clone, Copy)]
pub struct VcpuThreads<'a> {
    /// The VM's generation (one per boot of the process's VM).
    pub generation: u64,
    /// Where the vCPUs' events go (the main loop).
    pub events: &'a Sink<VcpuEvent>,
    /// The filters; each vCPU thread installs the vCPU one.
    pub filters: &'a Filters,
}

/// A built and running (or paused) VM: its KVM file descriptors, guest RAM, vCPU threads and
/// the statistics files opened when it was created.
#[derive(Debug)]
pub struct RunningVm {
    vm: VmFd,
    pv: PvVm,
    /// Guest RAM; dropped after `vm` (field order), so KVM's VM goes before the mappings.
    ram: GuestRam,
    shared: Arc<VcpuShared>,
    threads: Vec<JoinHandle<()>>,
    vm_stats: Option<StatsFd>,
    vcpu_stats: Vec<Option<StatsFd>>,
    phys_bits: u8,
    cpuid_blocks: CpuidBlocks,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Opens a statistics file, logging (not failing) where the host has none.
fn open_stats(fd: &impl std::os::fd::AsRawFd, what: &str) -> Option<StatsFd> {
    match StatsFd::open(fd) {
        Ok(stats) => Some(stats),
        Err(e) => {
            log::warn!("no KVM statistics for {what}: {e}");
            None
        }
    }
}

impl RunningVm {
    /// Builds the VM described by `spec` with the PV state `effective` on a host with the
    /// capabilities `host`, and starts its vCPU threads as `threads` says (events tagged
    /// with the generation, the vCPU seccomp filter).
    pub fn start(
        kvm: &Kvm,
        host: &HostPv,
        spec: &VmSpec,
        effective: EffectivePv,
        serial: &SharedSerial,
        serial_irq: &EventFd,
        threads: &VcpuThreads<'_>,
    ) -> Result<Self, VmError> {
        let VcpuThreads {
            generation,
            events: events_tx,
            filters,
        } = *threads;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        // Before any vCPU exists: KVM refuses disable-exits afterwards.
        let mut pv = hypervisor_glue::hooks::vm_created(&vm, effective)?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        let ram = guest_memory(&vm, spec.memory, spec.thp)?;
        let mem = ram.mem();
        vm.register_irqfd(serial_irq, devices::COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD for the serial port"))?;

        let rsdp = acpi::write_tables(mem, spec.vcpus)?;
        let entry = boot::load_kernel(
            mem,
            &spec.kernel,
            spec.initramfs.as_deref(),
            &spec.cmdline,
            &layout::e820_map(spec.memory),
            rsdp,
        )?;
        boot::write_boot_tables(mem, &entry)?;

        let mut supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        // The in-kernel LAPIC (KVM_CREATE_IRQCHIP above) emulates TSC-deadline mode where
        // KVM has the capability; older kernels (6.1 in the lab) leave the bit out of the
        // supported list, so it is added here, before any vCPU's CPUID is set.
        if !kvm.check_extension(Cap::TscDeadlineTimer) {
            log::warn!(
                "the host's KVM lacks KVM_CAP_TSC_DEADLINE_TIMER: the guest's local APIC \
                 timer has no TSC-deadline mode"
            );
        } else if !advertise_tsc_deadline(&mut supported) {
            log::warn!("the host's CPUID has no leaf 1: TSC-deadline timer not advertised");
        }
        let vm_stats = open_stats(&vm, "the VM");
        let mut vcpus = Vec::with_capacity(spec.vcpus as usize);
        let mut vcpu_stats = Vec::with_capacity(spec.vcpus as usize);
        let mut cpuid_blocks = CpuidBlocks::default();
        for id in 0..u64::from(spec.vcpus) {
            let vcpu = hypervisor_glue::hooks::create_vcpu(&pv, &vm, id)?;
            if id == 0 && spec.kvm_hyperv {
                // Once, before any vCPU's CPUID: from the system fd, or this vCPU's where
                // the host answers only there.
                let leaves = hypervisor_glue::hooks::hyperv_leaves(kvm, host, Some(&vcpu))?;
                hypervisor_glue::hooks::enable_hyperv(&mut pv, leaves)?;
            }
            let mut cpuid = supported.clone();
            patch_vcpu_cpuid(&mut cpuid, id as u32, spec.topology);
            // CPUID (Hyper-V and KVM leaves, enforcement, SynIC) before any MSR.
            let blocks = hypervisor_glue::hooks::configure_vcpu_cpuid(&pv, &vcpu, id, &mut cpuid)?;
            if id == 0 {
                cpuid_blocks = blocks;
                if let (Some(base), Some(hv)) = (blocks.hyperv, pv.hyperv()) {
                    log::info!(
                        "Hyper-V leaves at {base:#x}: vendor \"{}\", highest leaf {:#x}, SynIC {}",
                        hv.vendor(),
                        hv.max_leaf(),
                        hv.synic().map_or("off", |cap| cap.name())
                    );
                }
                log::info!(
                    "KVM leaves at {}; features [{}], hints [{}], disabled exits [{}]",
                    blocks.kvm.map_or("none".to_owned(), |b| format!("{b:#x}")),
                    pv.effective().features,
                    pv.effective().hints,
                    pv.effective().disable_exits
                );
            }
            boot::setup_common_vcpu(&vcpu)?;
            if id == 0 {
                boot::setup_boot_vcpu(&vcpu, entry)?;
            }
            // Opened now, while this thread owns the vCPU: reading the file later from
            // any thread is a plain pread.
            vcpu_stats.push(open_stats(&vcpu, "a vCPU"));
            vcpus.push(vcpu);
        }

        let shared = Arc::new(VcpuShared::new(
            generation,
            Arc::new(PioBus::new(serial.clone())),
            pv.dispatcher(spec.vcpus.saturating_sub(1), spec.phys_bits),
            vcpus.len(),
            events_tx.clone(),
        ));
        let mut threads = Vec::with_capacity(vcpus.len());
        for (id, vcpu) in vcpus.into_iter().enumerate() {
            let thread = vcpu::spawn(id as u64, vcpu, shared.clone(), filters).map_err(|source| {
                VmError::Os {
                    what: "starting a vCPU thread",
                    source,
                }
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
        Ok(Self {
            vm,
            pv,
            ram,
            shared,
            threads,
            vm_stats,
            vcpu_stats,
            phys_bits: spec.phys_bits,
            cpuid_blocks,
        })
    }

    /// Where the Hyper-V and KVM leaf blocks sit in the vCPUs' CPUID.
    pub fn cpuid_blocks(&self) -> CpuidBlocks {
        self.cpuid_blocks
    }

    /// The Hyper-V block the vCPUs got, if `kvm_hyperv=on`.
    pub fn hyperv(&self) -> Option<HypervReport> {
        self.pv.hyperv().map(|hv| hv.report())
    }

    /// The VM's generation (what its vCPUs tag their events with).
    pub fn generation(&self) -> u64 {
        self.shared.generation
    }

    /// The PV state the VM runs with (halt polling as last set).
    pub fn effective(&self) -> &EffectivePv {
        self.pv.effective()
    }

    /// Carries out a change plan's immediate actions on the live VM.
    pub fn apply_now(&mut self, actions: &[ImmediateAction]) -> Result<(), HookError> {
        hypervisor_glue::hooks::apply_now(&mut self.pv, &self.vm, actions)
    }

    /// Parks every vCPU thread before it runs guest code again.
    pub fn pause(&self) -> Result<(), vcpu::PauseError> {
        vcpu::pause_all(&self.shared, &self.threads)
    }

    /// Lets the vCPU threads run again.
    pub fn resume(&self) {
        vcpu::resume_all(&self.shared)
    }

    /// `vm.counters` in Cloud Hypervisor's `VmCounters` shape, an object of objects of
    /// integers: `kvm_vm` (the VM's KVM statistics), `kvm_vcpu<N>` (vCPU N's KVM statistics
    /// and its steal-time entries, as `hypervisor_glue::counters` names them for Cloud
    /// Hypervisor too), `vmm_exits` and `vmm_exits_vcpu<N>` (the exits that reached pv-vmm,
    /// by kind). Histograms are left out (a histogram is not one integer); a statistics
    /// file that cannot be read leaves its object out and is logged. What the steal-time
    /// record looks like beyond the numbers (an MSR value that locates no record, and why)
    /// is `vm.info`'s ([`RunningVm::steal_times`]).
    pub fn counters(&self) -> VmCounters {
        let mut out = VmCounters::new();
        let read = |what: &str, stats: Option<&StatsFd>| -> Option<Stats> {
            match stats.map(StatsFd::read).transpose() {
                Ok(stats) => stats,
                Err(e) => {
                    log::warn!("vm.counters: reading the {what} statistics: {e}");
                    None
                }
            }
        };
        if let Some(stats) = read("VM's", self.vm_stats.as_ref()) {
            out.insert(VM_KEY.to_owned(), scalars(&stats));
        }
        let steal = self.steal_times();
        let mut total = VmmExits::default();
        for id in 0..self.threads.len() {
            let stats = read(
                &format!("vCPU {id}'s"),
                self.vcpu_stats.get(id).and_then(Option::as_ref),
            );
            let mut entries = stats.as_ref().map(scalars).unwrap_or_default();
            if let Some(steal) = steal.get(id) {
                entries.extend(
                    steal
                        .counter_entries()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v)),
                );
            }
            out.insert(vcpu_key(id as u32), entries);
            let exits = self
                .shared
                .exits
                .get(id)
                .map(|e| e.snapshot())
                .unwrap_or_default();
            total = total.plus(exits);
            out.insert(format!("vmm_exits_vcpu{id}"), exits.entries());
        }
        out.insert("vmm_exits".to_owned(), total.entries());
        out
    }

    /// Each vCPU's steal-time record as its MSR locates it (read on the vCPU's thread, or
    /// directly while it is paused): a report, never an error, whatever the guest wrote
    /// into the MSR (an `invalid` record names the value and the problem).
    pub fn steal_times(&self) -> Vec<StealTime> {
        let advertised = self.effective().features.contains(KvmFeatures::STEAL_TIME);
        let msrs = if advertised {
            vcpu::read_steal_msrs(&self.shared, &self.threads)
        } else {
            Vec::new()
        };
        (0..self.threads.len())
            .map(|id| {
                let read = msrs.get(id).copied().unwrap_or(MsrRead::NoAnswer);
                StealTime::from_read(advertised, read, self.phys_bits, self.ram.mem())
            })
            .collect()
    }

    /// Stops the vCPU threads and tears the VM down.
    pub fn stop(self, serial_irq: &EventFd) {
        vcpu::stop_all(&self.shared, self.threads);
        if let Err(e) = self.vm.unregister_irqfd(serial_irq, devices::COM1_IRQ) {
            log::debug!("unregistering the serial irqfd: {e}");
        }
        // Guest RAM (`self.ram`) is unmapped only now, after every vCPU thread stopped and
        // after the VM's file descriptor closed (field order).
    }
}

/// `vm.counters`: Cloud Hypervisor's `VmCounters` shape, name to an object of integers.
pub type VmCounters = BTreeMap<String, BTreeMap<String, u64>>;

/// The statistics of `stats` that are one integer each (histograms left out).
fn scalars(stats: &Stats) -> BTreeMap<String, u64> {
    stats
        .values
        .iter()
        .filter_map(|(name, values)| match values.as_slice() {
            [one] => Some((name.clone(), *one)),
            _ => None,
        })
        .collect()
}

/// Allocates guest RAM (2 MiB aligned; transparent huge pages asked for when `thp` is set)
/// and registers each region as a KVM memory slot.
fn guest_memory(vm: &VmFd, size: u64, thp: bool) -> Result<GuestRam, VmError> {
    let (ram, refused) =
        GuestRam::new(&layout::ram_regions(size), thp).map_err(|source| VmError::Memory {
            bytes: size,
            source,
        })?;
    if let Some(e) = refused {
        let (advice, thp) = if thp {
            ("MADV_HUGEPAGE", "on")
        } else {
            ("MADV_NOHUGEPAGE", "off")
        };
        log::warn!("guest RAM: the host refused {advice} (memory.thp={thp}): {e}");
    }
    let mem = ram.mem();
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
        // SAFETY: the region is `ram`'s own mapping of exactly `region.len()` bytes; the
        // caller keeps `ram` alive until every vCPU thread has stopped and the VM is
        // closed, after which KVM no longer touches it.
        unsafe { vm.set_user_memory_region(slot_region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(ram)
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
