//! What the host's KVM can back: the PV feature bits it reports, the exits it lets a VM
//! disable, and the capabilities the PV setup uses.

use kvm_bindings::{
    KVM_CAP_BINARY_STATS_FD, KVM_CAP_ENFORCE_PV_FEATURE_CPUID, KVM_CAP_EXIT_HYPERCALL,
    KVM_CAP_HALT_POLL, KVM_CAP_HYPERV, KVM_CAP_X86_DISABLE_EXITS, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

use crate::cpuid::{host_features, KvmFeatures};
use crate::exits::DisableExits;
use crate::hypercall::KVM_HC_MAP_GPA_RANGE;

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
    /// Hypercalls that can exit to user space (`KVM_CAP_EXIT_HYPERCALL` mask, bit = number).
    pub exit_hypercall_mask: u64,
}

impl HostPv {
    /// The features this host can back: what KVM reports, plus the VMM-provided features
    /// that need nothing from KVM (`msi_ext_dest_id`, `migration_control`), plus
    /// `hc_map_gpa_range` where MAP_GPA_RANGE can exit to user space
    /// (`KVM_CAP_EXIT_HYPERCALL`). KVM never reports the VMM-provided bits in its supported
    /// CPUID; whether the VMM implements them is the negotiation's separate question.
    pub fn backable(&self) -> KvmFeatures {
        let mut features =
            self.features | (KvmFeatures::VMM_PROVIDED - KvmFeatures::HC_MAP_GPA_RANGE);
        if self.exit_hypercall_mask & (1 << KVM_HC_MAP_GPA_RANGE) != 0 {
            features |= KvmFeatures::HC_MAP_GPA_RANGE;
        }
        features
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
            exit_hypercall_mask: u64::try_from(check(KVM_CAP_EXIT_HYPERCALL)).unwrap_or(0),
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
            exit_hypercall_mask,
        }
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
    }
}
