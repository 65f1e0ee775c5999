//! The one entry point that applies an [`EffectivePv`] to a VM and its vCPUs, in the order
//! KVM requires:
//!
//! 1. right after `KVM_CREATE_VM`, before any vCPU: disable exits (`KVM_CAP_X86_DISABLE_EXITS`
//!    is accepted only while the VM has no vCPU) and set halt polling;
//! 2. create each vCPU through [`PvVm::create_vcpu`], which records that vCPUs now exist;
//! 3. with `kvm_hyperv`, before the first vCPU's CPUID is set: [`PvVm::set_hyperv`] with the
//!    Hyper-V leaves (read from the system file descriptor, or from the first vCPU's where
//!    the host answers only there);
//! 4. per vCPU, before any MSR is restored: `KVM_SET_CPUID2` with the Hyper-V block at
//!    0x40000000 and the KVM leaves at the first free block (0x40000100 beside Hyper-V),
//!    then `KVM_CAP_ENFORCE_PV_FEATURE_CPUID` (enforcement is per vCPU, and with it on KVM
//!    rejects PV MSRs and hypercalls of features the CPUID does not advertise; KVM finds its
//!    block at either base), then SynIC (`KVM_CAP_HYPERV_SYNIC2`) where the Hyper-V leaves
//!    advertise it: a per-vCPU capability, and the SynIC MSRs are among those restored.

use std::sync::atomic::{AtomicUsize, Ordering};

use kvm_bindings::{kvm_enable_cap, CpuId, KVM_CAP_ENFORCE_PV_FEATURE_CPUID};
use kvm_ioctls::{VcpuFd, VmFd};

use crate::config::EffectivePv;
use crate::cpuid::{merge_kvm_leaves, place_blocks, remove_kvm_leaves, CpuidBlocks, CpuidError};
use crate::exits::{self, DisableExits, ExitsError};
use crate::hypercall::Dispatcher;
use crate::hyperv::{HypervError, HypervLeaves};
use crate::mwait::{self, MonitorLeaf, MwaitError};

