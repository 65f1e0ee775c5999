//! KVM's Hyper-V emulation as a VMM offers it beside the KVM PV leaves: the Hyper-V CPUID
//! leaves KVM can back (`KVM_GET_SUPPORTED_HV_CPUID`), trimmed to what the VMM honours, and
//! the per-vCPU capability the kept leaves need (SynIC).
//!
//! KVM reports its Hyper-V block with the vendor "Linux KVM Hv" at 0x40000000. A Linux guest
//! recognises Hyper-V only by the vendor "Microsoft Hv", so with this block it finds no
//! Hyper-V and uses the KVM block, which [`crate::cpuid::place_blocks`] puts at 0x40000100
//! (Linux scans 0x40000000..0x40010000 in steps of 0x100 for "KVMKVMKVM", and picks the
//! hypervisor whose detection returns the larger base). Windows recognises Hyper-V by the
//! interface signature "Hv#1" at 0x40000001, which KVM also uses to turn its Hyper-V
//! emulation on for a vCPU.
//!
//! Sources: the kernel's `Documentation/virt/kvm/api.rst` (KVM_GET_SUPPORTED_HV_CPUID,
//! KVM_CAP_HYPERV_SYNIC, KVM_CAP_HYPERV_SYNIC2), `arch/x86/kvm/hyperv.c`
//! (`kvm_get_hv_cpuid`), and the bit names of `include/asm-generic/hyperv-tlfs.h` and
//! `arch/x86/include/asm/hyperv-tlfs.h`.

use std::os::fd::AsRawFd;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_enable_cap, kvm_hyperv_exit, CpuId, KVM_CAP_HYPERV_SYNIC,
    KVM_CAP_HYPERV_SYNIC2, KVM_EXIT_HYPERV_HCALL, KVM_EXIT_HYPERV_SYNDBG, KVM_EXIT_HYPERV_SYNIC,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};
use vmm_sys_util::errno;

/// The Hyper-V vendor and maximum leaf (`HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS`).
pub const HYPERV_CPUID_VENDOR: u32 = 0x4000_0000;
/// The interface signature leaf (`HYPERV_CPUID_INTERFACE`).
pub const HYPERV_CPUID_INTERFACE: u32 = 0x4000_0001;
/// The features leaf (`HYPERV_CPUID_FEATURES`).
pub const HYPERV_CPUID_FEATURES: u32 = 0x4000_0003;
/// The recommendations leaf (`HYPERV_CPUID_ENLIGHTMENT_INFO`).
pub const HYPERV_CPUID_ENLIGHTMENT_INFO: u32 = 0x4000_0004;
/// The nested (enlightened VMCS) features leaf (`HYPERV_CPUID_NESTED_FEATURES`).
pub const HYPERV_CPUID_NESTED_FEATURES: u32 = 0x4000_000a;
/// First of the synthetic debugger leaves (`HYPERV_CPUID_SYNDBG_VENDOR_AND_MAX_FUNCTIONS`).
pub const HYPERV_CPUID_SYNDBG_FIRST: u32 = 0x4000_0080;
/// Last of the synthetic debugger leaves (`HYPERV_CPUID_SYNDBG_PLATFORM_CAPABILITIES`).
pub const HYPERV_CPUID_SYNDBG_LAST: u32 = 0x4000_0082;
/// "Hv#1" as EAX of the interface leaf (`HYPERV_CPUID_SIGNATURE_EAX`).
pub const HYPERV_INTERFACE_SIGNATURE: u32 = 0x3123_7648;
/// Last leaf of the first hypervisor block: the Hyper-V block must end here, below the KVM
/// block at 0x40000100.
pub const HYPERV_BLOCK_LAST: u32 = 0x4000_00ff;

