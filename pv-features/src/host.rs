//! What the host's KVM can back: the PV feature bits it reports, the exits it lets a VM
//! disable, and the capabilities the PV setup uses.

use kvm_bindings::{
    KVM_CAP_BINARY_STATS_FD, KVM_CAP_ENFORCE_PV_FEATURE_CPUID, KVM_CAP_EXIT_HYPERCALL,
    KVM_CAP_HALT_POLL, KVM_CAP_HYPERV, KVM_CAP_HYPERV_CPUID, KVM_CAP_HYPERV_SYNIC,
    KVM_CAP_HYPERV_SYNIC2, KVM_CAP_SYS_HYPERV_CPUID, KVM_CAP_X86_DISABLE_EXITS,
    KVM_CAP_X86_MSR_FILTER, KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

use crate::cpuid::{host_features, KvmFeatures};
use crate::exits::DisableExits;
use crate::hypercall::KVM_HC_MAP_GPA_RANGE;
use crate::hyperv::{HvCpuidSource, SynicCap};

/// Errors of probing the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_CPUID")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
}

/// The host's PV capabilities, probed once per process (they do not change while KVM is
/// loaded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPv {
    /// Feature bits KVM reports in its supported CPUID (see [`HostPv::backable`] for what
    /// the host can back).
    pub features: KvmFeatures,
    /// Exits a VM may disable (`KVM_CAP_X86_DISABLE_EXITS`).
    pub allowed_exits: DisableExits,
    /// Per-VM halt polling (`KVM_CAP_HALT_POLL`).
    pub halt_poll: bool,
    /// PV CPUID enforcement (`KVM_CAP_ENFORCE_PV_FEATURE_CPUID`).
    pub enforce_pv_cpuid: bool,
    /// Binary statistics (`KVM_CAP_BINARY_STATS_FD`).
    pub binary_stats: bool,
    /// Hyper-V enlightenments (`KVM_CAP_HYPERV`).
    pub hyperv: bool,
    /// Where `KVM_GET_SUPPORTED_HV_CPUID` answers: the system file descriptor
    /// (`KVM_CAP_SYS_HYPERV_CPUID`), only a vCPU's (`KVM_CAP_HYPERV_CPUID`), or nowhere.
    #[serde(default)]
    pub hyperv_cpuid: Option<HvCpuidSource>,
    /// The SynIC capability a vCPU can enable (`KVM_CAP_HYPERV_SYNIC2`, else
    /// `KVM_CAP_HYPERV_SYNIC`), if any.
    #[serde(default)]
    pub hyperv_synic: Option<SynicCap>,
    /// Hypercalls that can exit to user space (`KVM_CAP_EXIT_HYPERCALL` mask, bit = number).
    pub exit_hypercall_mask: u64,
    /// MSR accesses can be filtered to user space (`KVM_CAP_X86_USER_SPACE_MSR` and
    /// `KVM_CAP_X86_MSR_FILTER`): what `migration_control` needs, since KVM does not
    /// emulate `MSR_KVM_MIGRATION_CONTROL` (hypercalls.rst).
    #[serde(default)]
    pub msr_filter: bool,
}

impl HostPv {
    /// The features this host can back: what KVM reports, plus the VMM-provided features
    /// the host has the hooks for: `msi_ext_dest_id` (needs nothing from KVM),
    /// `hc_map_gpa_range` where MAP_GPA_RANGE can exit to user space
    /// (`KVM_CAP_EXIT_HYPERCALL`, which the VMM must then enable for it), and
    /// `migration_control` where the VMM can filter `MSR_KVM_MIGRATION_CONTROL` to itself
    /// ([`HostPv::msr_filter`]). KVM never reports the VMM-provided bits in its supported
    /// CPUID; whether the VMM implements them is the negotiation's separate question.
    pub fn backable(&self) -> KvmFeatures {
        let mut features = self.features | KvmFeatures::MSI_EXT_DEST_ID;
        if self.exit_hypercall_mask & (1 << KVM_HC_MAP_GPA_RANGE) != 0 {
            features |= KvmFeatures::HC_MAP_GPA_RANGE;
        }
        if self.msr_filter {
            features |= KvmFeatures::MIGRATION_CONTROL;
        }
        features
    }

