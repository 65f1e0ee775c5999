//! The calls a Cloud Hypervisor shaped VMM makes, each documented with the place in Cloud
//! Hypervisor where it belongs. Each is thin: the policy lives in `pv-features`, the order in
//! which KVM needs things lives here and in [`PvVm`].
//!
//! The life of a VM, in call order:
//!
//! 1. [`CpusConfig::validate`](crate::cpus::CpusConfig::validate) gives the
//!    [`EffectivePv`];
//! 2. [`vm_created`] right after `KVM_CREATE_VM`, before any vCPU;
//! 3. per vCPU: [`create_vcpu`]; with `kvm_hyperv=on`, once, before the first vCPU's CPUID:
//!    [`hyperv_leaves`] and [`enable_hyperv`]; then [`generate_cpuid`] (or the VMM's own
//!    CPUID generation followed by) [`configure_vcpu_cpuid`], then, on restore,
//!    [`restore_msrs`];
//! 4. in the run loop: [`handle_hypercall`] for `KVM_EXIT_HYPERCALL`;
//! 5. on `vm.pv`: [`plan_change`](crate::change::plan_change), then [`apply_now`];
//! 6. on snapshot: [`save_msrs`]; on restore: [`check_restore`] before step 2;
//! 7. on reboot: [`reboot`], then steps 1 to 3 again on the new KVM VM.