/// Features leaf, EAX: the SynIC MSRs (`HV_MSR_SYNIC_AVAILABLE`).
pub const HV_MSR_SYNIC_AVAILABLE: u32 = 1 << 2;
/// Features leaf, EAX: the synthetic timer MSRs, which deliver through SynIC
/// (`HV_MSR_SYNTIMER_AVAILABLE`).
pub const HV_MSR_SYNTIMER_AVAILABLE: u32 = 1 << 3;
/// Features leaf, EBX: the synthetic debugging privilege (`HV_DEBUGGING`).
pub const HV_DEBUGGING: u32 = 1 << 11;
/// Features leaf, EDX: guest debugging (`HV_X64_GUEST_DEBUGGING_AVAILABLE`).
pub const HV_X64_GUEST_DEBUGGING_AVAILABLE: u32 = 1 << 1;
/// Features leaf, EDX: the synthetic debugger MSRs (`HV_FEATURE_DEBUG_MSRS_AVAILABLE`).
pub const HV_FEATURE_DEBUG_MSRS_AVAILABLE: u32 = 1 << 11;
/// Features leaf, EDX: synthetic timers in direct mode, which need SynIC
/// (`HV_STIMER_DIRECT_MODE_AVAILABLE`).
pub const HV_STIMER_DIRECT_MODE_AVAILABLE: u32 = 1 << 19;
/// Recommendations leaf, EAX: use the enlightened VMCS (`HV_X64_ENLIGHTENED_VMCS_RECOMMENDED`).
pub const HV_X64_ENLIGHTENED_VMCS_RECOMMENDED: u32 = 1 << 14;

/// The SynIC control MSR (`HV_X64_MSR_SCONTROL`): KVM answers it only on a vCPU whose SynIC
/// was enabled, and then with its enable bit set.
pub const HV_X64_MSR_SCONTROL: u32 = 0x4000_0080;

/// The Hyper-V status a guest gets for a hypercall nobody implements
/// (`HV_STATUS_INVALID_HYPERCALL_CODE`).
pub const HV_STATUS_INVALID_HYPERCALL_CODE: u64 = 2;

/// Where the host answers `KVM_GET_SUPPORTED_HV_CPUID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HvCpuidSource {
    /// On the system file descriptor (`KVM_CAP_SYS_HYPERV_CPUID`, Linux 5.11 and later).
    System,
    /// Only on a vCPU file descriptor (`KVM_CAP_HYPERV_CPUID`).
    Vcpu,
}

/// The capability that turns SynIC on for a vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynicCap {
    /// `KVM_CAP_HYPERV_SYNIC2`: KVM leaves the message and event pages as the guest set them.
    Synic2,
    /// `KVM_CAP_HYPERV_SYNIC`, the first version.
    Synic,
}

impl SynicCap {
    /// The capability number for `KVM_ENABLE_CAP`.
    pub fn cap(self) -> u32 {
        match self {
            SynicCap::Synic2 => KVM_CAP_HYPERV_SYNIC2,
            SynicCap::Synic => KVM_CAP_HYPERV_SYNIC,
        }
    }

    /// The capability's name, as the kernel spells it.
    pub fn name(self) -> &'static str {
        match self {
            SynicCap::Synic2 => "KVM_CAP_HYPERV_SYNIC2",
            SynicCap::Synic => "KVM_CAP_HYPERV_SYNIC",
        }
    }
}