    /// What the host lacks for `kvm_hyperv=on`, named by capability; `None` when it can give
    /// a VM the Hyper-V leaves (SynIC is optional: without it the leaves do not offer it).
    pub fn hyperv_lacks(&self) -> Option<&'static str> {
        if !self.hyperv {
            Some("Hyper-V emulation (KVM_CAP_HYPERV)")
        } else if self.hyperv_cpuid.is_none() {
            Some("KVM_GET_SUPPORTED_HV_CPUID (neither KVM_CAP_SYS_HYPERV_CPUID nor KVM_CAP_HYPERV_CPUID)")
        } else {
            None
        }
    }

    /// Probes `kvm`. The extensions are checked on the system file descriptor, where KVM
    /// reports the same values as on a fresh VM for all of these capabilities.
    pub fn probe(kvm: &Kvm) -> Result<Self, HostError> {
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(HostError::SupportedCpuid)?;
        let check = |cap: u32| kvm.check_extension_raw(u64::from(cap));
        let host = Self {
            features: host_features(&supported),
            allowed_exits: DisableExits::from_bits_truncate(
                u32::try_from(check(KVM_CAP_X86_DISABLE_EXITS)).unwrap_or(0),
            ),
            halt_poll: check(KVM_CAP_HALT_POLL) > 0,
            enforce_pv_cpuid: check(KVM_CAP_ENFORCE_PV_FEATURE_CPUID) > 0,
            binary_stats: check(KVM_CAP_BINARY_STATS_FD) > 0,
            hyperv: check(KVM_CAP_HYPERV) > 0,
            hyperv_cpuid: if check(KVM_CAP_SYS_HYPERV_CPUID) > 0 {
                Some(HvCpuidSource::System)
            } else if check(KVM_CAP_HYPERV_CPUID) > 0 {
                Some(HvCpuidSource::Vcpu)
            } else {
                None
            },
            hyperv_synic: if check(KVM_CAP_HYPERV_SYNIC2) > 0 {
                Some(SynicCap::Synic2)
            } else if check(KVM_CAP_HYPERV_SYNIC) > 0 {
                Some(SynicCap::Synic)
            } else {
                None
            },
            exit_hypercall_mask: u64::try_from(check(KVM_CAP_EXIT_HYPERCALL)).unwrap_or(0),
            msr_filter: check(KVM_CAP_X86_USER_SPACE_MSR) > 0 && check(KVM_CAP_X86_MSR_FILTER) > 0,
        };
        log::debug!("host PV capabilities: {host:?}");
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(features: u32, exit_hypercall_mask: u64) -> HostPv {
        HostPv {
            features: KvmFeatures::from_bits_truncate(features),
            allowed_exits: DisableExits::all(),
            halt_poll: true,
            enforce_pv_cpuid: true,
            binary_stats: true,
            hyperv: false,
            hyperv_cpuid: None,
            hyperv_synic: None,
            exit_hypercall_mask,
            msr_filter: true,
        }
    }

    #[test]
    fn hyperv_needs_the_capability_and_the_leaves_ioctl() {
        let mut h = host(0x0100_7efb, 0);
        assert_eq!(h.hyperv_lacks(), Some("Hyper-V emulation (KVM_CAP_HYPERV)"));
        h.hyperv_cpuid = Some(HvCpuidSource::System);
        assert_eq!(
            h.hyperv_lacks(),
            Some("Hyper-V emulation (KVM_CAP_HYPERV)"),
            "the ioctl alone is not enough"
        );
        h.hyperv = true;
        assert_eq!(h.hyperv_lacks(), None);
        h.hyperv_cpuid = None;
        assert!(h
            .hyperv_lacks()
            .is_some_and(|m| m.contains("KVM_CAP_SYS_HYPERV_CPUID")));
        h.hyperv_cpuid = Some(HvCpuidSource::Vcpu);
        assert_eq!(h.hyperv_lacks(), None, "SynIC is optional");
    }

    #[test]
    fn host_json_without_the_hyperv_details_still_parses() {
        let mut json = serde_json::to_value(host(0x0100_7efb, 0)).expect("json");
        let map = json.as_object_mut().expect("object");
        assert!(map.remove("hyperv_cpuid").is_some());
        assert!(map.remove("hyperv_synic").is_some());
        let back: HostPv = serde_json::from_value(json).expect("parses");
        assert_eq!(back.hyperv_cpuid, None);
    }

    #[test]
    fn backable_adds_what_needs_no_kvm_support() {
        // KVM's supported CPUID never carries the VMM-provided bits (0x1007efb in the lab).
        let h = host(0x0100_7efb, 0);
        let b = h.backable();
        assert!(b.contains(KvmFeatures::MSI_EXT_DEST_ID | KvmFeatures::MIGRATION_CONTROL));
        assert!(
            !b.contains(KvmFeatures::HC_MAP_GPA_RANGE),
            "no user-space MAP_GPA_RANGE exit"
        );
        assert_eq!(b - KvmFeatures::VMM_PROVIDED, h.features);
        assert!(host(0x0100_7efb, 1 << 12)
            .backable()
            .contains(KvmFeatures::HC_MAP_GPA_RANGE));
        assert!(!host(0x0100_7efb, 1 << 11)
            .backable()
            .contains(KvmFeatures::HC_MAP_GPA_RANGE));
        // migration_control needs the MSR filter: KVM does not emulate its MSR.
        let no_filter = HostPv {
            msr_filter: false,
            ..host(0x0100_7efb, 0)
        };
        assert!(!no_filter
            .backable()
            .contains(KvmFeatures::MIGRATION_CONTROL));
        assert!(no_filter.backable().contains(KvmFeatures::MSI_EXT_DEST_ID));
    }
}