use kvm_bindings::{kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::{HypercallExit, Kvm, VcpuFd, VmFd};
use pv_features::config::{EffectivePv, PvConfig};
use pv_features::cpuid::{
    merge_kvm_leaves, remove_kvm_leaves, CpuidBlocks, CpuidError, KvmFeatures,
};
use pv_features::host::HostPv;
use pv_features::hypercall::{Dispatcher, HypercallAction, SendIpi};
use pv_features::hyperv::{supported_hv_cpuid, HvCpuidSource, HypervError, HypervLeaves};
use pv_features::msrs::{restore_entries, save_restore_list, MsrError};
use pv_features::setup::{PvVm, SetupError};

use crate::change::{at_reboot, ImmediateAction, PvPatch};

/// Errors of the hooks; each says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Disabling exits or setting halt polling on the new VM failed.
    #[error("applying the PV configuration to the new VM, before any vCPU")]
    VmCreated(#[source] SetupError),
    /// Creating a vCPU failed.
    #[error("creating vCPU {vcpu}")]
    CreateVcpu {
        /// The vCPU id.
        vcpu: u64,
        /// The cause.
        #[source]
        source: SetupError,
    },
    /// The host cannot give the VM the Hyper-V leaves (`kvm_hyperv=on`).
    #[error("kvm_hyperv=on: the host's KVM lacks {0}")]
    HypervUnsupported(&'static str),
    /// The host answers `KVM_GET_SUPPORTED_HV_CPUID` only on a vCPU, and none was given.
    #[error("kvm_hyperv=on: this host reports its Hyper-V leaves only on a vCPU file descriptor; pass the first vCPU")]
    HypervNeedsVcpu,
    /// Reading or checking the host's Hyper-V leaves failed.
    #[error("reading the host's Hyper-V leaves for kvm_hyperv=on")]
    HypervLeaves(#[source] HypervError),
    /// The Hyper-V leaves came too late.
    #[error("giving the VM the Hyper-V leaves")]
    EnableHyperv(#[source] SetupError),
    /// Placing the KVM leaves in a CPUID list failed.
    #[error("placing the KVM PV leaves in the generated CPUID")]
    GenerateCpuid(#[source] CpuidError),
    /// The PV part of the CPUID the VMM builds for its vCPUs failed.
    #[error("the PV part of the vCPUs' CPUID")]
    VmmCpuid(#[source] SetupError),
    /// Setting a vCPU's CPUID or PV enforcement failed.
    #[error("setting up the PV CPUID of vCPU {vcpu}")]
    ConfigureVcpu {
        /// The vCPU id.
        vcpu: u64,
        /// The cause.
        #[source]
        source: SetupError,
    },
    /// A saved MSR set cannot be restored on this vCPU.
    #[error("restoring the PV MSRs of vCPU {vcpu}")]
    MsrList {
        /// The vCPU id.
        vcpu: u64,
        /// The cause.
        #[source]
        source: MsrError,
    },
    /// `KVM_GET_MSRS` or `KVM_SET_MSRS` failed.
    #[error("{op} of the PV MSRs on vCPU {vcpu}")]
    MsrIoctl {
        /// `KVM_GET_MSRS` or `KVM_SET_MSRS`.
        op: &'static str,
        /// The vCPU id.
        vcpu: u64,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM processed only part of an MSR list.
    #[error("{op} on vCPU {vcpu} stopped at MSR {index:#x}: {done} of {total} done")]
    MsrPartial {
        /// `KVM_GET_MSRS` or `KVM_SET_MSRS`.
        op: &'static str,
        /// The vCPU id.
        vcpu: u64,
        /// The first MSR KVM refused.
        index: u32,
        /// How many entries KVM processed.
        done: usize,
        /// How many entries there were.
        total: usize,
    },
    /// A change for the live VM failed.
    #[error("applying a PV change to the running VM")]
    ApplyNow(#[source] SetupError),
    /// The snapshot's PV state cannot be reproduced here.
    #[error(
        "restoring a snapshot: this host cannot give the guest the PV state it was saved with: {0}"
    )]
    RestoreUnsupported(String),
}

/// Applies the VM-wide PV state (disabled exits, halt polling) to a new KVM VM.
///
/// **Cloud Hypervisor:** `vmm/src/vm.rs`, `Vm::new`: right after the hypervisor creates the
/// KVM VM (`hypervisor.create_vm()`), before `CpuManager::new` and any vCPU. KVM accepts
/// disabled exits only while the VM has no vCPU; the returned [`PvVm`] enforces that order.
pub fn vm_created(vm: &VmFd, effective: EffectivePv) -> Result<PvVm, HookError> {
    log::info!(
        "PV state: features [{}], hints [{}], disabled exits [{}], halt_poll_ns {:?}",
        effective.features,
        effective.hints,
        effective.disable_exits,
        effective.halt_poll_ns
    );
    PvVm::configure_vm(vm, effective).map_err(HookError::VmCreated)
}

/// Creates vCPU `id` and records that vCPUs exist (from then on exits stay as they are).
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, `CpuManager::create_vcpu`, in place of its
/// `vm.create_vcpu(id, ...)`.
pub fn create_vcpu(pv: &PvVm, vm: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
    pv.create_vcpu(vm, id)
        .map_err(|source| HookError::CreateVcpu { vcpu: id, source })
}

/// Records that the VMM is about to create a vCPU itself (its hypervisor layer does, as
/// Cloud Hypervisor's does): from then on the VM's exits stay as they are.
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, `CpuManager::create_vcpu`, right before its
/// `vm.create_vcpu(id, ...)`.
pub fn vcpu_creating(pv: &PvVm) {
    pv.record_vcpu_created();
}

/// The PV part of the CPUID the VMM builds for its vCPUs: the KVM leaves of the effective
/// features and hints in place of the host's (at 0x40000100 when the list already holds a
/// Hyper-V block at 0x40000000; none for `kvm_pv=off`), MONITOR shown exactly when MWAIT
/// exits are disabled. Returns where the KVM leaves went.
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, `CpuManager::new`, on the list
/// `arch::generate_common_cpuid` returns (after its Hyper-V leaves), before any vCPU is
/// configured with it.
pub fn vmm_cpuid(pv: &PvVm, cpuid: &mut CpuId) -> Result<Option<u32>, HookError> {
    pv.vmm_cpuid(cpuid).map_err(HookError::VmmCpuid)
}

/// After the VMM set vCPU `id`'s CPUID itself (`KVM_SET_CPUID2` with [`vmm_cpuid`]'s list):
/// PV CPUID enforcement on, which KVM holds per vCPU.
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, `CpuManager::configure_vcpu`, after
/// `Vcpu::configure` (whose `arch::configure_vcpu` sets the CPUID), before MSRs are restored.
pub fn vcpu_cpuid_set(pv: &PvVm, vcpu: &VcpuFd, id: u64) -> Result<(), HookError> {
    pv.cpuid_set(vcpu, id)
        .map_err(|source| HookError::ConfigureVcpu { vcpu: id, source })
}

/// Puts the KVM leaves of `effective` into a generated CPUID list, replacing any KVM block
/// (the one `KVM_GET_SUPPORTED_CPUID` reports included), or removes them for `kvm_pv=off`.
/// Returns the base used: 0x40000000, or 0x40000100 when a Hyper-V block holds 0x40000000.
///
/// **Cloud Hypervisor:** `arch/src/x86_64/mod.rs`, `generate_common_cpuid`, where it patches
/// the KVM leaves of the hypervisor's supported CPUID. With `kvm_hyperv=on` call it after
/// the Hyper-V leaves are inserted, instead of deleting the KVM leaves: they then move to
/// 0x40000100 and the guest keeps every KVM PV feature.
pub fn generate_cpuid(
    effective: &EffectivePv,
    cpuid: &mut CpuId,
) -> Result<Option<u32>, HookError> {
    if effective.leaves {
        merge_kvm_leaves(cpuid, effective.features, effective.hints)
            .map(Some)
            .map_err(HookError::GenerateCpuid)
    } else {
        remove_kvm_leaves(cpuid);
        Ok(None)
    }
}

/// The Hyper-V leaves this host can give a VM: KVM's `KVM_GET_SUPPORTED_HV_CPUID`, from the
/// system file descriptor, or from `vcpu` where the host answers only there, trimmed to what
/// the VM gets ([`HypervLeaves::from_supported`]: SynIC only where the host can enable it).
///
/// **Cloud Hypervisor:** `arch/src/x86_64/mod.rs`, `generate_common_cpuid`, in place of the
/// Hyper-V leaves it writes itself when `kvm_hyperv` is on (and instead of deleting the KVM
/// leaves: [`configure_vcpu_cpuid`] then puts them at 0x40000100).
pub fn hyperv_leaves(
    kvm: &Kvm,
    host: &HostPv,
    vcpu: Option<&VcpuFd>,
) -> Result<HypervLeaves, HookError> {
    if let Some(missing) = host.hyperv_lacks() {
        return Err(HookError::HypervUnsupported(missing));
    }
    let (supported, fd) = match host.hyperv_cpuid {
        Some(HvCpuidSource::System) => (supported_hv_cpuid(kvm), "system"),
        _ => {
            let vcpu = vcpu.ok_or(HookError::HypervNeedsVcpu)?;
            (supported_hv_cpuid(vcpu), "vCPU")
        }
    };
    let supported =
        supported.map_err(|source| HookError::HypervLeaves(HypervError::Ioctl { fd, source }))?;
    let leaves = HypervLeaves::from_supported(supported.as_slice(), host.hyperv_synic)
        .map_err(HookError::HypervLeaves)?;
    for dropped in leaves.dropped() {
        log::info!(
            "kvm_hyperv=on: Hyper-V {} not offered: {}",
            dropped.feature,
            dropped.reason
        );
    }
    Ok(leaves)
}

/// Gives every vCPU of the VM the Hyper-V block (at 0x40000000, the KVM leaves beside it at
/// 0x40000100) and the per-vCPU capabilities it needs (SynIC).
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, `CpuManager::new`, where `kvm_hyperv` is read:
/// after [`hyperv_leaves`], before the first vCPU is configured.
pub fn enable_hyperv(pv: &mut PvVm, leaves: HypervLeaves) -> Result<(), HookError> {
    pv.set_hyperv(leaves).map_err(HookError::EnableHyperv)
}

/// Sets a vCPU's CPUID with the KVM leaves (placed as [`generate_cpuid`] does, beside the
/// Hyper-V block from [`enable_hyperv`] if any), turns PV CPUID enforcement on and SynIC
/// where the Hyper-V leaves advertise it. Returns where each block sits.
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, `Vcpu::configure` → `arch::configure_vcpu`
/// (`arch/src/x86_64/mod.rs`), in place of its `set_cpuid2`: after the per-vCPU patches
/// (APIC id, topology leaves), before any MSR is set or restored.
pub fn configure_vcpu_cpuid(
    pv: &PvVm,
    vcpu: &VcpuFd,
    id: u64,
    cpuid: &mut CpuId,
) -> Result<CpuidBlocks, HookError> {
    pv.configure_vcpu(vcpu, id, cpuid)
        .map_err(|source| HookError::ConfigureVcpu { vcpu: id, source })
}

/// The dispatcher for this VM's hypercall exits: its advertised features and enforcement.
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, built once per VM by the `CpuManager` (with the
/// highest APIC id, `max_vcpus - 1` in Cloud Hypervisor's x2APIC numbering, and
/// `max_phys_bits`) and shared with the vCPU threads.
pub fn hypercall_dispatcher(pv: &PvVm, max_apic_id: u32, phys_bits: u8) -> Dispatcher {
    pv.dispatcher(max_apic_id, phys_bits)
}

/// Answers a `KVM_EXIT_HYPERCALL` through pv-features' dispatcher: writes the guest's return
/// value into the exit, delivers a SEND_IPI through `deliver` (once per existing destination
/// APIC id; it returns whether that APIC took the interrupt), and returns what else the VMM
/// has to do (`None` when the guest got an error code).
///
/// **Cloud Hypervisor:** `vmm/src/cpu.rs`, the vCPU thread's run loop `match vcpu.run()`, a
/// `VmExit::Hypercall` arm (KVM sends only the hypercalls enabled with
/// `KVM_CAP_EXIT_HYPERCALL` to user space; with the in-kernel APIC it handles SEND_IPI,
/// KICK_CPU and SCHED_YIELD itself).
pub fn handle_hypercall(
    dispatcher: &Dispatcher,
    exit: &mut HypercallExit<'_>,
    deliver: impl FnMut(&SendIpi, u32) -> bool,
) -> Option<HypercallAction> {
    let action = dispatcher.handle_exit(exit, deliver);
    log::trace!("hypercall {} -> {:#x}, {action:?}", exit.nr, *exit.ret);
    action
}

/// The PV MSRs to save for a vCPU advertising `features`, in restore order.
///
/// **Cloud Hypervisor** needs none of the MSR hooks: its vCPU state (`vcpu.state()`, in
/// `vmm/src/cpu.rs`) already holds every MSR of KVM's index list, these among them, and
/// restores them after the saved CPUID. A VMM that saves a fixed MSR list adds these.
pub fn msrs_to_save(features: KvmFeatures) -> Vec<u32> {
    save_restore_list(features)
}

/// Reads the PV MSRs of a vCPU advertising `features` (see [`msrs_to_save`]).
///
/// Call it with the vCPU paused (see [`msrs_to_save`] for Cloud Hypervisor).
pub fn save_msrs(
    vcpu: &VcpuFd,
    id: u64,
    features: KvmFeatures,
) -> Result<Vec<(u32, u64)>, HookError> {
    let indices = msrs_to_save(features);
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|index| kvm_msr_entry {
            index: *index,
            ..Default::default()
        })
        .collect();
    let mut msrs = Msrs::from_entries(&entries).map_err(|_| HookError::MsrList {
        vcpu: id,
        source: MsrError::TooMany,
    })?;
    let done = vcpu
        .get_msrs(&mut msrs)
        .map_err(|source| HookError::MsrIoctl {
            op: "KVM_GET_MSRS",
            vcpu: id,
            source,
        })?;
    check_done("KVM_GET_MSRS", id, &msrs, done)?;
    Ok(msrs.as_slice().iter().map(|e| (e.index, e.data)).collect())
}

/// Restores saved PV MSRs of a vCPU advertising `features`, in restore order. Refuses,
/// before touching KVM, MSRs of features the vCPU does not advertise and duplicates; MSRs
/// that are not PV MSRs are left to the caller.
///
/// Call it after [`configure_vcpu_cpuid`] on that vCPU: with enforcement on, KVM refuses
/// the MSRs of features the CPUID does not advertise (see [`msrs_to_save`] for Cloud
/// Hypervisor).
pub fn restore_msrs(
    vcpu: &VcpuFd,
    id: u64,
    saved: &[(u32, u64)],
    features: KvmFeatures,
) -> Result<(), HookError> {
    let msrs = restore_entries(saved, features)
        .map_err(|source| HookError::MsrList { vcpu: id, source })?;
    if msrs.as_slice().is_empty() {
        return Ok(());
    }
    let done = vcpu.set_msrs(&msrs).map_err(|source| HookError::MsrIoctl {
        op: "KVM_SET_MSRS",
        vcpu: id,
        source,
    })?;
    check_done("KVM_SET_MSRS", id, &msrs, done)
}

fn check_done(op: &'static str, vcpu: u64, msrs: &Msrs, done: usize) -> Result<(), HookError> {
    let entries = msrs.as_slice();
    match entries.get(done) {
        Some(refused) => Err(HookError::MsrPartial {
            op,
            vcpu,
            index: refused.index,
            done,
            total: entries.len(),
        }),
        None => Ok(()),
    }
}

/// Checks that this host can give a restored guest exactly the PV state it was saved with
/// (its CPUID cannot change under it), and returns that state for [`vm_created`]. The saved
/// state is used as is, not resolved again.
///
/// **Cloud Hypervisor:** `vmm/src/kvm_pv.rs`, `KvmPv::new`, which `CpuManager::new` calls
/// with the state its snapshot kept (`KvmPvSnapshot`) when a VM is restored or received by
/// migration, before the first vCPU.
pub fn check_restore(
    saved: &EffectivePv,
    host: &HostPv,
    vmm_backs: KvmFeatures,
) -> Result<EffectivePv, HookError> {
    let mut missing = Vec::new();
    let host_lacks = saved.features - host.backable();
    if !host_lacks.is_empty() {
        missing.push(format!("the host's KVM lacks [{host_lacks}]"));
    }
    let vmm_lacks = (saved.features & KvmFeatures::VMM_PROVIDED) - vmm_backs;
    if !vmm_lacks.is_empty() {
        missing.push(format!("this VMM does not back [{vmm_lacks}]"));
    }
    let refused = saved.disable_exits - host.allowed_exits;
    if !refused.is_empty() {
        missing.push(format!("the host cannot disable [{refused}] exits"));
    }
    if saved.halt_poll_ns.is_some() && !host.halt_poll {
        missing.push("the host lacks per-VM halt polling".to_owned());
    }
    if saved.enforce_pv_cpuid && !host.enforce_pv_cpuid {
        missing.push("the host cannot enforce PV CPUID".to_owned());
    }
    if missing.is_empty() {
        Ok(saved.clone())
    } else {
        Err(HookError::RestoreUnsupported(missing.join("; ")))
    }
}

/// Carries out a change plan's immediate actions on the live VM.
///
/// **Cloud Hypervisor:** `vmm/src/lib.rs`, the handler of the `vm.pv` API request (beside
/// `vm_resize`), after [`plan_change`](crate::change::plan_change) accepted the request.
pub fn apply_now(pv: &mut PvVm, vm: &VmFd, actions: &[ImmediateAction]) -> Result<(), HookError> {
    for action in actions {
        match action {
            ImmediateAction::SetHaltPollNs { ns } => {
                pv.set_halt_poll_ns(vm, *ns).map_err(HookError::ApplyNow)?;
            }
        }
    }
    Ok(())
}

/// The requested PV configuration the rebooted VM is created with: the pending changes
/// take effect now. Validate the resulting `--cpus` configuration again, then continue with
/// [`vm_created`] on the new KVM VM.
///
/// **Cloud Hypervisor:** `vmm/src/lib.rs`, `Vmm::vm_reboot`, which drops the `Vm` and
/// creates a new one from the config: fold the pending changes into the config before the
/// new `Vm::new`.
pub fn reboot(requested: &PvConfig, pending: Option<PvPatch>) -> PvConfig {
    let next = at_reboot(requested, pending.as_ref());
    if next != *requested {
        log::info!("reboot: pending kvm_pv changes take effect: {next:?}");
    }
    next
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_cpuid_entry2;
    use pv_features::config::FeatureSelection;
    use pv_features::cpuid::{
        KvmHints, KvmLeaves, KVM_CPUID_ALT_BASE, KVM_CPUID_BASE, KVM_SIGNATURE,
    };
    use pv_features::exits::DisableExits;
    use pv_features::hypercall::{KVM_HC_SCHED_YIELD, KVM_HC_SEND_IPI};
    use pv_features::msrs::{MSR_KVM_STEAL_TIME, MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW};

    use super::*;

    fn host() -> HostPv {
        HostPv {
            features: KvmFeatures::from_bits_truncate(0x0100_7efb),
            allowed_exits: DisableExits::all(),
            halt_poll: true,
            enforce_pv_cpuid: true,
            binary_stats: true,
            hyperv: true,
            hyperv_cpuid: Some(pv_features::hyperv::HvCpuidSource::System),
            hyperv_synic: Some(pv_features::hyperv::SynicCap::Synic2),
            exit_hypercall_mask: 0,
            msr_filter: true,
        }
    }

    fn effective(cfg: PvConfig) -> EffectivePv {
        cfg.resolve(&host(), KvmFeatures::MSI_EXT_DEST_ID)
            .expect("resolves")
    }

    fn entry(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// A supported CPUID as KVM reports it: basic leaves and KVM's block at 0x40000000.
    fn supported() -> CpuId {
        CpuId::from_entries(&[
            entry(0, 0xd, 0, 0, 0),
            entry(
                KVM_CPUID_BASE,
                KVM_CPUID_BASE + 1,
                KVM_SIGNATURE[0],
                KVM_SIGNATURE[1],
                KVM_SIGNATURE[2],
            ),
            entry(KVM_CPUID_BASE + 1, 0x0100_7efb, 0, 0, 0),
        ])
        .expect("fits")
    }

    /// What Cloud Hypervisor's `generate_common_cpuid` does with `kvm_hyperv=on` today:
    /// deletes the KVM leaves and inserts "Microsoft Hv" at 0x40000000.
    fn cloud_hypervisor_hyperv_patch(cpuid: &mut CpuId) {
        cpuid.retain(|e| !(KVM_CPUID_BASE..KVM_CPUID_BASE + 0x100).contains(&e.function));
        for e in [
            entry(
                KVM_CPUID_BASE,
                0x4000_000a,
                0x7263_694d,
                0x666f_736f,
                0x7648_2074,
            ),
            entry(KVM_CPUID_BASE + 1, 0x3123_7648, 0, 0, 0),
            entry(KVM_CPUID_BASE + 3, 0x3000, 0, 0, 0),
            entry(KVM_CPUID_BASE + 0xa, 0, 0, 0, 0),
        ] {
            cpuid.push(e).expect("room");
        }
    }

    #[test]
    fn generate_cpuid_places_the_effective_leaves() {
        let eff = effective(PvConfig::dedicated());
        let mut cpuid = supported();
        assert_eq!(
            generate_cpuid(&eff, &mut cpuid).expect("fits"),
            Some(KVM_CPUID_BASE)
        );
        let leaves = KvmLeaves::find(cpuid.as_slice()).expect("present");
        assert_eq!(leaves.features, eff.features);
        assert_eq!(leaves.hints, KvmHints::REALTIME);
        assert_eq!(cpuid.as_slice().len(), 3, "replaced, not added");
    }

    #[test]
    fn with_kvm_hyperv_the_kvm_leaves_go_to_0x40000100() {
        let eff = effective(PvConfig::shared());
        let mut cpuid = supported();
        cloud_hypervisor_hyperv_patch(&mut cpuid);
        assert_eq!(
            KvmLeaves::find(cpuid.as_slice()),
            None,
            "Cloud Hypervisor drops them"
        );
        assert_eq!(
            generate_cpuid(&eff, &mut cpuid).expect("fits"),
            Some(KVM_CPUID_ALT_BASE)
        );
        let leaves = KvmLeaves::find(cpuid.as_slice()).expect("present");
        assert_eq!(leaves.base, KVM_CPUID_ALT_BASE);
        assert_eq!(leaves.features, eff.features);
        assert!(cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == KVM_CPUID_BASE && e.ebx == 0x7263_694d));
    }

    #[test]
    fn kvm_pv_off_removes_the_leaves() {
        let eff = effective(PvConfig {
            features: FeatureSelection::Off,
            ..PvConfig::shared()
        });
        let mut cpuid = supported();
        assert_eq!(generate_cpuid(&eff, &mut cpuid).expect("fits"), None);
        assert_eq!(KvmLeaves::find(cpuid.as_slice()), None);
        assert_eq!(cpuid.as_slice().len(), 1);
    }

    #[test]
    fn generate_cpuid_reports_a_full_list() {
        let entries: Vec<_> = (0..kvm_bindings::KVM_MAX_CPUID_ENTRIES as u32)
            .map(|i| entry(i, 0, 0, 0, 0))
            .collect();
        let mut cpuid = CpuId::from_entries(&entries).expect("fits");
        let err = generate_cpuid(&effective(PvConfig::shared()), &mut cpuid).expect_err("full");
        assert_eq!(
            err.to_string(),
            "placing the KVM PV leaves in the generated CPUID"
        );
        assert!(matches!(
            err,
            HookError::GenerateCpuid(CpuidError::TooManyEntries(_))
        ));
    }

    #[test]
    fn hypercalls_go_through_the_dispatcher() {
        let d = Dispatcher {
            features: KvmFeatures::PV_SEND_IPI,
            enforce: true,
            max_apic_id: 3,
            phys_bits: 46,
        };
        let mut ret = 0;
        let mut exit = HypercallExit {
            nr: KVM_HC_SEND_IPI,
            args: [0b1011, 0, 0, 0xec, 0, 0],
            ret: &mut ret,
            longmode: 1,
        };
        let mut seen = Vec::new();
        let action = handle_hypercall(&d, &mut exit, |_, id| {
            seen.push(id);
            true
        });
        assert!(matches!(action, Some(HypercallAction::SendIpi(_))));
        assert_eq!(seen, [0, 1, 3]);
        assert_eq!(ret, 3);
        // Not advertised, with enforcement: -KVM_ENOSYS and nothing to do.
        let mut ret = 0;
        let mut exit = HypercallExit {
            nr: KVM_HC_SCHED_YIELD,
            args: [1, 0, 0, 0, 0, 0],
            ret: &mut ret,
            longmode: 1,
        };
        assert_eq!(handle_hypercall(&d, &mut exit, |_, _| true), None);
        assert_eq!(ret as i64, -1000);
    }

    #[test]
    fn msrs_follow_the_advertised_features() {
        assert_eq!(
            msrs_to_save(KvmFeatures::CLOCKSOURCE2 | KvmFeatures::STEAL_TIME),
            [
                MSR_KVM_SYSTEM_TIME_NEW,
                MSR_KVM_WALL_CLOCK_NEW,
                MSR_KVM_STEAL_TIME
            ]
        );
        assert!(msrs_to_save(KvmFeatures::empty()).is_empty());
    }

    #[test]
    fn restore_needs_what_the_snapshot_had() {
        let mut saved = effective(PvConfig::dedicated());
        saved.features.insert(KvmFeatures::MSI_EXT_DEST_ID);
        assert_eq!(
            check_restore(&saved, &host(), KvmFeatures::MSI_EXT_DEST_ID).ok(),
            Some(saved.clone())
        );
        let mut h = host();
        h.features.remove(KvmFeatures::STEAL_TIME);
        h.allowed_exits = DisableExits::HLT;
        h.enforce_pv_cpuid = false;
        let err = check_restore(&saved, &h, KvmFeatures::empty()).expect_err("lacks");
        assert_eq!(
            err.to_string(),
            "restoring a snapshot: this host cannot give the guest the PV state it was saved with: the host's KVM lacks [steal_time]; this VMM does not back [msi_ext_dest_id]; the host cannot disable [mwait,pause,cstate] exits; the host cannot enforce PV CPUID"
        );
        saved.halt_poll_ns = Some(1);
        let mut h = host();
        h.halt_poll = false;
        let err = check_restore(&saved, &h, KvmFeatures::MSI_EXT_DEST_ID).expect_err("halt poll");
        assert!(
            err.to_string()
                .ends_with("the host lacks per-VM halt polling"),
            "{err}"
        );
    }

    #[test]
    fn reboot_applies_pending_changes() {
        let requested = PvConfig::shared();
        assert_eq!(reboot(&requested, None), requested);
        let pending = PvPatch {
            dedicated: Some(true),
            halt_poll_ns: Some(None),
            ..PvPatch::default()
        };
        assert_eq!(reboot(&requested, Some(pending)), PvConfig::dedicated());
    }

    #[test]
    fn error_messages_name_the_step() {
        let cases: Vec<(HookError, &str)> = vec![
            (
                HookError::MsrList {
                    vcpu: 2,
                    source: MsrError::Duplicate { index: 0x4b56_4d03 },
                },
                "restoring the PV MSRs of vCPU 2",
            ),
            (
                HookError::MsrPartial {
                    op: "KVM_SET_MSRS",
                    vcpu: 1,
                    index: 0x4b56_4d03,
                    done: 2,
                    total: 3,
                },
                "KVM_SET_MSRS on vCPU 1 stopped at MSR 0x4b564d03: 2 of 3 done",
            ),
            (
                HookError::MsrIoctl {
                    op: "KVM_GET_MSRS",
                    vcpu: 0,
                    source: kvm_ioctls::Error::new(libc_einval()),
                },
                "KVM_GET_MSRS of the PV MSRs on vCPU 0",
            ),
            (
                HookError::CreateVcpu {
                    vcpu: 4,
                    source: SetupError::CreateVcpu {
                        vcpu: 4,
                        source: kvm_ioctls::Error::new(libc_einval()),
                    },
                },
                "creating vCPU 4",
            ),
            (
                HookError::ConfigureVcpu {
                    vcpu: 5,
                    source: SetupError::SetCpuid {
                        vcpu: 5,
                        source: kvm_ioctls::Error::new(libc_einval()),
                    },
                },
                "setting up the PV CPUID of vCPU 5",
            ),
            (
                HookError::VmCreated(SetupError::Exits(
                    pv_features::exits::ExitsError::VcpusExist { vcpus: 1 },
                )),
                "applying the PV configuration to the new VM, before any vCPU",
            ),
            (
                HookError::ApplyNow(SetupError::Exits(
                    pv_features::exits::ExitsError::HaltPollUnsupported,
                )),
                "applying a PV change to the running VM",
            ),
            (
                HookError::HypervUnsupported("Hyper-V emulation (KVM_CAP_HYPERV)"),
                "kvm_hyperv=on: the host's KVM lacks Hyper-V emulation (KVM_CAP_HYPERV)",
            ),
            (
                HookError::HypervNeedsVcpu,
                "kvm_hyperv=on: this host reports its Hyper-V leaves only on a vCPU file descriptor; pass the first vCPU",
            ),
            (
                HookError::EnableHyperv(SetupError::HypervTooLate { configured: 2 }),
                "giving the VM the Hyper-V leaves",
            ),
        ];
        for (err, message) in cases {
            assert_eq!(err.to_string(), message);
        }
    }

    fn libc_einval() -> i32 {
        22
    }
}