/// Errors of applying the PV state.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Disabling exits or setting halt polling failed.
    #[error("configuring the VM's exits")]
    Exits(#[from] ExitsError),
    /// Merging the KVM leaves into a CPUID the VMM builds for its vCPUs failed.
    #[error("building the PV part of the vCPUs' CPUID")]
    VmmCpuid(#[source] CpuidError),
    /// Showing or hiding MONITOR in a CPUID the VMM builds for its vCPUs failed.
    #[error("MONITOR/MWAIT in the vCPUs' CPUID")]
    VmmMwait(#[source] MwaitError),
    /// Merging the KVM leaves into the vCPU's CPUID failed.
    #[error("building vCPU {vcpu}'s CPUID")]
    Cpuid {
        /// The vCPU id.
        vcpu: u64,
        /// The cause.
        #[source]
        source: CpuidError,
    },
    /// Showing or hiding MONITOR/MWAIT in a vCPU's CPUID failed.
    #[error("laying out MONITOR/MWAIT in vCPU {vcpu}'s CPUID")]
    Mwait {
        /// The vCPU id.
        vcpu: u64,
        /// The cause.
        #[source]
        source: MwaitError,
    },
    /// `KVM_SET_CPUID2` failed.
    #[error("KVM_SET_CPUID2 on vCPU {vcpu}")]
    SetCpuid {
        /// The vCPU id.
        vcpu: u64,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Enabling PV CPUID enforcement failed.
    #[error("KVM_ENABLE_CAP(KVM_CAP_ENFORCE_PV_FEATURE_CPUID) on vCPU {vcpu}")]
    Enforce {
        /// The vCPU id.
        vcpu: u64,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Enabling what the Hyper-V leaves need (SynIC) failed.
    #[error("enabling Hyper-V on vCPU {vcpu}")]
    Hyperv {
        /// The vCPU id.
        vcpu: u64,
        /// The cause.
        #[source]
        source: HypervError,
    },
    /// The Hyper-V leaves came after a vCPU's CPUID was set: every vCPU must get the same.
    #[error(
        "the Hyper-V leaves must be set before the first vCPU's CPUID ({configured} already set)"
    )]
    HypervTooLate {
        /// vCPUs whose CPUID is set.
        configured: usize,
    },
    /// `KVM_CREATE_VCPU` failed.
    #[error("KVM_CREATE_VCPU {vcpu}")]
    CreateVcpu {
        /// The vCPU id.
        vcpu: u64,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// A VM with its PV state applied. It gates vCPU creation so that VM-wide settings that KVM
/// accepts only before the first vCPU are refused afterwards with a typed error.
///
/// ```no_run
/// use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
/// use kvm_ioctls::Kvm;
/// use pv_features::{config::PvConfig, cpuid::KvmFeatures, host::HostPv, setup::PvVm};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let kvm = Kvm::new()?;
/// let host = HostPv::probe(&kvm)?;
/// // Errors name the field, the value and the rule; host limits are dropped and reported.
/// let effective = PvConfig::dedicated().resolve(&host, KvmFeatures::empty())?;
/// let vm = kvm.create_vm()?;
/// let pv = PvVm::configure_vm(&vm, effective)?; // exits and halt polling: before any vCPU
/// let vcpu = pv.create_vcpu(&vm, 0)?;
/// let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
/// let blocks = pv.configure_vcpu(&vcpu, 0, &mut cpuid)?; // KVM leaves, enforcement: before MSRs
/// println!("KVM leaves at {:?}; dropped: {:?}", blocks.kvm, pv.effective().dropped);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PvVm {
    effective: EffectivePv,
    vcpus_created: AtomicUsize,
    vcpus_configured: AtomicUsize,
    hyperv: Option<HypervLeaves>,
}

impl PvVm {
    /// Applies the VM-wide part of `effective` to `vm`: disables its exits and sets halt
    /// polling. Call it right after `KVM_CREATE_VM`, before any vCPU exists, and create the
    /// vCPUs through [`PvVm::create_vcpu`].
    pub fn configure_vm(vm: &VmFd, effective: EffectivePv) -> Result<Self, SetupError> {
        exits::disable_exits(vm, effective.disable_exits, 0)?;
        if let Some(ns) = effective.halt_poll_ns {
            exits::set_halt_poll_ns(vm, ns)?;
        }
        Ok(Self {
            effective,
            vcpus_created: AtomicUsize::new(0),
            vcpus_configured: AtomicUsize::new(0),
            hyperv: None,
        })
    }

    /// Gives every vCPU the Hyper-V block `leaves` at 0x40000000 (the KVM leaves then go to
    /// 0x40000100) and enables what it needs on each (SynIC). Refused with
    /// [`SetupError::HypervTooLate`] once a vCPU's CPUID is set.
    pub fn set_hyperv(&mut self, leaves: HypervLeaves) -> Result<(), SetupError> {
        let configured = self.vcpus_configured.load(Ordering::Acquire);
        if configured > 0 {
            return Err(SetupError::HypervTooLate { configured });
        }
        self.hyperv = Some(leaves);
        Ok(())
    }

    /// The Hyper-V block every vCPU gets, if any.
    pub fn hyperv(&self) -> Option<&HypervLeaves> {
        self.hyperv.as_ref()
    }

    /// The PV state this VM runs with.
    pub fn effective(&self) -> &EffectivePv {
        &self.effective
    }

    /// How many vCPUs were created through [`PvVm::create_vcpu`].
    pub fn vcpus_created(&self) -> usize {
        self.vcpus_created.load(Ordering::Acquire)
    }

    /// Creates vCPU `id` on `vm` and records that vCPUs exist.
    pub fn create_vcpu(&self, vm: &VmFd, id: u64) -> Result<VcpuFd, SetupError> {
        // Count first: from the moment the ioctl may succeed, exits must not change.
        self.vcpus_created.fetch_add(1, Ordering::AcqRel);
        vm.create_vcpu(id).map_err(|source| {
            self.vcpus_created.fetch_sub(1, Ordering::AcqRel);
            SetupError::CreateVcpu { vcpu: id, source }
        })
    }

    /// Records that the VMM created a vCPU itself (a VMM whose hypervisor layer creates its
    /// vCPUs, as Cloud Hypervisor's does) instead of through [`PvVm::create_vcpu`]: from
    /// then on the exits stay as they are. Call it right before that `KVM_CREATE_VCPU`.
    pub fn record_vcpu_created(&self) {
        self.vcpus_created.fetch_add(1, Ordering::AcqRel);
    }

    /// The PV part of a CPUID the VMM builds and sets itself: the KVM leaves of the
    /// effective features and hints (replacing any KVM block, at 0x40000100 when `cpuid`
    /// already holds a Hyper-V block at 0x40000000; removed for `features: off`), and
    /// MONITOR shown exactly when MWAIT exits are disabled. Returns where the KVM leaves
    /// went. Follow the VMM's `KVM_SET_CPUID2` with [`PvVm::cpuid_set`].
    pub fn vmm_cpuid(&self, cpuid: &mut CpuId) -> Result<Option<u32>, SetupError> {
        let base = if self.effective.leaves {
            Some(
                merge_kvm_leaves(cpuid, self.effective.features, self.effective.hints)
                    .map_err(SetupError::VmmCpuid)?,
            )
        } else {
            remove_kvm_leaves(cpuid);
            None
        };
        let mwait_in_guest = self.effective.disable_exits.contains(DisableExits::MWAIT);
        mwait::apply(cpuid, mwait_in_guest, MonitorLeaf::host()).map_err(SetupError::VmmMwait)?;
        Ok(base)
    }

    /// After the VMM set vCPU `vcpu_id`'s CPUID itself (from [`PvVm::vmm_cpuid`]'s list):
    /// turns PV CPUID enforcement on for it, which KVM holds per vCPU. Call it before
    /// restoring any MSR.
    pub fn cpuid_set(&self, vcpu: &VcpuFd, vcpu_id: u64) -> Result<(), SetupError> {
        self.vcpus_configured.fetch_add(1, Ordering::AcqRel);
        self.enforce(vcpu, vcpu_id)
    }

    fn enforce(&self, vcpu: &VcpuFd, vcpu_id: u64) -> Result<(), SetupError> {
        if self.effective.enforce_pv_cpuid {
            let cap = kvm_enable_cap {
                cap: KVM_CAP_ENFORCE_PV_FEATURE_CPUID,
                args: [1, 0, 0, 0],
                ..Default::default()
            };
            vcpu.enable_cap(&cap)
                .map_err(|source| SetupError::Enforce {
                    vcpu: vcpu_id,
                    source,
                })?;
        }
        Ok(())
    }

    /// Applies the per-vCPU part: lays out `cpuid`'s hypervisor blocks
    /// ([`place_blocks`]: the Hyper-V block if set, the KVM leaves unless `features: off`),
    /// sets it with `KVM_SET_CPUID2`, turns PV CPUID enforcement on, then enables SynIC where
    /// the Hyper-V leaves advertise it. Call it before restoring any MSR. Returns where each
    /// block sits.
    pub fn configure_vcpu(
        &self,
        vcpu: &VcpuFd,
        vcpu_id: u64,
        cpuid: &mut CpuId,
    ) -> Result<CpuidBlocks, SetupError> {
        let kvm = self
            .effective
            .leaves
            .then_some((self.effective.features, self.effective.hints));
        let blocks =
            place_blocks(cpuid, self.hyperv.as_ref(), kvm).map_err(|source| SetupError::Cpuid {
                vcpu: vcpu_id,
                source,
            })?;
        // A guest executes MWAIT only if its CPUID lists MONITOR: shown exactly when its
        // MWAIT exits are disabled (as QEMU's cpu-pm=on), hidden otherwise.
        let mwait_in_guest = self.effective.disable_exits.contains(DisableExits::MWAIT);
        mwait::apply(cpuid, mwait_in_guest, MonitorLeaf::host()).map_err(|source| {
            SetupError::Mwait {
                vcpu: vcpu_id,
                source,
            }
        })?;
        // From here on the Hyper-V choice is fixed for every vCPU.
        self.vcpus_configured.fetch_add(1, Ordering::AcqRel);
        vcpu.set_cpuid2(cpuid)
            .map_err(|source| SetupError::SetCpuid {
                vcpu: vcpu_id,
                source,
            })?;
        self.enforce(vcpu, vcpu_id)?;
        if let Some(hv) = &self.hyperv {
            hv.enable_on_vcpu(vcpu, vcpu_id)
                .map_err(|source| SetupError::Hyperv {
                    vcpu: vcpu_id,
                    source,
                })?;
        }
        Ok(blocks)
    }

    /// Disables `exits` too; refused with [`ExitsError::VcpusExist`] once a vCPU exists
    /// (the change then has to wait for the VM to be recreated, e.g. at reboot).
    ///
    /// KVM ORs each `KVM_CAP_X86_DISABLE_EXITS` call into what the VM already has (x86.c
    /// only ever sets its `*_in_guest` flags; nothing turns an exit back on), so the
    /// effective set becomes the union of every call: it is what KVM does.
    pub fn set_disable_exits(&mut self, vm: &VmFd, exits: DisableExits) -> Result<(), SetupError> {
        exits::disable_exits(vm, exits, self.vcpus_created())?;
        self.effective.disable_exits |= exits;
        Ok(())
    }

    /// Changes the VM's halt-poll limit; allowed at any time.
    pub fn set_halt_poll_ns(&mut self, vm: &VmFd, ns: u32) -> Result<(), SetupError> {
        exits::set_halt_poll_ns(vm, ns)?;
        self.effective.halt_poll_ns = Some(ns);
        Ok(())
    }

    /// A hypercall dispatcher with this VM's advertised features and enforcement.
    pub fn dispatcher(&self, max_apic_id: u32, phys_bits: u8) -> Dispatcher {
        Dispatcher {
            features: self.effective.features,
            enforce: self.effective.enforce_pv_cpuid,
            max_apic_id,
            phys_bits,
        }
    }
}