/// Errors of reading and using the Hyper-V leaves.
#[derive(Debug, thiserror::Error)]
pub enum HypervError {
    /// `KVM_GET_SUPPORTED_HV_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_HV_CPUID on the {fd} file descriptor")]
    Ioctl {
        /// "system" or "vCPU".
        fd: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A leaf outside the first hypervisor block, where the KVM block or others live.
    #[error(
        "the host's Hyper-V leaf {function:#x} lies outside the block 0x40000000..=0x400000ff"
    )]
    LeafOutsideBlock {
        /// The leaf.
        function: u32,
    },
    /// The vendor leaf's maximum reaches into the KVM block (or below the block).
    #[error("the host's Hyper-V vendor leaf gives the highest leaf as {max:#x}; it must lie in 0x40000001..=0x400000ff, below the KVM leaves at 0x40000100")]
    MaxLeaf {
        /// EAX of the vendor leaf.
        max: u32,
    },
    /// A leaf every Hyper-V block needs is missing or wrong.
    #[error("the host's Hyper-V leaves lack {what}")]
    Missing {
        /// What is missing.
        what: &'static str,
    },
    /// Enabling SynIC on a vCPU failed.
    #[error("KVM_ENABLE_CAP({}) on vCPU {vcpu}", cap.name())]
    EnableSynic {
        /// The capability.
        cap: SynicCap,
        /// The vCPU id.
        vcpu: u64,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// `KVM_GET_SUPPORTED_HV_CPUID` on `fd`: the system file descriptor where the host has
/// `KVM_CAP_SYS_HYPERV_CPUID`, or a vCPU's where it has only `KVM_CAP_HYPERV_CPUID`.
pub fn supported_hv_cpuid(fd: &impl AsRawFd) -> Result<CpuId, kvm_ioctls::Error> {
    let mut cpuid =
        CpuId::new(KVM_MAX_CPUID_ENTRIES).map_err(|_| errno::Error::new(libc::ENOMEM))?;
    // SAFETY: `cpuid` owns a kvm_cpuid2 with room for `nent` = KVM_MAX_CPUID_ENTRIES entries;
    // KVM writes at most `nent` entries and lowers `nent` to the number written (E2BIG when
    // they do not fit). An fd that is not KVM's fails the ioctl without touching the buffer.
    let ret = unsafe {
        vmm_sys_util::ioctl::ioctl_with_mut_ptr(
            fd,
            crate::ioctls::KVM_GET_SUPPORTED_HV_CPUID,
            cpuid.as_mut_fam_struct_ptr(),
        )
    };
    if ret < 0 {
        return Err(errno::Error::last());
    }
    Ok(cpuid)
}

/// A Hyper-V feature group KVM reports but the VM does not get, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HvDropped {
    /// The group: `synic`, `syndbg` or `evmcs`.
    pub feature: String,
    /// Why it is not offered.
    pub reason: String,
}

/// The Hyper-V block a VM gets: KVM's supported Hyper-V leaves at 0x40000000, without the
/// feature groups the VMM cannot honour, and the SynIC capability to enable per vCPU when
/// the leaves advertise SynIC.
#[derive(Debug, Clone, PartialEq)]
pub struct HypervLeaves {
    entries: Vec<kvm_cpuid_entry2>,
    synic: Option<SynicCap>,
    dropped: Vec<HvDropped>,
}

/// What `vm.info` shows about the Hyper-V block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HypervReport {
    /// The vendor string at 0x40000000 ("Linux KVM Hv" from KVM).
    pub vendor: String,
    /// The interface signature at 0x40000001 ("Hv#1").
    pub interface: String,
    /// The highest Hyper-V leaf (EAX of 0x40000000), in hex.
    pub max_leaf: String,
    /// The SynIC capability enabled on every vCPU, if SynIC is advertised.
    pub synic: Option<SynicCap>,
    /// Feature groups KVM reports that the VM does not get.
    pub dropped: Vec<HvDropped>,
}

fn text(regs: &[u32]) -> String {
    regs.iter()
        .flat_map(|r| r.to_le_bytes())
        .take_while(|b| *b != 0)
        .map(|b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect()
}

impl HypervLeaves {
    /// Builds the block from the host's `KVM_GET_SUPPORTED_HV_CPUID` list.
    ///
    /// Every leaf must lie in 0x40000000..=0x400000ff, the vendor leaf must give a highest
    /// leaf in that range, and the interface leaf must carry "Hv#1" (the signature KVM turns
    /// its Hyper-V emulation on by). What is dropped, each reported in [`Self::dropped`]:
    /// - `synic` (the SynIC and synthetic timer bits) when `synic` is `None`: a guest would
    ///   get #GP on the SynIC MSRs of a vCPU whose SynIC is not enabled;
    /// - `syndbg` (the debugging bits and leaves 0x40000080..=0x40000082): KVM forwards the
    ///   synthetic debugger to the VMM (`KVM_EXIT_HYPERV_SYNDBG`), which serves none;
    /// - `evmcs` (the enlightened VMCS recommendation and the nested-virtualization leaf
    ///   0x4000000a, which KVM 6.1 reports even on AMD): they go with
    ///   `KVM_CAP_HYPERV_ENLIGHTENED_VMCS`, which is not enabled (QEMU too offers the leaf
    ///   only with `hv-evmcs`).
    ///
    /// The vendor leaf's highest leaf is then lowered to the highest leaf kept. Index and
    /// flags are cleared (KVM reserves them here).
    pub fn from_supported(
        supported: &[kvm_cpuid_entry2],
        synic: Option<SynicCap>,
    ) -> Result<Self, HypervError> {
        if let Some(e) = supported
            .iter()
            .find(|e| !(HYPERV_CPUID_VENDOR..=HYPERV_BLOCK_LAST).contains(&e.function))
        {
            return Err(HypervError::LeafOutsideBlock {
                function: e.function,
            });
        }
        let vendor = supported
            .iter()
            .find(|e| e.function == HYPERV_CPUID_VENDOR)
            .ok_or(HypervError::Missing {
                what: "the vendor leaf 0x40000000",
            })?;
        if !(HYPERV_CPUID_INTERFACE..=HYPERV_BLOCK_LAST).contains(&vendor.eax) {
            return Err(HypervError::MaxLeaf { max: vendor.eax });
        }
        if !supported
            .iter()
            .any(|e| e.function == HYPERV_CPUID_INTERFACE && e.eax == HYPERV_INTERFACE_SIGNATURE)
        {
            return Err(HypervError::Missing {
                what: "the interface signature \"Hv#1\" at 0x40000001",
            });
        }

        let mut dropped = Vec::new();
        let mut note = |feature: &str, reason: &str| {
            dropped.push(HvDropped {
                feature: feature.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let features = supported
            .iter()
            .find(|e| e.function == HYPERV_CPUID_FEATURES)
            .copied()
            .unwrap_or_default();
        let synic_bits = features.eax & (HV_MSR_SYNIC_AVAILABLE | HV_MSR_SYNTIMER_AVAILABLE) != 0
            || features.edx & HV_STIMER_DIRECT_MODE_AVAILABLE != 0;
        let keep_synic = synic.is_some();
        if synic_bits && !keep_synic {
            note(
                "synic",
                "the host cannot enable SynIC on a vCPU (no KVM_CAP_HYPERV_SYNIC2 or KVM_CAP_HYPERV_SYNIC)",
            );
        }
        let syndbg = supported
            .iter()
            .any(|e| (HYPERV_CPUID_SYNDBG_FIRST..=HYPERV_CPUID_SYNDBG_LAST).contains(&e.function))
            || features.ebx & HV_DEBUGGING != 0
            || features.edx & (HV_X64_GUEST_DEBUGGING_AVAILABLE | HV_FEATURE_DEBUG_MSRS_AVAILABLE)
                != 0;
        if syndbg {
            note(
                "syndbg",
                "this VMM does not serve the synthetic debugger (KVM_EXIT_HYPERV_SYNDBG)",
            );
        }
        let evmcs = supported.iter().any(|e| {
            e.function == HYPERV_CPUID_NESTED_FEATURES
                || (e.function == HYPERV_CPUID_ENLIGHTMENT_INFO
                    && e.eax & HV_X64_ENLIGHTENED_VMCS_RECOMMENDED != 0)
        });
        if evmcs {
            note(
                "evmcs",
                "the nested-virtualization leaf 0x4000000a and the enlightened VMCS need KVM_CAP_HYPERV_ENLIGHTENED_VMCS, which this VMM does not enable",
            );
        }

        let mut entries: Vec<kvm_cpuid_entry2> = supported
            .iter()
            .filter(|e| {
                !(HYPERV_CPUID_SYNDBG_FIRST..=HYPERV_CPUID_SYNDBG_LAST).contains(&e.function)
                    && e.function != HYPERV_CPUID_NESTED_FEATURES
            })
            .map(|e| {
                let mut e = *e;
                e.index = 0;
                e.flags = 0;
                match e.function {
                    HYPERV_CPUID_FEATURES => {
                        if !keep_synic {
                            e.eax &= !(HV_MSR_SYNIC_AVAILABLE | HV_MSR_SYNTIMER_AVAILABLE);
                            e.edx &= !HV_STIMER_DIRECT_MODE_AVAILABLE;
                        }
                        e.ebx &= !HV_DEBUGGING;
                        e.edx &=
                            !(HV_X64_GUEST_DEBUGGING_AVAILABLE | HV_FEATURE_DEBUG_MSRS_AVAILABLE);
                    }
                    HYPERV_CPUID_ENLIGHTMENT_INFO => e.eax &= !HV_X64_ENLIGHTENED_VMCS_RECOMMENDED,
                    _ => {}
                }
                e
            })
            .collect();
        entries.sort_by_key(|e| e.function);
        entries.dedup_by_key(|e| e.function);
        let max = entries
            .iter()
            .map(|e| e.function)
            .max()
            .unwrap_or(HYPERV_CPUID_INTERFACE);
        for e in &mut entries {
            if e.function == HYPERV_CPUID_VENDOR {
                e.eax = max.min(e.eax);
            }
        }
        let advertises_synic = entries
            .iter()
            .any(|e| e.function == HYPERV_CPUID_FEATURES && e.eax & HV_MSR_SYNIC_AVAILABLE != 0);
        Ok(Self {
            entries,
            synic: synic.filter(|_| advertises_synic),
            dropped,
        })
    }

    /// The leaves, sorted by function, all in 0x40000000..=0x400000ff.
    pub fn entries(&self) -> &[kvm_cpuid_entry2] {
        &self.entries
    }

    fn leaf(&self, function: u32) -> Option<&kvm_cpuid_entry2> {
        self.entries.iter().find(|e| e.function == function)
    }

    /// The vendor string of 0x40000000.
    pub fn vendor(&self) -> String {
        self.leaf(HYPERV_CPUID_VENDOR)
            .map(|e| text(&[e.ebx, e.ecx, e.edx]))
            .unwrap_or_default()
    }

    /// The highest Hyper-V leaf (EAX of 0x40000000), below 0x40000100.
    pub fn max_leaf(&self) -> u32 {
        self.leaf(HYPERV_CPUID_VENDOR)
            .map_or(HYPERV_CPUID_INTERFACE, |e| e.eax)
    }

    /// The SynIC capability to enable on every vCPU: `Some` exactly when the leaves
    /// advertise SynIC.
    pub fn synic(&self) -> Option<SynicCap> {
        self.synic
    }

    /// Feature groups KVM reports that these leaves do not carry.
    pub fn dropped(&self) -> &[HvDropped] {
        &self.dropped
    }

    /// The summary `vm.info` shows.
    pub fn report(&self) -> HypervReport {
        HypervReport {
            vendor: self.vendor(),
            interface: self
                .leaf(HYPERV_CPUID_INTERFACE)
                .map(|e| text(&[e.eax]))
                .unwrap_or_default(),
            max_leaf: format!("{:#x}", self.max_leaf()),
            synic: self.synic,
            dropped: self.dropped.clone(),
        }
    }

    /// Enables on `vcpu` what the leaves need: SynIC when they advertise it. The VM needs
    /// the in-kernel local APIC (`KVM_CREATE_IRQCHIP` or the split irqchip) for it.
    pub fn enable_on_vcpu(&self, vcpu: &VcpuFd, vcpu_id: u64) -> Result<(), HypervError> {
        let Some(cap) = self.synic else {
            return Ok(());
        };
        let enable = kvm_enable_cap {
            cap: cap.cap(),
            ..Default::default()
        };
        vcpu.enable_cap(&enable)
            .map_err(|source| HypervError::EnableSynic {
                cap,
                vcpu: vcpu_id,
                source,
            })?;
        log::debug!("vCPU {vcpu_id}: SynIC enabled ({})", cap.name());
        Ok(())
    }
}

/// A `KVM_EXIT_HYPERV` and what was done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervExit {
    /// The guest wrote a SynIC MSR (`msr`); KVM already applied it, the exit only informs a
    /// VMM that routes SynIC messages (VMBus), which this one does not.
    Synic {
        /// The MSR written.
        msr: u32,
    },
    /// A Hyper-V hypercall KVM leaves to the VMM (POST_MESSAGE, SIGNAL_EVENT without an
    /// eventfd): answered with [`HV_STATUS_INVALID_HYPERCALL_CODE`].
    Hypercall {
        /// The hypercall input value (code in the low 16 bits).
        input: u64,
    },
    /// The synthetic debugger, which the leaves never advertise; nothing to do.
    Syndbg,
    /// An exit type this crate does not know.
    Unknown(u32),
}

/// Handles a `KVM_EXIT_HYPERV` (the `hyperv` member of `kvm_run`'s exit union): answers a
/// hypercall with [`HV_STATUS_INVALID_HYPERCALL_CODE`], and reports what the exit was. The
/// guest continues at the next `KVM_RUN` in every case.
pub fn handle_exit(exit: &mut kvm_hyperv_exit) -> HypervExit {
    match exit.type_ {
        KVM_EXIT_HYPERV_SYNIC => {
            // SAFETY: for KVM_EXIT_HYPERV_SYNIC the kernel filled the `synic` member; it is
            // plain integers, valid for any bit pattern.
            let msr = unsafe { exit.u.synic.msr };
            HypervExit::Synic { msr }
        }
        KVM_EXIT_HYPERV_HCALL => {
            // SAFETY: for KVM_EXIT_HYPERV_HCALL the kernel filled the `hcall` member (plain
            // integers); `result` is the field it reads back at the next KVM_RUN.
            let hcall = unsafe { &mut exit.u.hcall };
            hcall.result = HV_STATUS_INVALID_HYPERCALL_CODE;
            HypervExit::Hypercall { input: hcall.input }
        }
        KVM_EXIT_HYPERV_SYNDBG => HypervExit::Syndbg,
        other => HypervExit::Unknown(other),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    /// What Linux 6.1's `kvm_get_hv_cpuid` returns on an AMD host (no enlightened VMCS, but
    /// the nested features leaf all the same): "Linux KVM Hv" up to the synthetic debugger
    /// leaves. The lab's L1 gives the VM the same block: highest leaf 0x40000005 after
    /// dropping `syndbg` and `evmcs`.
    pub(crate) fn kvm_61_leaves() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(
                0x4000_0000,
                0x4000_0082,
                0x756e_694c,
                0x564b_2078,
                0x7648_204d,
            ),
            entry(0x4000_0001, HYPERV_INTERFACE_SIGNATURE, 0, 0, 0),
            entry(0x4000_0002, 0x3839, 0x000a_0000, 0, 0),
            entry(0x4000_0003, 0x2bff, 0x0830, 0, 0x0008_0d32),
            entry(0x4000_0004, 0x0004_0e2c, 0xfff, 0, 0),
            entry(0x4000_0005, 0x400, 0x40, 0, 0),
            entry(0x4000_000a, 0x0008_0000 | 0x0002_0000, 0, 0, 0),
            entry(0x4000_0080, 0, 0x756e_694c, 0x564b_2078, 0x7648_204d),
            entry(0x4000_0081, 0x3123_5356, 0, 0, 0),
            entry(0x4000_0082, 0x2, 0, 0, 0),
        ]
    }

    #[test]
    fn kvm_leaves_keep_their_vendor_and_lose_what_is_not_served() {
        let hv =
            HypervLeaves::from_supported(&kvm_61_leaves(), Some(SynicCap::Synic2)).expect("valid");
        assert_eq!(hv.vendor(), "Linux KVM Hv");
        assert_eq!(hv.report().interface, "Hv#1");
        assert_eq!(hv.max_leaf(), 0x4000_0005, "syndbg leaves gone");
        assert_eq!(hv.report().max_leaf, "0x40000005");
        assert_eq!(
            hv.entries().iter().map(|e| e.function).collect::<Vec<_>>(),
            (0x4000_0000..=0x4000_0005).collect::<Vec<_>>()
        );
        let feat = hv.leaf(HYPERV_CPUID_FEATURES).expect("features");
        assert_eq!(feat.eax, 0x2bff, "SynIC and timers kept with a SynIC cap");
        assert_eq!(feat.ebx, 0x0030, "debugging privilege cleared");
        assert_eq!(
            feat.edx, 0x0008_0530,
            "debug bits 1 and 11 cleared, direct timers kept"
        );
        assert_eq!(hv.synic(), Some(SynicCap::Synic2));
        let dropped: Vec<&str> = hv.dropped().iter().map(|d| d.feature.as_str()).collect();
        assert_eq!(dropped, ["syndbg", "evmcs"]);
    }

    #[test]
    fn without_a_synic_cap_synic_and_its_timers_are_dropped() {
        let hv = HypervLeaves::from_supported(&kvm_61_leaves(), None).expect("valid");
        let feat = hv.leaf(HYPERV_CPUID_FEATURES).expect("features");
        assert_eq!(
            feat.eax & (HV_MSR_SYNIC_AVAILABLE | HV_MSR_SYNTIMER_AVAILABLE),
            0
        );
        assert_eq!(feat.eax, 0x2bf3);
        assert_eq!(feat.edx & HV_STIMER_DIRECT_MODE_AVAILABLE, 0);
        assert_eq!(hv.synic(), None);
        assert_eq!(hv.dropped()[0].feature, "synic");
        assert!(hv.dropped()[0].reason.contains("KVM_CAP_HYPERV_SYNIC2"));
    }

    #[test]
    fn a_synic_cap_is_not_used_when_the_leaves_do_not_advertise_synic() {
        let mut leaves = kvm_61_leaves();
        leaves[3].eax &= !(HV_MSR_SYNIC_AVAILABLE | HV_MSR_SYNTIMER_AVAILABLE);
        leaves[3].edx &= !HV_STIMER_DIRECT_MODE_AVAILABLE;
        let hv = HypervLeaves::from_supported(&leaves, Some(SynicCap::Synic)).expect("valid");
        assert_eq!(hv.synic(), None);
        assert!(hv.dropped().iter().all(|d| d.feature != "synic"));
    }

    #[test]
    fn enlightened_vmcs_is_dropped() {
        let mut leaves = kvm_61_leaves();
        leaves.retain(|e| e.function != HYPERV_CPUID_NESTED_FEATURES);
        let hv = HypervLeaves::from_supported(&leaves, Some(SynicCap::Synic2)).expect("valid");
        assert!(
            hv.dropped().iter().all(|d| d.feature != "evmcs"),
            "nothing of it reported, nothing dropped"
        );
        leaves[4].eax |= HV_X64_ENLIGHTENED_VMCS_RECOMMENDED;
        // The recommendation bit alone is enough to drop the group.
        let hv = HypervLeaves::from_supported(&leaves, Some(SynicCap::Synic2)).expect("valid");
        assert!(hv.dropped().iter().any(|d| d.feature == "evmcs"));
        leaves.push(entry(HYPERV_CPUID_NESTED_FEATURES, 0x0000_0101, 0, 0, 0));
        let hv = HypervLeaves::from_supported(&leaves, Some(SynicCap::Synic2)).expect("valid");
        assert!(hv.leaf(HYPERV_CPUID_NESTED_FEATURES).is_none());
        assert_eq!(
            hv.leaf(HYPERV_CPUID_ENLIGHTMENT_INFO).map(|e| e.eax),
            Some(0x0004_0e2c)
        );
        assert!(hv.dropped().iter().any(|d| d.feature == "evmcs"));
    }

    #[test]
    fn a_max_leaf_reaching_the_kvm_block_is_refused() {
        for max in [0x4000_0100, 0x4000_ffff, 0x4000_0000, 0] {
            let mut leaves = kvm_61_leaves();
            leaves[0].eax = max;
            let err = HypervLeaves::from_supported(&leaves, None).expect_err("bad max");
            assert!(matches!(err, HypervError::MaxLeaf { max: m } if m == max));
            assert!(
                err.to_string().contains(&format!("{max:#x}"))
                    && err.to_string().contains("0x40000100"),
                "{err}"
            );
        }
        // 0x400000ff is the last leaf of the block: allowed, and lowered to what is there.
        let mut leaves = kvm_61_leaves();
        leaves[0].eax = 0x4000_00ff;
        let hv = HypervLeaves::from_supported(&leaves, None).expect("valid");
        assert_eq!(hv.max_leaf(), 0x4000_0005);
    }

    #[test]
    fn leaves_outside_the_block_and_missing_signatures_are_refused() {
        let mut leaves = kvm_61_leaves();
        leaves.push(entry(0x4000_0100, 0, 0, 0, 0));
        let err = HypervLeaves::from_supported(&leaves, None).expect_err("outside");
        assert!(err.to_string().contains("0x40000100"), "{err}");

        let mut leaves = kvm_61_leaves();
        leaves[1].eax = 0;
        let err = HypervLeaves::from_supported(&leaves, None).expect_err("no Hv#1");
        assert!(err.to_string().contains("Hv#1"), "{err}");

        let leaves = &kvm_61_leaves()[1..];
        let err = HypervLeaves::from_supported(leaves, None).expect_err("no vendor");
        assert!(err.to_string().contains("vendor leaf"), "{err}");
        assert!(HypervLeaves::from_supported(&[], None).is_err());
    }

    #[test]
    fn index_and_flags_are_cleared_and_duplicates_collapse() {
        let mut leaves = kvm_61_leaves();
        leaves[2].index = 7;
        leaves[2].flags = 1;
        let dup = leaves[2];
        leaves.push(dup);
        let hv = HypervLeaves::from_supported(&leaves, None).expect("valid");
        let v = hv.leaf(0x4000_0002).expect("version");
        assert_eq!((v.index, v.flags), (0, 0));
        assert_eq!(
            hv.entries()
                .iter()
                .filter(|e| e.function == 0x4000_0002)
                .count(),
            1
        );
    }

    #[test]
    fn synic_caps_name_themselves() {
        assert_eq!(SynicCap::Synic2.cap(), 148);
        assert_eq!(SynicCap::Synic.cap(), 123);
        assert_eq!(SynicCap::Synic2.name(), "KVM_CAP_HYPERV_SYNIC2");
        assert_eq!(
            serde_json::to_string(&SynicCap::Synic2).expect("json"),
            r#""synic2""#
        );
        assert_eq!(
            serde_json::to_string(&HvCpuidSource::System).expect("json"),
            r#""system""#
        );
    }

    #[test]
    fn hyperv_exits_are_answered() {
        let mut exit = kvm_hyperv_exit {
            type_: KVM_EXIT_HYPERV_HCALL,
            ..Default::default()
        };
        exit.u.hcall = kvm_bindings::kvm_hyperv_exit__bindgen_ty_1__bindgen_ty_2 {
            input: 0x5c,
            result: 0,
            params: [1, 2],
        };
        assert_eq!(
            handle_exit(&mut exit),
            HypervExit::Hypercall { input: 0x5c }
        );
        // SAFETY: the test wrote the `hcall` member above.
        assert_eq!(unsafe { exit.u.hcall.result }, 2);

        let mut exit = kvm_hyperv_exit {
            type_: KVM_EXIT_HYPERV_SYNIC,
            ..Default::default()
        };
        exit.u.synic.msr = 0x4000_0080;
        assert_eq!(
            handle_exit(&mut exit),
            HypervExit::Synic { msr: 0x4000_0080 }
        );
        exit.type_ = KVM_EXIT_HYPERV_SYNDBG;
        assert_eq!(handle_exit(&mut exit), HypervExit::Syndbg);
        exit.type_ = 9;
        assert_eq!(handle_exit(&mut exit), HypervExit::Unknown(9));
    }
}
